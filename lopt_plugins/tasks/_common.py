"""Pieces shared by the built-in tasks: activations, losses, normalizers, equality.

Normalizer convention (every built-in task follows it): ``normalizer(loss)`` is
about 1 at initialization and 0 at a perfect solution, is clipped to
``[0, max_value]`` and maps NaN/inf to ``max_value``, so that a diverged run
counts as "as bad as it gets" instead of poisoning a meta-loss average.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

# Activations by name, in a fixed order: ActivationFamily indices refer to this order.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "sigmoid": jax.nn.sigmoid,
    "leaky_relu": jax.nn.leaky_relu,
    "softplus": jax.nn.softplus,
}

ACTIVATION_TAGS: dict[str, str] = {
    "relu": "Relu",
    "tanh": "Tanh",
    "gelu": "Gelu",
    "silu": "Silu",
    "elu": "Elu",
    "sigmoid": "Sigmoid",
    "leaky_relu": "LeakyRelu",
    "softplus": "Softplus",
}

# A classifier or LM doing worse than 1.5x chance is as bad as a diverged one.
CLASSIFICATION_MAX = 1.5


def clipped(x: jax.Array, max_value: float) -> jax.Array:
    """``x`` clipped to ``[0, max_value]``, with NaN and +-inf mapped to ``max_value``."""
    x = jnp.nan_to_num(x, nan=max_value, posinf=max_value, neginf=max_value)
    return jnp.clip(x, 0.0, max_value)


def classification_normalizer(loss: jax.Array, num_classes: int) -> jax.Array:
    """Cross-entropy divided by ``log(num_classes)`` (chance level = 1), clipped to [0, 1.5]."""
    return clipped(loss / math.log(num_classes), CLASSIFICATION_MAX)


def classification_loss_and_aux(
    logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean softmax cross-entropy over all leading axes, and ``accuracy``.

    ``weights`` (same shape as ``labels``) gives a weighted mean; a batch whose
    weights are all zero has loss 0 rather than NaN.
    """
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(losses.dtype)
    if weights is None:
        return jnp.mean(losses), {"accuracy": jnp.mean(correct)}
    weights = weights.astype(losses.dtype)
    total = jnp.maximum(jnp.sum(weights), 1.0)
    return jnp.sum(weights * losses) / total, {"accuracy": jnp.sum(weights * correct) / total}


# Newton-Schulz iterations of ``orthogonal_init``: each multiplies a small singular value
# by about 1.5, so 50 bring any above 1e-8 (relative to the Frobenius norm) to 1.
NEWTON_SCHULZ_STEPS = 50


def orthogonal_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """A random (semi-)orthogonal matrix of ``shape``, computed with matmuls only.

    The polar factor of a Gaussian matrix (which is Haar-distributed, as the QR
    factor flax's ``orthogonal()`` uses), found by the Newton-Schulz iteration
    ``X <- 1.5 X - 0.5 X X^T X`` from ``G / ||G||_F``. Why not QR: XLA's CPU QR
    kernel parallelizes a batch of factorizations on the thread pool it runs on and
    waits for them there; with several batched QRs at once (an LSTM's gates under
    ``vmap``) on a 2-core machine every pool thread waits and the program hangs.
    """
    rows, cols = shape[-2], shape[-1]
    tall = rows >= cols
    g = jax.random.normal(key, (rows, cols) if tall else (cols, rows), jnp.float32)
    x = g / jnp.linalg.norm(g)

    def step(_, x):
        return 1.5 * x - 0.5 * x @ (x.T @ x)

    x = jax.lax.fori_loop(0, NEWTON_SCHULZ_STEPS, step, x)
    return (x if tall else x.T).astype(dtype)


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation called ``name``; a ValueError lists the known ones."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r}; the known activations are {', '.join(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]


class ArgsEquality:
    """Equality and hash by type and constructor arguments.

    The training loops cache compiled code on the task (a static jit argument),
    so two equal tasks, e.g. built twice from one gin config, share one compile.
    """

    # ((argument name, value), ...), set by the constructor.
    _args: tuple = ()

    def _key(self) -> tuple:
        return (type(self), self._args)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._args)
        return f"{type(self).__name__}({args})"
