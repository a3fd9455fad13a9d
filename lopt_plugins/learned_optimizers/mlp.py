"""The small per-element MLP that MLP learned optimizers apply to every parameter."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lopt_core.jit import BackendJit
from lopt_core.learned import LearnedOptimizer
from lopt_core.validation import non_negative_int, positive_int
from lopt_plugins.learned_optimizers.features import second_moment_normalize


class PerElementMLP(nn.Module):
    """An MLP over the last axis: ``[..., features] -> [..., num_outputs]``.

    The same weights serve every element of every parameter tensor, so the
    meta-parameters stay tiny whatever the size of the model being trained.
    """

    hidden_size: int
    hidden_layers: int
    num_outputs: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(self.hidden_layers):
            x = nn.relu(nn.Dense(self.hidden_size)(x))
        return nn.Dense(self.num_outputs)(x)


@functools.cache
def _init_fn(mlp: PerElementMLP, num_features: int) -> BackendJit:
    return BackendJit(lambda key: mlp.init(key, jnp.zeros((1, num_features), jnp.float32)))


def init_mlp(mlp: PerElementMLP, key: jax.Array, num_features: int) -> Any:
    """``mlp.init`` for inputs of ``num_features``, compiled once per MLP shape.

    (Run eagerly, flax's initializers dispatch, and compile, dozens of small ops:
    seconds, against a fraction of one compiled.)
    """
    return _init_fn(mlp, num_features)(key)


class MLPLearnedOptimizer(LearnedOptimizer):
    """A learned optimizer whose ``theta`` is the weights of one ``PerElementMLP``.

    Subclasses set ``mlp`` and ``num_features`` (its number of inputs) when constructed.
    """

    mlp: PerElementMLP
    num_features: int

    def init(self, key: jax.Array) -> Any:
        """Flax's default initialization of ``mlp`` (see ``init_mlp``)."""
        return init_mlp(self.mlp, key, self.num_features)


def check_mlp_args(
    owner: str, hidden_size: int, hidden_layers: int, decays: tuple
) -> tuple[int, int]:
    """``(hidden_size, hidden_layers)`` as ints; a ValueError for sizes, layer counts and
    decay rates that cannot work."""
    hidden_size = positive_int(hidden_size, "hidden_size", owner=owner)
    hidden_layers = non_negative_int(hidden_layers, "hidden_layers", owner=owner)
    bad = [d for d in decays if not 0 <= d < 1]
    if bad or not decays:
        raise ValueError(f"{owner}: decays must be a non-empty tuple in [0, 1), got {decays!r}.")
    return hidden_size, hidden_layers


# Rows of the per-element MLP evaluated at once when a model is large: a chunk's hidden
# activations ([CHUNK_ROWS, hidden] floats, ~2 MiB at 16384 x 32) stay in cache instead of
# making several passes through memory over all parameters.
CHUNK_ROWS = 16384
# Up to this many per-element inputs, the first layer is computed as multiply-adds.
_ELEMENTWISE_FIRST_LAYER_MAX = 16


def apply_per_element(
    theta: Any, elements: jax.Array, shared: jax.Array | None = None, chunk_rows: int | None = None
) -> jax.Array:
    """``PerElementMLP.apply(theta, concat([elements, shared broadcast], -1))``, computed cheaply.

    ``elements`` is ``[N, E]`` (one row per parameter element); ``shared`` is ``[S]``,
    the same for every row (e.g. time features), or None. The first layer's
    kernel is split: ``elements @ kernel[:E] + (shared @ kernel[E:] + bias)``, so the
    shared inputs cost one small product instead of ``S`` columns of every row, and
    are never broadcast to ``[N, S]``. Equal to ``PerElementMLP.apply`` up to float
    rounding (the first layer's sum is taken in another order). Rows are evaluated
    ``chunk_rows`` (default ``CHUNK_ROWS``, read at trace time) at a time when ``N`` is larger.
    """
    params = theta["params"]
    layers = [params[f"Dense_{i}"] for i in range(len(params))]
    num_elements = elements.shape[-1]
    kernel0 = layers[0]["kernel"]
    bias0 = layers[0]["bias"]
    if shared is not None:
        bias0 = bias0 + shared.astype(kernel0.dtype) @ kernel0[num_elements:]

    def mlp(x):
        if num_elements <= _ELEMENTWISE_FIRST_LAYER_MAX:
            # A product with so few rows (inputs) runs far below a matrix unit's speed;
            # as multiply-adds it is one elementwise kernel (3x faster measured at 7 inputs).
            h = bias0 + x[..., 0:1] * kernel0[0]
            for k in range(1, num_elements):
                h = h + x[..., k : k + 1] * kernel0[k]
        else:
            h = x @ kernel0[:num_elements] + bias0
        for layer in layers[1:]:
            h = jax.nn.relu(h) @ layer["kernel"] + layer["bias"]
        return h

    rows = elements.shape[0]
    chunk_rows = CHUNK_ROWS if chunk_rows is None else chunk_rows
    if rows <= chunk_rows:
        return mlp(elements)
    num_chunks = math.ceil(rows / chunk_rows)
    padded = jnp.pad(elements, ((0, num_chunks * chunk_rows - rows), (0, 0)))
    out = jax.lax.map(mlp, padded.reshape(num_chunks, chunk_rows, num_elements))
    return out.reshape(num_chunks * chunk_rows, -1)[:rows]


