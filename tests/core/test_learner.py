"""Tests for lopt_core.outer.learner.GradientLearner: averaging, clipping, the non-finite
guard, compiling once, and a short meta-training run that must make progress."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt_core
import toys
from helpers import fast_jit, flat
from lopt_core import Datasets, Task
from lopt_core.outer import (
    ConstantTruncationSchedule,
    FullES,
    GradientEstimate,
    GradientLearner,
    LearnerState,
    TruncatedGrad,
    TruncatedPES,
    VectorizedLOptTruncatedStep,
)
from toys import ToyLearnableAdam, ToyLearnableSGD, ToyLearnableSGDM

KEY = jax.random.PRNGKey(0)
DIM = 4
tree_map = jax.tree_util.tree_map


def quadratic_family(dim: int = DIM) -> toys.QuadraticFamily:
    """``sum(scale * (x - target)^2)`` from a random start, meta-loss ``log(loss)``."""
    return toys.QuadraticFamily(dim, scale_range=(-1.0, 1.0), log_scale=True)


# Exact arithmetic of apply_gradients, on hand-made estimates ---------------------------------

# log_lr = 0: float32 resolves small changes of theta exactly around zero.
LOPT = ToyLearnableSGD(initial_lr=1.0)


def make_learner(estimators=None, lopt=LOPT, **kwargs):
    if estimators is None:
        ts = VectorizedLOptTruncatedStep(quadratic_family(), lopt, ConstantTruncationSchedule(4), 2)
        estimators = [TruncatedGrad(ts, trunc_length=2)]
    return GradientLearner(lopt, estimators, **kwargs)


def estimate(grad: float, loss: float = 1.0, **metrics) -> GradientEstimate:
    return GradientEstimate(jnp.asarray(loss), {"log_lr": jnp.asarray(grad)}, metrics)


apply_jit = fast_jit(
    lambda learner, state, estimates: learner.apply_gradients(state, estimates), static_argnums=0
)


def test_apply_gradients_averages_the_estimates():
    learner = make_learner(outer_optimizer=optax.sgd(1.0), max_grad_norm=None)
    state = learner.init(KEY)
    theta0 = float(state.theta["log_lr"])
    estimates = [
        estimate(0.2, 1.0, train_loss=jnp.asarray(3.0)),
        estimate(-0.6, 2.0, train_loss=jnp.asarray(5.0)),
    ]
    state, metrics = apply_jit(learner, state, estimates)
    np.testing.assert_allclose(float(state.theta["log_lr"]), theta0 - (0.2 - 0.6) / 2, rtol=1e-6)
    np.testing.assert_allclose(metrics["meta_loss"], 1.5)
    np.testing.assert_allclose(metrics["grad_norm"], 0.2)
    np.testing.assert_allclose(metrics["train_loss"], 4.0)
    assert int(state.step) == 1 and int(metrics["nonfinite_skipped"]) == 0


def test_apply_gradients_clips_by_global_norm():
    learner = make_learner(outer_optimizer=optax.sgd(0.5), max_grad_norm=1e-3)
    state = learner.init(KEY)
    new, metrics = apply_jit(learner, state, [estimate(-7.0)])
    # One SGD step moves theta by lr * max_grad_norm in global norm, and the right way.
    change = flat(new.theta) - flat(state.theta)
    np.testing.assert_allclose(np.linalg.norm(change), 0.5 * 1e-3, rtol=1e-5)
    assert change[0] > 0
    np.testing.assert_allclose(metrics["grad_norm"], 7.0)  # reported before clipping
    # A gradient already inside the bound is untouched.
    new, _ = apply_jit(learner, state, [estimate(-1e-4)])
    np.testing.assert_allclose(flat(new.theta) - flat(state.theta), 0.5 * 1e-4, rtol=1e-4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_apply_gradients_skips_a_non_finite_gradient_or_loss(bad):
    learner = make_learner(outer_optimizer=optax.adam(0.1))
    state = learner.init(KEY)
    for estimates in ([estimate(bad)], [estimate(0.3, loss=bad)], [estimate(0.3), estimate(bad)]):
        new, metrics = apply_jit(learner, state, estimates)
        np.testing.assert_array_equal(flat(new.theta), flat(state.theta))
        for a, b in zip(
            jax.tree_util.tree_leaves(new.outer_opt_state),
            jax.tree_util.tree_leaves(state.outer_opt_state),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        assert int(metrics["nonfinite_skipped"]) == 1 and int(new.num_nonfinite) == 1
        assert int(new.step) == 1
    # A finite estimate afterwards updates theta again.
    new, metrics = apply_jit(learner, new, [estimate(0.3)])
    assert float(new.theta["log_lr"]) < float(state.theta["log_lr"])
    assert int(metrics["nonfinite_skipped"]) == 1


# The full update path: estimators, data, compile-once, the guard ---------------------------

TRACES = {"loss": 0}
NAN_OUTER_VALID = {"on": False}


class CountingRegression(Task):
    """Linear regression whose loss counts how often it is traced."""

    def init(self, key):
        return jnp.zeros((DIM,))

    def loss(self, params, key, batch):
        TRACES["loss"] += 1  # a Python side effect: runs only while tracing
        return jnp.mean(jnp.square(batch["x"] @ params - batch["y"]))


def regression_batches(split: str):
    rng = np.random.default_rng(lopt_core.SPLITS.index(split))
    w = np.arange(DIM, dtype=np.float32) / DIM
    while True:
        x = rng.normal(size=(8, DIM)).astype(np.float32)
        y = x @ w
        if split == "outer_valid" and NAN_OUTER_VALID["on"]:
            y = np.full_like(y, np.nan)
        yield {"x": x, "y": y}


def data_learner(estimator_fns, lopt, **kwargs):
    task = CountingRegression()
    task.datasets = Datasets(*(regression_batches(s) for s in lopt_core.SPLITS))
    family = lopt_core.single_task_to_family(task)
    ts = VectorizedLOptTruncatedStep(family, lopt, ConstantTruncationSchedule(6), 2)
    return GradientLearner(lopt, [make(ts) for make in estimator_fns], **kwargs)


def test_update_compiles_once_and_skips_a_nan_meta_loss():
    lopt = ToyLearnableSGD(initial_lr=0.05)
    learner = data_learner(
        [lambda ts: TruncatedGrad(ts, trunc_length=2)], lopt, outer_optimizer=optax.adam(0.05)
    )
    state = learner.init(KEY)
    assert isinstance(state, LearnerState) and len(state.worker_states) == 1
    state, metrics = learner.update(state, jax.random.PRNGKey(1))
    assert {"meta_loss", "grad_norm", "nonfinite_skipped", "train_loss"} <= set(metrics)
    traces = TRACES["loss"]
    assert traces > 0
    # The outer_valid data turns NaN: the meta-gradient is NaN and theta is protected.
    NAN_OUTER_VALID["on"] = True
    try:
        before = state
        state, metrics = learner.update(state, jax.random.PRNGKey(2))
    finally:
        NAN_OUTER_VALID["on"] = False
    assert np.isnan(float(metrics["meta_loss"]))
    np.testing.assert_array_equal(flat(state.theta), flat(before.theta))
    assert int(metrics["nonfinite_skipped"]) == 1
    # Finite again: the problems whose losses went non-finite restart at once,
    # theta moves, the count stays.
    state, metrics = learner.update(state, jax.random.PRNGKey(3))
    assert float(metrics["restarts"]) == 2
    assert np.isfinite(float(metrics["meta_loss"]))
    assert not np.array_equal(flat(state.theta), flat(before.theta))
    assert int(metrics["nonfinite_skipped"]) == 1 and int(state.step) == 3
    # A fourth update runs on the restarted problems (horizon 6: no restart yet).
    state, metrics = learner.update(state, jax.random.PRNGKey(4))
    assert float(metrics["restarts"]) == 0
    # Four updates: one trace, one compiled program.
    assert TRACES["loss"] == traces
    assert learner._update_jit._cache_size() == 1


def test_update_averages_the_estimators_gradients():
    """Deterministic estimators (TruncatedGrad on data-free quadratics) make this exact."""
    lopt = ToyLearnableSGDM(initial_lr=0.02)  # two meta-parameters, a small graph to compile
    family = quadratic_family()
    ts_a = VectorizedLOptTruncatedStep(family, lopt, ConstantTruncationSchedule(8), 2)
    ts_b = VectorizedLOptTruncatedStep(family, lopt, ConstantTruncationSchedule(8), 3)
    est_a, est_b = TruncatedGrad(ts_a, trunc_length=3), TruncatedGrad(ts_b, trunc_length=5)
    learner = GradientLearner(lopt, [est_a, est_b], optax.sgd(1.0), max_grad_norm=None)
    state = learner.init(KEY)
    # Without data or restarts the estimates do not depend on the key.
    _, a = fast_jit(est_a.estimate)(state.worker_states[0], state.theta, KEY, None)
    _, b = fast_jit(est_b.estimate)(state.worker_states[1], state.theta, KEY, None)
    new, metrics = learner.update(state, jax.random.PRNGKey(4))
    applied = flat(state.theta) - flat(new.theta)  # sgd(1.0): the applied gradient
    np.testing.assert_allclose(applied, (flat(a.grad) + flat(b.grad)) / 2, rtol=1e-4, atol=1e-7)
    assert not np.allclose(flat(a.grad), flat(b.grad), rtol=1e-2)
    np.testing.assert_allclose(metrics["meta_loss"], (a.mean_loss + b.mean_loss) / 2, rtol=1e-5)
    np.testing.assert_array_equal(new.worker_states[1].inner_step, [5, 5, 5])


def test_estimators_with_different_metrics_can_be_combined():
    lopt = ToyLearnableSGD(initial_lr=0.05)
    ts = VectorizedLOptTruncatedStep(quadratic_family(), lopt, ConstantTruncationSchedule(4), 2)
    pes, full_es = TruncatedPES(ts, trunc_length=2), FullES(ts)
    learner = GradientLearner(lopt, [pes, full_es])
    state = learner.init(KEY)
    state, metrics = learner.update(state, KEY)
    assert np.isfinite(float(metrics["train_loss"])) and int(state.step) == 1
    # FullES reports no restarts; PES's count is reported as it is, not averaged with a 0.
    for i in (1, 2):
        state, metrics = learner.update(state, jax.random.PRNGKey(i))
    assert float(metrics["restarts"]) == 2  # both PES problems restarted after 4 steps


# Meta-training makes progress ---------------------------------------------------------------


def test_meta_training_learnable_adam_lowers_the_meta_loss():
    lopt = ToyLearnableAdam(initial_lr=1e-2)
    ts = VectorizedLOptTruncatedStep(
        quadratic_family(dim=10),
        lopt,
        ConstantTruncationSchedule(100),
        num_tasks=4,
        random_initial_iteration_offset=100,
    )
    learner = GradientLearner(lopt, [TruncatedPES(ts, trunc_length=20, std=0.01)], optax.adam(3e-2))
    state = learner.init(KEY)
    losses = []
    for i in range(100):
        state, metrics = learner.update(state, jax.random.fold_in(KEY, i))
        losses.append(float(metrics["meta_loss"]))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert np.isfinite(losses).all()
    # Measured: from ~2.4 to ~-2.0 in log-loss.
    assert last < first - 2.0, (first, last)
    assert float(state.theta["log_lr"]) > np.log(1e-2) + 1.0  # it learned a larger step
    assert int(state.num_nonfinite) == 0


# Argument checks ---------------------------------------------------------------------------


def test_a_single_estimator_need_not_be_in_a_list():
    ts = VectorizedLOptTruncatedStep(quadratic_family(), LOPT, ConstantTruncationSchedule(4), 2)
    learner = GradientLearner(LOPT, TruncatedGrad(ts, 2))
    assert len(learner.estimators) == 1


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda ts: GradientLearner(LOPT, []), ValueError, "at least one"),
        (lambda ts: GradientLearner(LOPT, [ts]), TypeError, "GradientEstimator"),
        (lambda ts: GradientLearner(ToyLearnableSGD(), [TruncatedGrad(ts)]), ValueError, "same"),
        (
            lambda ts: GradientLearner(LOPT, [TruncatedGrad(ts)], max_grad_norm=0),
            ValueError,
            "max_grad_norm",
        ),
    ],
)
def test_bad_arguments_raise_clearly(make, error, match):
    ts = VectorizedLOptTruncatedStep(quadratic_family(), LOPT, ConstantTruncationSchedule(4), 2)
    with pytest.raises(error, match=match):
        make(ts)


def test_diverging_inner_problems_restart_instead_of_freezing_meta_training():
    from lopt_core.outer import NeverEndingTruncationSchedule, TruncatedPES

    # lr 3 on scales up to e: p <- p - 6 * scale * p diverges within a few dozen steps, and
    # with a never-ending schedule nothing but divergence can restart a problem.
    lopt = ToyLearnableSGD(initial_lr=3.0)
    ts = VectorizedLOptTruncatedStep(quadratic_family(), lopt, NeverEndingTruncationSchedule(), 2)
    learner = GradientLearner(
        lopt, [TruncatedPES(ts, trunc_length=10, std=0.01)], outer_optimizer=optax.sgd(0.1)
    )
    state = learner.init(KEY)
    restarts = nonfinite = 0
    for i in range(8):
        state, metrics = learner.update(state, jax.random.PRNGKey(i))
        restarts += float(metrics["restarts"])
        nonfinite += float(metrics["nonfinite_losses"])
    assert nonfinite > 0  # the problems did diverge...
    assert restarts > 0  # ...were restarted...
    assert int(metrics["nonfinite_skipped"]) == 0  # ...and no outer step was lost to them
    assert np.isfinite(flat(state.theta)).all()
