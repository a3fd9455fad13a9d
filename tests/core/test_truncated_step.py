"""Tests for lopt_core.outer.truncated_step: many inner problems unrolled a truncation at a time."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt_core
import toys
from helpers import FAST_COMPILE
from lopt_core import Datasets, Task, TaskFamily
from lopt_core.outer import (
    ConstantTruncationSchedule,
    LogUniformLengthSchedule,
    NeverEndingTruncationSchedule,
    VectorizedLOptTruncatedStep,
)
from toys import Quadratic, ToyLearnableSGD

KEY = jax.random.PRNGKey(0)
DIM = 3


def quadratic_family() -> toys.QuadraticFamily:
    """``|x - target|^2`` started from ``x0``; both come from the cfg, so a restart is visible."""
    return toys.QuadraticFamily(DIM, sample_x0=True)


LOPT = ToyLearnableSGD(initial_lr=0.1)
THETA = LOPT.init(KEY)
TASK_IDS = jnp.asarray([0, 1, 0, 1], jnp.int32)


def make_step(sched, num_tasks=2, offset=0, family=None, **kw):
    return VectorizedLOptTruncatedStep(
        family or quadratic_family(),
        LOPT,
        sched,
        num_tasks,
        random_initial_iteration_offset=offset,
        **kw,
    )


@functools.cache
def jitted(ts):
    """``ts.init_state`` and ``ts.unroll`` jitted once per truncated step (compiles dominate)."""
    return (
        jax.jit(ts.init_state, static_argnames="theta_axis", compiler_options=FAST_COMPILE),
        jax.jit(
            ts.unroll, static_argnames=("num_steps", "theta_axis"), compiler_options=FAST_COMPILE
        ),
    )


def init(ts, theta, key, task_ids, theta_axis=None):
    return jitted(ts)[0](theta, key, task_ids, theta_axis=theta_axis)


def unroll(ts, theta, state, key, task_ids, num_steps, theta_axis=None, batches=None):
    return jitted(ts)[1](
        theta, state, key, batches, task_ids, num_steps=num_steps, theta_axis=theta_axis
    )


def quad_loss(cfg, x):
    return np.sum(np.square(np.asarray(x) - np.asarray(cfg["target"])), axis=-1)


TS3 = make_step(ConstantTruncationSchedule(3))


# Initial state --------------------------------------------------------------------------


def test_init_state_shapes_and_shared_problems_for_equal_task_ids():
    state = init(TS3, THETA, KEY, TASK_IDS)
    assert state.inner_step.shape == (4,) and state.inner_step.dtype == jnp.int32
    assert (np.asarray(state.inner_step) == 0).all()  # no offset: every problem starts at 0
    assert (np.asarray(state.horizon) == 3).all()
    params = np.asarray(state.opt_state.params)
    assert params.shape == (4, DIM)
    np.testing.assert_array_equal(params[0], params[2])
    np.testing.assert_array_equal(state.cfg["target"][1], state.cfg["target"][3])
    assert not np.allclose(params[0], params[1])
    # Fresh problems start at the family's init for their cfg.
    np.testing.assert_array_equal(params, state.cfg["x0"])


# Unrolling and restarts ------------------------------------------------------------------


def test_problems_restart_with_new_cfg_and_init_at_their_horizon():
    horizon, num_steps = 3, 8
    state0 = init(TS3, THETA, KEY, TASK_IDS)
    state, out = unroll(TS3, THETA, state0, jax.random.PRNGKey(1), TASK_IDS, num_steps)
    assert out.train_loss.shape == out.meta_loss.shape == out.restarted.shape == (num_steps, 4)
    restarted = np.asarray(out.restarted)
    expected = np.zeros((num_steps, 4), bool)
    expected[[3, 6]] = True  # after 3 steps the problem is done and the next step restarts it
    np.testing.assert_array_equal(restarted, expected)
    # Two steps into the third problem.
    np.testing.assert_array_equal(state.inner_step, [2, 2, 2, 2])
    np.testing.assert_array_equal(state.horizon, [horizon] * 4)
    # A new cfg, shared by particles of the same task slot.
    assert not np.allclose(state.cfg["target"], state0.cfg["target"])
    np.testing.assert_array_equal(state.cfg["target"][0], state.cfg["target"][2])
    assert not np.allclose(state.cfg["target"][0], state.cfg["target"][1])
    # The restart step's loss is the new problem's loss at its fresh init (x0 of the new cfg).
    train_loss = np.asarray(out.train_loss)
    np.testing.assert_allclose(train_loss[6], quad_loss(state.cfg, state.cfg["x0"]), rtol=1e-5)
    np.testing.assert_allclose(train_loss[0], quad_loss(state0.cfg, state0.cfg["x0"]), rtol=1e-5)
    # The meta-loss is the normalized loss after the step's update: data-free, that is the
    # next step's train loss, except across a restart.
    meta_loss = np.asarray(out.meta_loss)
    same_problem = np.asarray([0, 1, 3, 4, 6])
    np.testing.assert_allclose(
        meta_loss[same_problem], np.log(train_loss[same_problem + 1]), rtol=1e-5
    )
    assert not np.allclose(meta_loss[2], np.log(train_loss[3]))
    assert (meta_loss[[2, 5]] < np.log(train_loss[[2, 5]])).all()  # SGD descends
    # ...and the problems' step counts say two updates of SGD happened since: x0 - 2 steps.
    lr = 0.1
    x = np.asarray(state.cfg["x0"])
    for _ in range(2):
        x = x - lr * 2 * (x - np.asarray(state.cfg["target"]))
    np.testing.assert_allclose(state.opt_state.params, x, rtol=1e-5, atol=1e-6)


def test_restart_is_shared_by_perturbed_copies_of_a_task():
    """Particles of one task slot with different theta restart together into the same problem."""
    ts = make_step(ConstantTruncationSchedule(2), num_tasks=1)
    task_ids = jnp.asarray([0, 0], jnp.int32)
    thetas = {"log_lr": jnp.log(jnp.asarray([0.05, 0.2]))}
    state = init(ts, thetas, KEY, task_ids, theta_axis=0)
    state, out = unroll(ts, thetas, state, jax.random.PRNGKey(4), task_ids, 5, theta_axis=0)
    np.testing.assert_array_equal(out.restarted[:, 0], out.restarted[:, 1])
    np.testing.assert_array_equal(np.asarray(out.restarted[:, 0]), [0, 0, 1, 0, 1])
    train_loss = np.asarray(out.train_loss)
    # Same problem at the restart steps, different progress otherwise.
    np.testing.assert_allclose(train_loss[[0, 2, 4], 0], train_loss[[0, 2, 4], 1], rtol=1e-6)
    assert not np.allclose(train_loss[1, 0], train_loss[1, 1])
    np.testing.assert_array_equal(state.cfg["target"][0], state.cfg["target"][1])


def test_random_offset_moves_the_first_restart_and_later_problems_start_at_zero():
    horizon, k, num_steps, n = 6, 4, 14, 64
    ts = make_step(ConstantTruncationSchedule(horizon), num_tasks=n, offset=k)
    task_ids = jnp.arange(n, dtype=jnp.int32)
    state0 = init(ts, THETA, KEY, task_ids)
    offsets = np.asarray(state0.inner_step)
    # First problems start at a random step in [0, k), all of them used.
    assert offsets.min() == 0 and offsets.max() == k - 1 and len(np.unique(offsets)) == k
    state, out = unroll(ts, THETA, state0, jax.random.PRNGKey(2), task_ids, num_steps)
    restarted, inner_step = np.asarray(out.restarted), np.asarray(state.inner_step)
    for p in range(n):
        first = horizon - offsets[p]
        # Later problems run their full horizon: restarts every `horizon` steps.
        expected = [t for t in range(first, num_steps, horizon)]
        np.testing.assert_array_equal(np.flatnonzero(restarted[:, p]), expected)
        assert inner_step[p] == num_steps - expected[-1]


def test_log_uniform_horizons_restart_each_problem_at_its_own_horizon():
    n, num_steps = 16, 12
    ts = make_step(LogUniformLengthSchedule(2, 8), num_tasks=n)
    task_ids = jnp.arange(n, dtype=jnp.int32)
    state0 = init(ts, THETA, KEY, task_ids)
    horizons = np.asarray(state0.horizon)
    assert len(np.unique(horizons)) > 2 and horizons.min() >= 2 and horizons.max() <= 8
    state, out = unroll(ts, THETA, state0, jax.random.PRNGKey(3), task_ids, num_steps)
    first_restart = np.argmax(np.asarray(out.restarted), axis=0)
    np.testing.assert_array_equal(first_restart, horizons)
    # The restarted problems drew new horizons from the schedule.
    assert (np.asarray(state.horizon) >= 2).all() and (np.asarray(state.horizon) <= 8).all()


def test_never_ending_schedule_never_restarts():
    ts = make_step(NeverEndingTruncationSchedule())
    state = init(ts, THETA, KEY, TASK_IDS)
    state, out = unroll(ts, THETA, state, KEY, TASK_IDS, 8)
    assert not np.asarray(out.restarted).any()
    np.testing.assert_array_equal(state.inner_step, [8] * 4)


# Data --------------------------------------------------------------------------------------


def counting_iterator(offset: float):
    """Batches whose values encode the running batch number, so the test can trace them."""
    for i in itertools.count():
        x = np.full((2, DIM), float(i) + offset, np.float32) / 10.0
        yield {"x": x, "y": np.asarray([1.0, -1.0], np.float32)}


class Regression(Task):
    """Linear regression ``mean((x @ w - y)^2)`` on the batch."""

    def init(self, key):
        return jnp.zeros((DIM,))

    def loss(self, params, key, batch):
        return jnp.mean(jnp.square(batch["x"] @ params - batch["y"]))


def make_data_step(meta_loss_split="outer_valid"):
    task = Regression()
    task.datasets = Datasets(
        train=counting_iterator(0.0),
        inner_valid=counting_iterator(100.0),
        outer_valid=counting_iterator(1000.0),
        test=counting_iterator(10_000.0),
    )
    family = lopt_core.single_task_to_family(task)
    return make_step(
        ConstantTruncationSchedule(50), num_tasks=2, family=family, meta_loss_split=meta_loss_split
    )


def test_get_batches_stacks_steps_then_task_slots_and_counts_them():
    ts = make_data_step()
    batches = ts.get_batches(3)
    assert set(batches) == {"train", "outer_valid"}
    assert batches["train"]["x"].shape == (3, 2, 2, DIM)  # [steps, task slots, batch, ...]
    # Each task slot draws its own consecutive batches: slot 0 gets 0..2, slot 1 gets 3..5.
    np.testing.assert_allclose(batches["train"]["x"][:, :, 0, 0] * 10, [[0, 3], [1, 4], [2, 5]])
    np.testing.assert_allclose(
        batches["outer_valid"]["x"][:, :, 0, 0] * 10, [[1000, 1003], [1001, 1004], [1002, 1005]]
    )
    np.testing.assert_allclose(ts.get_batches(1)["train"]["x"][0, :, 0, 0] * 10, [6, 7])
    train_only = make_data_step("train")
    assert set(train_only.get_batches(2)) == {"train"}
    # Data-free families have no batches.
    assert make_step(ConstantTruncationSchedule(3)).get_batches(4) is None


@pytest.mark.parametrize("split", ["outer_valid", "train"])
def test_unroll_trains_on_train_batches_and_scores_the_meta_loss_split(split):
    ts = make_data_step(split)
    task_ids = jnp.asarray([0, 1, 1], jnp.int32)  # particle 2 shares slot 1's data
    state = init(ts, THETA, KEY, task_ids)
    batches = ts.get_batches(2)
    _, out = unroll(ts, THETA, state, KEY, task_ids, 2, batches=batches)
    lr = 0.1
    train, meta = batches["train"], batches[split]
    for p, slot in enumerate([0, 1, 1]):
        w = np.zeros(DIM, np.float32)
        for t in range(2):
            x, y = train["x"][t, slot], train["y"][t, slot]
            np.testing.assert_allclose(out.train_loss[t, p], np.mean((x @ w - y) ** 2), rtol=1e-5)
            w = w - lr * 2 * x.T @ (x @ w - y) / len(y)
            x, y = meta["x"][t, slot], meta["y"][t, slot]
            np.testing.assert_allclose(out.meta_loss[t, p], np.mean((x @ w - y) ** 2), rtol=1e-5)


# Argument checks ----------------------------------------------------------------------------


class NotStatic(TaskFamily):
    def sample(self, key):
        return int(jax.random.randint(key, (), 0, 3))

    def task_fn(self, cfg):
        return Quadratic(cfg)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"task_family": Quadratic(jnp.zeros(DIM))}, TypeError, "single_task_to_family"),
        ({"learned_opt": lopt_core.Adam()}, TypeError, "LearnedOptimizer"),
        ({"trunc_sched": 10}, TypeError, "TruncationSchedule"),
        ({"num_tasks": 0}, ValueError, "num_tasks"),
        ({"random_initial_iteration_offset": -1}, ValueError, "random_initial_iteration_offset"),
        ({"meta_loss_split": "valid"}, ValueError, "meta_loss_split"),
        ({"task_family": NotStatic()}, lopt_core.StaticGraphError, "NotStatic"),
    ],
)
def test_bad_arguments_raise_clearly(kwargs, error, match):
    args = {
        "task_family": quadratic_family(),
        "learned_opt": LOPT,
        "trunc_sched": ConstantTruncationSchedule(3),
        "num_tasks": 2,
    }
    with pytest.raises(error, match=match):
        VectorizedLOptTruncatedStep(**{**args, **kwargs})
