"""Sampled character-level language models on the built-in text dataset.

``CharLMDistribution`` draws ``CharLMTask``s: an LSTM or GRU of 1-2 layers of
16-128 units (log-uniform), a 16-32-dim embedding, a sequence length and a
batch size, within ``max_params`` and ``max_step_mflops`` (see ``_sampling``).
"""

from __future__ import annotations

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
    options,
    pick,
)
from lopt_plugins.tasks.char_lm import CELLS, CharLMTask

# Weight matrices per recurrent layer, by cell: an LSTM has 4 gates, a GRU 3.
GATES = {"lstm": 4, "gru": 3}


class CharLMDistribution(BoundedDistribution):
    """Character RNN LMs with drawn cell, depth, width, embedding, sequence length, batch size.

    ``dataset`` is a registered text dataset (default: the bundled ``text``),
    ``path`` a text file for it (None: the bundled text). Sizes are drawn
    log-uniformly, as powers of two with ``powers_of_two`` (fewer compiles).
    """

    def __init__(
        self,
        cells: Sequence[str] = ("lstm", "gru"),
        layers: tuple[int, int] = (1, 2),
        hidden_sizes: tuple[int, int] = (16, 128),
        embed_sizes: tuple[int, int] = (16, 32),
        sequence_lengths: Sequence[int] = (16, 32, 64),
        batch_sizes: Sequence[int] = (16, 32),
        dataset: str = "text",
        path: str | None = None,
        max_params: int = 50_000,
        max_step_mflops: float = 20.0,
        powers_of_two: bool = True,
    ):
        super().__init__(max_params, max_step_mflops)
        self.cells = options(cells, "cells", tuple(CELLS))
        self.layers = int_range(layers, "layers")
        self.hidden_sizes = int_range(hidden_sizes, "hidden_sizes")
        self.embed_sizes = int_range(embed_sizes, "embed_sizes")
        self.sequence_lengths = int_options(sequence_lengths, "sequence_lengths")
        self.batch_sizes = int_options(batch_sizes, "batch_sizes")
        self.dataset, self.path = dataset, path
        self.powers_of_two = bool(powers_of_two)
        checked_first_draw(self)

    def draw(self, rng: np.random.Generator) -> Task:
        return CharLMTask(
            dataset=self.dataset,
            cell=pick(rng, self.cells),
            hidden_size=log_uniform_int(rng, self.hidden_sizes, self.powers_of_two),
            embed_size=log_uniform_int(rng, self.embed_sizes, self.powers_of_two),
            batch_size=pick(rng, self.batch_sizes),
            sequence_length=pick(rng, self.sequence_lengths),
            path=self.path,
            num_layers=int(rng.integers(self.layers[0], self.layers[1] + 1)),
        )

    def cost(self, task: Task) -> Cost:
        gates, hidden, vocab = GATES[task.cell], task.hidden_size, task.vocab_size
        macs_per_token = params = 0
        width_in = task.embed_size
        for _ in range(task.num_layers):
            macs_per_token += gates * (width_in + hidden) * hidden
            params += gates * ((width_in + hidden) * hidden + hidden)
            width_in = hidden
        macs_per_token += hidden * vocab
        params += vocab * task.embed_size + hidden * vocab + vocab
        tokens = task.batch_size * task.sequence_length
        return Cost(params, FLOPS_PER_MAC * macs_per_token * tokens / 1e6)
