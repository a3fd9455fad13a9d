"""Steady-state steps compile nothing and move nothing between host and device.

Meta-training is thousands of tiny jitted steps: one retrace or one implicit
host round-trip per step would dominate their cost. Compilations are counted
through ``jax.monitoring``; implicit transfers are made errors with
``jax.transfer_guard("disallow")``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

import lopt_core
from lopt_core.outer import (
    ConstantTruncationSchedule,
    FullES,
    GradientLearner,
    TruncatedPES,
    VectorizedLOptTruncatedStep,
)
from toys import QuadraticFamily, ToyLearnableAdam

DIM = 3


@pytest.fixture
def compilations():
    """XLA compilations (and traces) seen while the test runs."""
    events = []

    def listener(name, duration, **kwargs):
        if name in ("/jax/core/compile/backend_compile_duration", "/jax/core/compile/tracing"):
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)


def test_outer_steps_compile_once_and_never_transfer(compilations):
    family, lopt = QuadraticFamily(DIM), ToyLearnableAdam(initial_lr=0.05)
    step = VectorizedLOptTruncatedStep(
        family, lopt, ConstantTruncationSchedule(4), num_tasks=2, random_initial_iteration_offset=4
    )
    estimators = [TruncatedPES(step, trunc_length=2), FullES(step)]
    learner = GradientLearner(lopt, estimators, optax.adam(1e-2))
    state = learner.init(jax.random.PRNGKey(0))
    base = jax.random.PRNGKey(1)
    state, _ = learner.update(state, jax.random.fold_in(base, 0))  # compiles here
    assert compilations, "the listener saw no compilation at all; it is not counting"
    keys = [jax.random.fold_in(base, i) for i in range(1, 5)]  # (fold_in moves i to the device)
    compilations.clear()
    thetas = []
    # Later steps: new keys, new theta, restarts (horizon 4, truncations of 2): the
    # same compiled function, and no implicit host<->device transfer.
    with jax.transfer_guard("disallow"):
        for key in keys:
            state, metrics = learner.update(state, key)
            thetas.append(state.theta["log_lr"])
    assert compilations == []
    assert learner._update_jit._cache_size() == 1
    assert len({float(t) for t in thetas}) > 1  # theta really changed between steps
    assert float(metrics["restarts"]) >= 0


def test_train_family_with_new_keys_and_theta_compiles_once_and_never_transfers(compilations):
    family, lopt = QuadraticFamily(DIM), ToyLearnableAdam(initial_lr=0.05)
    theta = lopt.init(jax.random.PRNGKey(0))
    first = lopt_core.train_family(family, lopt, jax.random.PRNGKey(1), 4, 6, theta=theta)
    faster = dict(theta, log_lr=theta["log_lr"] + 1.0)  # (eager ops compile kernels too)
    key = jax.random.PRNGKey(2)
    compilations.clear()
    with jax.transfer_guard("disallow"):
        second = lopt_core.train_family(family, lopt, key, 4, 6, theta=faster)
        jax.block_until_ready(second)
    assert compilations == []
    assert not jnp.allclose(first.train_loss, second.train_loss)


def test_compiler_options_follow_the_environment(monkeypatch):
    from lopt_core.jit import compiler_options

    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("LOPT_CPU_BACKEND_OPT_LEVEL", "2")
    assert compiler_options("cpu") == {"xla_backend_optimization_level": 2}
    assert compiler_options("gpu") is None  # other backends keep XLA's defaults
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert compiler_options("cpu") is None  # an explicit XLA flag wins
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("LOPT_CPU_BACKEND_OPT_LEVEL", "default")
    assert compiler_options("cpu") is None
    monkeypatch.delenv("LOPT_CPU_BACKEND_OPT_LEVEL")
    assert compiler_options("cpu") == {"xla_backend_optimization_level": 2}  # the default
    monkeypatch.setenv("LOPT_CPU_BACKEND_OPT_LEVEL", "fast")
    with pytest.raises(ValueError, match="LOPT_CPU_BACKEND_OPT_LEVEL must be an integer"):
        compiler_options("cpu")
