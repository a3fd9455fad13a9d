"""Truncation schedules: how long each inner problem runs before it restarts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lopt_core.validation import INT32_MAX, positive_int


class TruncationSchedule:
    """Draws the horizon (number of inner steps) of a freshly started inner problem.

    ``fixed_length`` is the horizon when every draw gives the same one, else
    None: engines that need one fixed horizon (``FullES``, validation, ``lopt
    eval``) read it instead of testing for a class, so a third party's fixed
    schedule drives them too.
    """

    @property
    def fixed_length(self) -> int | None:
        """The horizon of every draw, or None when horizons vary (the default)."""
        return None

    def sample_horizon(self, key: jax.Array) -> jax.Array:
        """An int32 scalar horizon; traced under jit and vmap."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample_horizon(key).")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _check_length(owner: str, what: str, value: int) -> int:
    value = positive_int(value, what, owner=owner)
    if value > INT32_MAX:
        raise ValueError(f"{owner}: {what} must fit in int32 (<= {INT32_MAX}), got {value}.")
    return value


def _float32_at_most(value: int) -> np.float32:
    """The largest float32 that is <= ``value``."""
    f = np.float32(value)
    return f if int(f) <= value else np.nextafter(f, np.float32(0))


class ConstantTruncationSchedule(TruncationSchedule):
    """Every inner problem runs for ``length`` steps."""

    def __init__(self, length: int):
        self.length = _check_length(type(self).__name__, "length", length)

    @property
    def fixed_length(self) -> int:
        """``length``: every inner problem runs for it."""
        return self.length

    def sample_horizon(self, key: jax.Array) -> jax.Array:
        return jnp.asarray(self.length, jnp.int32)


class LogUniformLengthSchedule(TruncationSchedule):
    """Horizons drawn log-uniformly from ``[min_length, max_length]`` (inclusive)."""

    def __init__(self, min_length: int, max_length: int):
        owner = type(self).__name__
        self.min_length = _check_length(owner, "min_length", min_length)
        self.max_length = _check_length(owner, "max_length", max_length)
        if self.min_length > self.max_length:
            raise ValueError(
                f"{owner}: min_length ({min_length}) must not exceed max_length ({max_length})."
            )

    def sample_horizon(self, key: jax.Array) -> jax.Array:
        # Sample in float32 log space, then clip to float32 bounds that lie inside
        # [min_length, max_length] before the cast, so values near int32's maximum
        # (which float32 rounds up to 2**31) cannot overflow.
        low, high = _float32_at_most(self.min_length), _float32_at_most(self.max_length)
        log_min = jnp.log(jnp.float32(self.min_length))
        log_max = jnp.log(jnp.float32(self.max_length) + 1.0)
        length = jnp.exp(jax.random.uniform(key, (), jnp.float32, log_min, log_max))
        length = jnp.clip(jnp.floor(length), low, high).astype(jnp.int32)
        # Bounds that float32 cannot represent (e.g. min_length == 2**31 - 1) round below
        # min_length; a final clip in exact int32 arithmetic restores them.
        return jnp.clip(length, self.min_length, self.max_length)


class NeverEndingTruncationSchedule(TruncationSchedule):
    """Inner problems never restart (the horizon is int32's maximum)."""

    def sample_horizon(self, key: jax.Array) -> jax.Array:
        return jnp.asarray(INT32_MAX, jnp.int32)
