"""Sampled byte-level transformer language models on the built-in text dataset.

``TransformerLMDistribution`` draws ``TransformerLMTask``s: 1-4 blocks of width
16-128 (log-uniform, powers of two by default), a number of heads that divides
the width, an MLP ratio, a sequence length and a batch size, within
``max_params`` and ``max_step_mflops`` (see ``_sampling``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lopt_core import Task
from lopt_plugins.task_distributions._sampling import (
    FLOPS_PER_MAC,
    BoundedDistribution,
    Cost,
    checked_first_draw,
    int_options,
    int_range,
    log_uniform_int,
    pick,
)
from lopt_plugins.tasks.transformer_lm import TransformerLMTask, num_params


class TransformerLMDistribution(BoundedDistribution):
    """Causal transformer LMs with drawn depth, width, heads, MLP ratio, sequence length, batch.

    ``dataset`` is a registered text dataset (default: the bundled ``text``),
    ``path`` a text file for it (None: the bundled text). Depth is uniform in
    ``layers``; the width ``d_model`` is drawn log-uniformly in ``d_models``, as
    a power of two with ``powers_of_two`` (fewer compiles); the heads are one of
    the ``num_heads`` that divide it (if none does, their greatest common
    divisor with the smallest of them).
    """

    def __init__(
        self,
        layers: tuple[int, int] = (1, 4),
        d_models: tuple[int, int] = (16, 128),
        num_heads: Sequence[int] = (1, 2, 4, 8),
        mlp_ratios: Sequence[int] = (4,),
        sequence_lengths: Sequence[int] = (32, 64, 128),
        batch_sizes: Sequence[int] = (16, 32),
        dataset: str = "text",
        path: str | None = None,
        max_params: int = 100_000,
        max_step_mflops: float = 300.0,
        powers_of_two: bool = True,
    ):
        super().__init__(max_params, max_step_mflops)
        self.layers = int_range(layers, "layers")
        self.d_models = int_range(d_models, "d_models")
        self.num_heads = int_options(num_heads, "num_heads")
        self.mlp_ratios = int_options(mlp_ratios, "mlp_ratios")
        self.sequence_lengths = int_options(sequence_lengths, "sequence_lengths")
        self.batch_sizes = int_options(batch_sizes, "batch_sizes")
        self.dataset, self.path = dataset, path
        self.powers_of_two = bool(powers_of_two)
        checked_first_draw(self)

    def draw(self, rng: np.random.Generator) -> Task:
        d_model = log_uniform_int(rng, self.d_models, self.powers_of_two)
        heads = [h for h in self.num_heads if d_model % h == 0]
        return TransformerLMTask(
            dataset=self.dataset,
            num_layers=int(rng.integers(self.layers[0], self.layers[1] + 1)),
            d_model=d_model,
            num_heads=pick(rng, heads) if heads else math.gcd(d_model, min(self.num_heads)),
            mlp_ratio=pick(rng, self.mlp_ratios),
            batch_size=pick(rng, self.batch_sizes),
            sequence_length=pick(rng, self.sequence_lengths),
            path=self.path,
        )

    def cost(self, task: Task) -> Cost:
        d, m, length = task.d_model, task.mlp_ratio, task.sequence_length
        # Per token and block: the qkv, output and MLP matmuls, and attention's scores and
        # weighted sum over all T positions (the full T x T matrix is computed, then masked).
        per_block = (4 + 2 * m) * d * d + 2 * length * d
        macs_per_token = task.num_layers * per_block + d * task.vocab_size
        params = num_params(task.vocab_size, task.num_layers, d, m, length)
        tokens = task.batch_size * length
        return Cost(params, FLOPS_PER_MAC * macs_per_token * tokens / 1e6)
