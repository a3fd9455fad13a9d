"""Per-parameter input features shared by the MLP learned optimizers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Time scales (in steps) of the tanh features of training progress (Metz et al. 2022).
TIME_SCALES: tuple[float, ...] = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)


def tanh_time_features(iteration: jax.Array) -> jax.Array:
    """``tanh(iteration / s)`` for each time scale ``s``: shape ``[len(TIME_SCALES)]``."""
    scales = jnp.asarray(TIME_SCALES, jnp.float32)
    return jnp.tanh(iteration.astype(jnp.float32) / scales)


def second_moment_normalize(features: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Divide each feature (last axis) by its root mean square over the tensor.

    This makes the MLP's inputs scale-free per tensor, which is what lets one
    small MLP serve parameters of very different magnitudes.
    """
    axes = tuple(range(features.ndim - 1))
    return features * jax.lax.rsqrt(eps + jnp.mean(jnp.square(features), axis=axes, keepdims=True))


def ema(decays: jax.Array, old: jax.Array, new: jax.Array) -> jax.Array:
    """Exponential moving averages, one per decay: ``old[..., k]`` decays with ``decays[k]``."""
    return decays * old + (1.0 - decays) * new[..., None]


def with_time_features(features: jax.Array, time_features: jax.Array) -> jax.Array:
    """Append the (global) time features to every element's feature vector."""
    tiled = jnp.broadcast_to(time_features, features.shape[:-1] + time_features.shape)
    return jnp.concatenate([features, tiled], axis=-1)
