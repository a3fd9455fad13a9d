"""Tests for lopt_core.outer.truncation_schedules: horizons of restarted inner problems."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt_core.outer import (
    ConstantTruncationSchedule,
    LogUniformLengthSchedule,
    NeverEndingTruncationSchedule,
    TruncationSchedule,
)

INT32_MAX = 2**31 - 1
KEYS = jax.random.split(jax.random.PRNGKey(0), 4000)


def sample_many(sched: TruncationSchedule) -> np.ndarray:
    """Horizons for 4000 keys, drawn the way the truncated step draws them (vmapped, jitted)."""
    return np.asarray(jax.jit(jax.vmap(sched.sample_horizon))(KEYS))


def test_constant_schedule_returns_its_length_as_int32():
    horizons = sample_many(ConstantTruncationSchedule(17))
    assert horizons.dtype == np.int32
    assert (horizons == 17).all()


@pytest.mark.parametrize("min_length, max_length", [(1, 50), (10, 20), (3, 3)])
def test_log_uniform_stays_in_bounds_and_reaches_both_ends(min_length, max_length):
    horizons = sample_many(LogUniformLengthSchedule(min_length, max_length))
    assert horizons.dtype == np.int32
    assert horizons.min() == min_length
    assert horizons.max() == max_length


def test_log_uniform_is_uniform_in_log_space():
    horizons = sample_many(LogUniformLengthSchedule(1, 10_000))
    # Log-uniform on [1, 10001): the median is ~sqrt(10001) and each decade holds ~1/4.
    assert 80 < np.median(horizons) < 125
    for low in (1, 10, 100, 1000):
        frac = np.mean((horizons >= low) & (horizons < 10 * low))
        assert 0.2 < frac < 0.3, (low, frac)


def test_log_uniform_differs_between_keys_and_repeats_for_a_key():
    sched = LogUniformLengthSchedule(1, 1000)
    key = jax.random.PRNGKey(3)
    assert int(sched.sample_horizon(key)) == int(sched.sample_horizon(key))
    assert len(np.unique(sample_many(sched))) > 100


@pytest.mark.parametrize(
    "min_length, max_length",
    [(1, INT32_MAX), (INT32_MAX - 1000, INT32_MAX), (INT32_MAX, INT32_MAX), (2**30, 2**31 - 2)],
)
def test_log_uniform_is_int32_safe(min_length, max_length):
    # float32 rounds int32's largest values up to 2**31, which would wrap to a negative
    # int32; every horizon must still lie in [min_length, max_length].
    horizons = sample_many(LogUniformLengthSchedule(min_length, max_length)).astype(np.int64)
    assert horizons.min() >= min_length
    assert horizons.max() <= max_length


def test_never_ending_schedule_is_int32_max():
    horizons = sample_many(NeverEndingTruncationSchedule())
    assert horizons.dtype == np.int32
    assert (horizons == INT32_MAX).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConstantTruncationSchedule(0),
        lambda: ConstantTruncationSchedule(-3),
        lambda: ConstantTruncationSchedule(2.5),
        lambda: ConstantTruncationSchedule(True),
        lambda: ConstantTruncationSchedule(2**31),
        lambda: LogUniformLengthSchedule(0, 10),
        lambda: LogUniformLengthSchedule(10, 5),
        lambda: LogUniformLengthSchedule(1, 2**40),
    ],
)
def test_bad_lengths_raise_clearly(make):
    with pytest.raises(ValueError, match="length"):
        make()


def test_numpy_integers_are_accepted():
    sched = LogUniformLengthSchedule(np.int64(2), np.int32(9))
    assert sched.min_length == 2 and sched.max_length == 9
    assert int(ConstantTruncationSchedule(np.int64(5)).sample_horizon(KEYS[0])) == 5


def test_base_schedule_must_be_subclassed():
    with pytest.raises(NotImplementedError, match="sample_horizon"):
        TruncationSchedule().sample_horizon(jnp.zeros(2, jnp.uint32))
