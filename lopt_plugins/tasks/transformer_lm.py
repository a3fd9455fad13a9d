"""Byte-level decoder-only transformer language models (flax) on a text dataset.

Batches are ``{"obs": int32 [B, T], "target": int32 [B, T]}`` (the target is
the observation shifted by one byte). The model: token and learned position
embeddings, ``num_layers`` pre-LayerNorm blocks (causal multi-head
self-attention, then a gelu MLP, each added to the residual stream), a final
LayerNorm and a dense layer to the vocabulary logits. Loss: mean next-token
cross-entropy; extras: ``accuracy``. Normalizer: ``loss / log(vocab_size)``
(about 1 at init), clipped to [0, 1.5] with NaN/inf mapped to 1.5.

Names read ``TransformerLM_<Data>_L<layers>_D<d_model>_H<heads>``, with
``_M<mlp_ratio>`` appended when the MLP ratio is not 4: the reference's
``TransformerLM_LM1B_5layer_32width`` reads ``TransformerLM_LM1B_L5_D32_H<heads>`` here.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lopt_core import Datasets, Task
from lopt_core.validation import positive_int
from lopt_plugins.tasks._common import (
    ArgsEquality,
    classification_loss_and_aux,
    classification_normalizer,
)
from lopt_plugins.tasks._data import build_dataset, display_name, extra_int, given_datasets_tag

# GPT-2's initialization: every kernel and embedding N(0, 0.02^2), zero biases, and the
# projections back into the residual stream scaled down by sqrt(2 * num_layers). Small
# logits at init put the loss at about log(vocab_size), as the normalizer assumes.
INIT_STD = 0.02


def num_params(
    vocab_size: int, num_layers: int, d_model: int, mlp_ratio: int, sequence_length: int
) -> int:
    """The exact parameter count of ``TransformerLM`` (equal to counting ``init``'s leaves).

    Embeddings ``(vocab + T) * d``; per block two LayerNorms (``4d``), the
    attention's query/key/value and output projections (``4d^2 + 4d``) and the MLP
    (``2 m d^2 + (m + 1) d``); the final LayerNorm (``2d``) and the logits
    (``d * vocab + vocab``).
    """
    d, m = d_model, mlp_ratio
    block = (4 + 2 * m) * d * d + (9 + m) * d
    embeddings = (vocab_size + sequence_length) * d
    return embeddings + num_layers * block + 2 * d + (d + 1) * vocab_size


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position ``t`` attends to positions ``<= t``."""

    num_heads: int
    out_init_std: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, d_model = x.shape
        head_dim = d_model // self.num_heads
        init = nn.initializers.normal(INIT_STD)
        qkv = nn.Dense(3 * d_model, kernel_init=init, name="qkv")(x)
        q, k, v = jnp.split(qkv.reshape(batch, length, 3 * self.num_heads, head_dim), 3, axis=2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
        causal = jnp.tril(jnp.ones((length, length), bool))
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, d_model)
        out_init = nn.initializers.normal(self.out_init_std)
        return nn.Dense(d_model, kernel_init=out_init, name="out")(out)


class Block(nn.Module):
    """A pre-LayerNorm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    num_heads: int
    mlp_ratio: int
    out_init_std: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d_model = x.shape[-1]
        x = x + CausalSelfAttention(self.num_heads, self.out_init_std, name="attn")(
            nn.LayerNorm(name="ln_attn")(x)
        )
        h = nn.LayerNorm(name="ln_mlp")(x)
        h = nn.Dense(
            self.mlp_ratio * d_model, kernel_init=nn.initializers.normal(INIT_STD), name="mlp_in"
        )(h)
        h = nn.Dense(
            d_model, kernel_init=nn.initializers.normal(self.out_init_std), name="mlp_out"
        )(nn.gelu(h))
        return x + h


class TransformerLM(nn.Module):
    """Token + position embeddings, ``num_layers`` causal blocks, LayerNorm, vocabulary logits."""

    vocab_size: int
    num_layers: int
    d_model: int
    num_heads: int
    mlp_ratio: int
    max_length: int

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        init = nn.initializers.normal(INIT_STD)
        x = nn.Embed(self.vocab_size, self.d_model, embedding_init=init, name="embed")(tokens)
        length = tokens.shape[-1]
        if length > self.max_length:
            raise ValueError(
                f"TransformerLM: a sequence of {length} tokens is longer than the "
                f"{self.max_length} positions the model embeds (its sequence_length)."
            )
        position = self.param("position", init, (self.max_length, self.d_model))
        x = x + position[:length]
        out_init_std = INIT_STD / math.sqrt(2 * self.num_layers)
        for layer in range(self.num_layers):
            x = Block(self.num_heads, self.mlp_ratio, out_init_std, name=f"block_{layer}")(x)
        x = nn.LayerNorm(name="ln_final")(x)
        return nn.Dense(self.vocab_size, kernel_init=init, name="logits")(x)


class TransformerLMTask(ArgsEquality, Task):
    """A byte-level causal transformer LM of ``num_layers`` blocks of width ``d_model``.

    ``num_heads`` must divide ``d_model``; the MLP is ``mlp_ratio * d_model``
    wide; the learned position embedding has ``sequence_length`` rows.
    ``dataset`` is the name of a registered dataset (``"text"``, the built-in
    ``lopt_plugins.datasets.text``, or a plugin's), built with ``batch_size``,
    ``sequence_length`` and ``path`` (left out when None and the builder takes no
    ``path``), or a ``lopt_core.Datasets`` of text batches of at most
    ``sequence_length`` tokens (``batch_size`` and ``path`` then play no part). Either
    way the data needs ``extra_info["vocab_size"]``. The data is built when the
    task is constructed.
    """

    def __init__(
        self,
        dataset: str | Datasets = "text",
        num_layers: int = 2,
        d_model: int = 64,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        batch_size: int = 32,
        sequence_length: int = 64,
        path: str | None = None,
    ):
        num_layers = positive_int(num_layers, "num_layers")
        d_model = positive_int(d_model, "d_model")
        num_heads = positive_int(num_heads, "num_heads")
        mlp_ratio = positive_int(mlp_ratio, "mlp_ratio")
        batch_size = positive_int(batch_size, "batch_size")
        sequence_length = positive_int(sequence_length, "sequence_length")
        if d_model % num_heads:
            raise ValueError(
                f"num_heads ({num_heads}) must divide d_model ({d_model}): each head gets "
                "d_model // num_heads dimensions."
            )
        if isinstance(dataset, Datasets):
            self.datasets, self.dataset_tag = dataset, given_datasets_tag(dataset)
        else:
            self.datasets = build_dataset(
                dataset, "text", batch_size=batch_size, sequence_length=sequence_length, path=path
            )
            self.dataset_tag = display_name(dataset)
        self.vocab_size = extra_int(self.datasets, "vocab_size", "TransformerLMTask")
        self.num_layers, self.d_model, self.num_heads = num_layers, d_model, num_heads
        self.mlp_ratio = mlp_ratio
        self.batch_size, self.sequence_length = batch_size, sequence_length
        self.module = TransformerLM(
            self.vocab_size, num_layers, d_model, num_heads, mlp_ratio, sequence_length
        )
        self._args = (
            ("dataset", dataset),
            ("num_layers", num_layers),
            ("d_model", d_model),
            ("num_heads", num_heads),
            ("mlp_ratio", mlp_ratio),
            ("batch_size", batch_size),
            ("sequence_length", sequence_length),
            ("path", path),
        )
        ratio = "" if mlp_ratio == 4 else f"_M{mlp_ratio}"
        size = f"L{num_layers}_D{d_model}_H{num_heads}{ratio}"
        self.name = f"TransformerLM_{self.dataset_tag}_{size}"

    @property
    def num_params(self) -> int:
        """The exact number of parameters (see the module function ``num_params``)."""
        return num_params(
            self.vocab_size, self.num_layers, self.d_model, self.mlp_ratio, self.sequence_length
        )

    def init(self, key: jax.Array) -> Any:
        """GPT-2's initialization (see ``INIT_STD``); LayerNorms start at scale 1, bias 0."""
        return self.module.init(key, jnp.zeros((1, self.sequence_length), jnp.int32))

    def loss_and_aux(
        self, params: Any, key: jax.Array, batch: dict[str, jax.Array]
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean next-token cross-entropy over all ``B x T`` tokens, and ``accuracy``."""
        logits = self.module.apply(params, batch["obs"])
        return classification_loss_and_aux(logits, batch["target"])

    def normalizer(self, loss: jax.Array) -> jax.Array:
        """``loss / log(vocab_size)`` clipped to [0, 1.5]; NaN/inf map to 1.5."""
        return classification_normalizer(loss, self.vocab_size)


def _transformer_preset(
    num_layers: int, d_model: int, num_heads: int, batch_size: int, sequence_length: int
) -> type[TransformerLMTask]:
    name = f"TransformerLM_Text_L{num_layers}_D{d_model}_H{num_heads}"
    default_batch, default_length = batch_size, sequence_length

    def __init__(
        self,
        batch_size: int = default_batch,
        sequence_length: int = default_length,
        path: str | None = None,
    ):
        TransformerLMTask.__init__(
            self, "text", num_layers, d_model, num_heads, 4, batch_size, sequence_length, path
        )
        self.name = name

    doc = (
        f"{num_layers}-block causal transformer (width {d_model}, {num_heads} heads, MLP "
        f"{4 * d_model}) byte LM on the text dataset (default batch {batch_size}, sequence "
        f"length {sequence_length}); normalized loss = cross-entropy / log(vocab_size)."
    )
    return type(
        name,
        (TransformerLMTask,),
        {
            "__init__": __init__,
            "__doc__": doc,
            "__module__": __name__,
            "__qualname__": name,
        },
    )


# (num_layers, d_model, num_heads, default batch_size, default sequence_length): from about
# 10k to about 1M parameters (at the default sequence length; see docs/tasks.md).
_PRESETS = (
    (1, 16, 2, 32, 32),
    (2, 32, 2, 32, 64),
    (4, 64, 4, 32, 64),
    (4, 128, 8, 16, 128),
)

PRESETS: dict[str, type[TransformerLMTask]] = {
    cls.__name__: cls for cls in (_transformer_preset(*spec) for spec in _PRESETS)
}
# Module attributes, so that presets import and pickle by name.
globals().update(PRESETS)