def per_leaf_rows(leaves: Sequence[jax.Array], dtype: Any = jnp.float32) -> jax.Array:
    """Stack per-leaf feature arrays ``[..., F]`` into one ``[N, F]`` matrix (``dtype``)."""
    rows = [x.reshape(-1, x.shape[-1]).astype(dtype) for x in leaves]
    return rows[0] if len(rows) == 1 else jnp.concatenate(rows, axis=0)


def split_rows(out: jax.Array, leaves: Sequence[jax.Array]) -> list[jax.Array]:
    """Cut ``[N, K]`` rows back into ``[*leaf.shape, K]`` pieces, one per leaf."""
    pieces, start = [], 0
    for leaf in leaves:
        size = math.prod(leaf.shape)
        pieces.append(out[start : start + size].reshape(leaf.shape + out.shape[-1:]))
        start += size
    return pieces


# MLPs no wider than this (every layer) are evaluated as multiply-adds on each
# tensor's feature columns: XLA fuses features, MLP and update into a few
# elementwise kernels, with no [N, features] matrix in memory (the small
# AdafacMLPLOpt is then ~10x faster on a 1M-parameter model than as matrix products).
ELEMENTWISE_MAX_WIDTH = 8


def _layers(theta: Any) -> list[Any]:
    params = theta["params"]
    return [params[f"Dense_{i}"] for i in range(len(params))]


def normalize_columns(columns: Sequence[jax.Array], eps: float = 1e-5) -> list[jax.Array]:
    """Each feature column divided by its root mean square over the tensor.

    ``second_moment_normalize`` for features kept as separate columns (same values).
    """
    return [c * jax.lax.rsqrt(eps + jnp.mean(jnp.square(c))) for c in columns]


def per_element_outputs(
    theta: Any,
    columns: Sequence[Sequence[jax.Array]],
    shared: jax.Array | None = None,
    raw_columns: int = 0,
) -> list[list[jax.Array]]:
    """The per-element MLP on every tensor: one list of output columns per tensor.

    ``columns[i]`` holds tensor ``i``'s feature columns, each shaped like the tensor;
    each is first normalized by its root mean square over the tensor
    (``second_moment_normalize``), except the last ``raw_columns``, which go in as
    they are. ``shared`` are inputs equal for every element
    (appended after them, e.g. time features), not normalized. Narrow MLPs run as
    elementwise multiply-adds per tensor; wider ones as matrix products over the
    rows of all tensors at once (``apply_per_element``). Equal to
    ``PerElementMLP.apply`` on the normalized features up to float rounding.
    """
    layers = _layers(theta)
    if max(layer["kernel"].shape[1] for layer in layers) > ELEMENTWISE_MAX_WIDTH:
        # One [..., features] array per tensor: one normalizing reduction, not one per column.
        rows = per_leaf_rows([_normalized_stack(cols, raw_columns) for cols in columns])
        out = apply_per_element(theta, rows, shared)
        shapes = [jnp.shape(cols[0]) for cols in columns]
        return [
            [o[..., k] for k in range(o.shape[-1])]
            for o in split_rows(out, [jax.ShapeDtypeStruct(s, out.dtype) for s in shapes])
        ]
    kernel0, bias0 = layers[0]["kernel"], layers[0]["bias"]
    num_elements = len(columns[0]) if columns else 0
    if shared is not None:
        bias0 = bias0 + shared.astype(kernel0.dtype) @ kernel0[num_elements:]
    outputs = []
    for cols in columns:
        kept = len(cols) - raw_columns
        x = [c.astype(kernel0.dtype) for c in [*normalize_columns(cols[:kept]), *cols[kept:]]]
        h = _dense_columns(x, kernel0[:num_elements], bias0)
        for layer in layers[1:]:
            h = _dense_columns([jax.nn.relu(v) for v in h], layer["kernel"], layer["bias"])
        outputs.append(h)
    return outputs


def _normalized_stack(cols: Sequence[jax.Array], raw_columns: int) -> jax.Array:
    kept = len(cols) - raw_columns
    normalized = second_moment_normalize(jnp.stack(cols[:kept], axis=-1))
    if not raw_columns:
        return normalized
    return jnp.concatenate([normalized, jnp.stack(cols[kept:], axis=-1)], axis=-1)


def _dense_columns(x: list, kernel: jax.Array, bias: jax.Array) -> list:
    """A dense layer on feature columns: output column j is bias[j] + sum_k x[k] * kernel[k, j]."""
    return [
        bias[j] + sum(x[k] * kernel[k, j] for k in range(len(x))) for j in range(kernel.shape[1])
    ]


def mlp_steps(
    theta: Any,
    leaves: Sequence[jax.Array],
    columns: Sequence[Sequence[jax.Array]],
    shared: jax.Array,
    exp_mult: float,
    step_mult: float,
) -> list[jax.Array]:
    """The parameters after one step: ``p - d * exp(m * exp_mult) * step_mult`` per element.

    ``(d, m)`` are the MLP's two outputs on each leaf's feature ``columns`` plus
    ``shared`` inputs (``per_element_outputs``). Each new leaf keeps the dtype of
    ``p`` (the MLP is float32; e.g. bfloat16 parameters stay bfloat16).
    """
    if not leaves:  # a model without parameters has nothing to update
        return []
    outputs = per_element_outputs(theta, columns, shared)
    new = []
    for p, (direction, magnitude) in zip(leaves, outputs, strict=True):
        step = direction * jnp.exp(magnitude * exp_mult) * step_mult
        new.append((p - step).astype(p.dtype))
    return new
