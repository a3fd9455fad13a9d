"""Tests for lopt_core.outer.gradient_estimators against meta-gradients computed independently.

The reference is plain backprop through whole inner runs: ``particle_losses`` below unrolls
the inner problems with ``learned_opt.opt_fn(theta)`` in its own ``lax.scan``, sharing
nothing with the engine but the initial inner state.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt_core
from helpers import fast_jit, flat
from lopt_core.outer import (
    ConstantTruncationSchedule,
    EmptyWorkerState,
    FullES,
    LogUniformLengthSchedule,
    NeverEndingTruncationSchedule,
    TruncatedGrad,
    TruncatedPES,
    VectorizedLOptTruncatedStep,
    sample_perturbations,
)
from toys import QuadraticFamily, RegressionFamily, ToyLearnableAdam

tree_map = jax.tree_util.tree_map
KEY = jax.random.PRNGKey(0)
DIM = 4
H = 6  # the inner horizon of most tests
NUM_TASKS = 4


# ``sum(scale * (x - target)^2)`` from a random start; meta-loss is its log.
FAMILY = QuadraticFamily(DIM, scale_range=(0.5, 2.0))
LOPT = ToyLearnableAdam(initial_lr=0.03, initial_beta1=0.5)
THETA = LOPT.init(KEY)


def make_step(sched, num_tasks=NUM_TASKS):
    return VectorizedLOptTruncatedStep(FAMILY, LOPT, sched, num_tasks)


TS_H = make_step(ConstantTruncationSchedule(H))
TS_2H = make_step(ConstantTruncationSchedule(2 * H))


def _particle_losses(theta, inner, num_steps, theta_axis=None):
    """Meta-losses ``[P, num_steps]`` of each particle unrolled from ``inner`` by plain backprop."""

    def one(theta, opt_state, cfg):
        task, opt = FAMILY.task_fn(cfg), LOPT.opt_fn(theta, is_training=True)

        def step(state, _):
            loss, grad = jax.value_and_grad(task.loss)(opt.get_params(state), None, None)
            state = opt.update(state, grad, loss=loss)
            return state, task.normalizer(task.loss(opt.get_params(state), None, None))

        return jax.lax.scan(step, opt_state, None, length=num_steps)[1]

    return jax.vmap(one, in_axes=(theta_axis, 0, 0))(theta, inner.opt_state, inner.cfg)


particle_losses = fast_jit(_particle_losses, static_argnames=("num_steps", "theta_axis"))


@functools.partial(fast_jit, static_argnames="num_steps")
def exact_grad(theta, inner, num_steps):
    """Gradient of the mean meta-loss of ``num_steps`` steps from ``inner``, by backprop."""
    return jax.grad(lambda th: jnp.mean(_particle_losses(th, inner, num_steps)))(theta)


@functools.cache
def _jitted_init_state(ts):
    return fast_jit(ts.init_state, static_argnames="theta_axis")


def init_state(ts, theta, key, task_ids, theta_axis=None):
    return _jitted_init_state(ts)(theta, key, task_ids, theta_axis=theta_axis)


def cosine(a, b) -> float:
    a, b = flat(a), flat(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def assert_trees_close(a, b, rtol=1e-4, atol=1e-6):
    np.testing.assert_allclose(flat(a), flat(b), rtol=rtol, atol=atol)


def antithetic(theta, eps):
    return tree_map(lambda t, e: jnp.concatenate([t + e, t - e]), theta, eps)


# TruncatedGrad ------------------------------------------------------------------------------


def test_truncated_grad_over_the_whole_horizon_is_the_exact_meta_gradient():
    est = TruncatedGrad(TS_H, trunc_length=H)
    ws = est.init_worker_state(THETA, KEY)
    assert (np.asarray(ws.inner_step) == 0).all()
    new_ws, estimate = fast_jit(est.estimate)(ws, THETA, jax.random.PRNGKey(1), None)
    expected = exact_grad(THETA, ws, H)
    assert np.linalg.norm(flat(expected)) > 1e-3  # a meaningful gradient, not ~0
    assert_trees_close(estimate.grad, expected)
    np.testing.assert_allclose(estimate.mean_loss, jnp.mean(particle_losses(THETA, ws, H)), 1e-5)
    np.testing.assert_array_equal(new_ws.inner_step, [H] * NUM_TASKS)
    assert float(estimate.metrics["restarts"]) == 0


def test_truncated_grad_does_not_differentiate_through_the_carried_state():
    est = TruncatedGrad(TS_2H, trunc_length=H)
    ws0 = est.init_worker_state(THETA, KEY)
    estimate_fn = fast_jit(est.estimate)
    ws1, first = estimate_fn(ws0, THETA, jax.random.PRNGKey(1), None)
    ws2, second = estimate_fn(ws1, THETA, jax.random.PRNGKey(2), None)
    assert_trees_close(first.grad, exact_grad(THETA, ws0, H))
    # The second truncation's gradient treats the state it starts from as a constant.
    assert_trees_close(second.grad, exact_grad(THETA, ws1, H))
    np.testing.assert_array_equal(ws2.inner_step, [2 * H] * NUM_TASKS)


# ES estimators: exact on a fixed draw -------------------------------------------------------


def test_full_es_is_the_antithetic_finite_difference_of_whole_runs():
    std = 0.01
    for loss_type in ("avg", "last"):
        est = FullES(TS_H, std=std, loss_type=loss_type)
        assert est.unroll_length == H
        assert isinstance(est.init_worker_state(THETA, KEY), EmptyWorkerState)
        key = jax.random.PRNGKey(7)
        _, estimate = fast_jit(est.estimate)(EmptyWorkerState(), THETA, key, None)
        # Re-derive the draw from the key the way FullES splits it.
        eps_key, init_key, _ = jax.random.split(key, 3)
        eps = sample_perturbations(eps_key, THETA, NUM_TASKS, std)
        task_ids = jnp.asarray(np.tile(np.arange(NUM_TASKS), 2), jnp.int32)
        thetas = antithetic(THETA, eps)
        inner = init_state(TS_H, thetas, init_key, task_ids, theta_axis=0)
        losses = particle_losses(thetas, inner, H, theta_axis=0)
        losses = losses.mean(axis=1) if loss_type == "avg" else losses[:, -1]
        weights = (losses[:NUM_TASKS] - losses[NUM_TASKS:]) / (2 * std**2)
        expected = tree_map(lambda e, w=weights: jnp.tensordot(w, e, 1) / NUM_TASKS, eps)
        assert_trees_close(estimate.grad, expected, rtol=1e-3)
        np.testing.assert_allclose(estimate.mean_loss, jnp.mean(losses), rtol=1e-5)


def test_pes_first_truncation_is_the_finite_difference_of_the_truncation():
    std = 0.01
    est = TruncatedPES(TS_2H, trunc_length=H, std=std)
    ws = est.init_worker_state(THETA, KEY)
    key = jax.random.PRNGKey(8)
    new_ws, estimate = fast_jit(est.estimate)(ws, THETA, key, None)
    eps = sample_perturbations(jax.random.split(key)[0], THETA, NUM_TASKS, std)
    losses = particle_losses(antithetic(THETA, eps), ws.inner, H, theta_axis=0).mean(axis=1)
    weights = (losses[:NUM_TASKS] - losses[NUM_TASKS:]) / (2 * std**2)
    expected = tree_map(lambda e: jnp.tensordot(weights, e, 1) / NUM_TASKS, eps)
    assert_trees_close(estimate.grad, expected, rtol=1e-3)
    np.testing.assert_allclose(estimate.mean_loss, jnp.mean(losses), rtol=1e-5)
    # The +eps and -eps copies of each task now hold different parameters.
    params = np.asarray(new_ws.inner.opt_state.params)
    assert not np.allclose(params[:NUM_TASKS], params[NUM_TASKS:])


# ES estimators: unbiased on average --------------------------------------------------------

NUM_SAMPLES = 256  # keys; each estimate averages NUM_TASKS antithetic pairs


def expected_exact_grad(num_steps: int):
    """The exact meta-gradient averaged over many tasks of the family (the ES target)."""
    inner = init_state(TS_H, THETA, jax.random.PRNGKey(99), jnp.arange(2048, dtype=jnp.int32))
    return exact_grad(THETA, inner, num_steps)


def assert_agrees_with_exact(samples, exact) -> None:
    """Samples (leading axis) of an estimator against the exact meta-gradient.

    The issue's criterion is the direction (cosine > 0.9). The gradient here is dominated by
    its learning-rate component, so each component is also checked for bias: its sample mean
    must lie within 4 standard errors of the exact value (a broken accumulator gives ~13).
    """
    samples = np.stack([flat(tree_map(lambda x, i=i: x[i], samples)) for i in range(NUM_SAMPLES)])
    mean, exact = samples.mean(0), flat(exact)
    assert mean @ exact / np.linalg.norm(mean) / np.linalg.norm(exact) > 0.9, (mean, exact)
    z = (mean - exact) / (samples.std(0) / np.sqrt(NUM_SAMPLES))
    assert (np.abs(z) < 4).all(), (z, mean, exact)


def test_full_es_and_pes_point_along_the_exact_meta_gradient():
    exact = expected_exact_grad(H)
    full_es = FullES(TS_H, std=0.01)
    pes = TruncatedPES(TS_H, trunc_length=H, std=0.01)

    def both(key):
        k1, k2, k3 = jax.random.split(key, 3)
        _, es = full_es.estimate(EmptyWorkerState(), THETA, k1, None)
        _, ps = pes.estimate(pes.init_worker_state(THETA, k2), THETA, k3, None)
        return es.grad, ps.grad

    keys = jax.random.split(jax.random.PRNGKey(5), NUM_SAMPLES)
    es_grads, pes_grads = fast_jit(jax.vmap(both))(keys)
    assert_agrees_with_exact(es_grads, exact)
    assert_agrees_with_exact(pes_grads, exact)


def test_pes_over_two_truncations_is_unbiased_for_the_whole_unroll():
    """The accumulator makes the second truncation's estimate include the first one's noise."""
    exact = expected_exact_grad(2 * H)  # the mean meta-loss over both truncations
    pes = TruncatedPES(TS_2H, trunc_length=H, std=0.01)

    def two_truncations(key):
        k1, k2, k3 = jax.random.split(key, 3)
        ws = pes.init_worker_state(THETA, k1)
        ws, first = pes.estimate(ws, THETA, k2, None)
        _, second = pes.estimate(ws, THETA, k3, None)
        return tree_map(lambda a, b: (a + b) / 2, first.grad, second.grad)

    keys = jax.random.split(jax.random.PRNGKey(6), NUM_SAMPLES)
    assert_agrees_with_exact(fast_jit(jax.vmap(two_truncations))(keys), exact)


# The PES accumulator ----------------------------------------------------------------------


def test_pes_accumulator_sums_perturbations_and_resets_when_a_problem_restarts():
    """Three task slots: horizon 2T (ends on a boundary), 2 (< T) and 5 (mid-truncation)."""
    trunc, std, n = 3, 0.01, 3
    ts = make_step(ConstantTruncationSchedule(2), num_tasks=n)  # restarted problems: horizon 2
    pes = TruncatedPES(ts, trunc_length=trunc, std=std)
    ws = pes.init_worker_state(THETA, KEY)
    ws = ws.replace(inner=ws.inner.replace(horizon=jnp.asarray([6, 2, 5] * 2, jnp.int32)))
    estimate = fast_jit(pes.estimate)
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    eps = [sample_perturbations(jax.random.split(k)[0], THETA, n, std) for k in keys]
    slot = lambda tree, i: flat(tree_map(lambda x: x[i], tree))

    ws1, _ = estimate(ws, THETA, keys[0], None)
    ws2, second = estimate(ws1, THETA, keys[1], None)
    ws3, _ = estimate(ws2, THETA, keys[2], None)
    acc = [ws1.accumulator, ws2.accumulator, ws3.accumulator]
    # Slot 0 (horizon 6 = 2 truncations): sums, then restarts at the third truncation's start.
    np.testing.assert_allclose(slot(acc[0], 0), slot(eps[0], 0), rtol=1e-6)
    np.testing.assert_allclose(slot(acc[1], 0), slot(eps[0], 0) + slot(eps[1], 0), rtol=1e-5)
    np.testing.assert_allclose(slot(acc[2], 0), slot(eps[2], 0), rtol=1e-6)
    # Slot 1 restarts within every truncation: the accumulator is only the last perturbation.
    for i in range(3):
        np.testing.assert_allclose(slot(acc[i], 1), slot(eps[i], 1), rtol=1e-6)
    # Slot 2 (horizon 5): no restart in the first truncation, one mid-way through the second.
    np.testing.assert_allclose(slot(acc[0], 2), slot(eps[0], 2), rtol=1e-6)
    np.testing.assert_allclose(slot(acc[1], 2), slot(eps[1], 2), rtol=1e-6)

    # The second estimate credits steps before a restart to accumulator + eps, and steps
    # after it to eps alone. Recompute it from the same unroll.
    unroll_key = jax.random.split(keys[1])[1]
    task_ids = jnp.asarray([0, 1, 2] * 2, jnp.int32)
    _, out = fast_jit(ts.unroll, static_argnames=("num_steps", "theta_axis"))(
        antithetic(THETA, eps[1]),
        ws1.inner,
        unroll_key,
        None,
        task_ids,
        num_steps=trunc,
        theta_axis=0,
    )
    delta = np.asarray(out.meta_loss[:, :n] - out.meta_loss[:, n:])  # [T, n]
    restarted = np.asarray(out.restarted[:, :n])
    np.testing.assert_array_equal(restarted, [[0, 0, 0], [0, 1, 0], [0, 0, 1]])
    expected = 0
    for i in range(n):
        before = np.cumsum(restarted[:, i]) == 0
        noise = before[:, None] * slot(ws1.accumulator, i) + slot(eps[1], i)  # [T, dims]
        expected = expected + (delta[:, i, None] * noise).mean(0) / (2 * std**2)
    np.testing.assert_allclose(flat(second.grad), expected / n, rtol=1e-3, atol=1e-6)
    assert float(second.metrics["restarts"]) == 2


# Data-backed families, jitting, and argument checks ----------------------------------------


def test_pes_on_a_data_backed_family_compiles_once():
    # (TruncatedGrad's data path is covered by test_learner.)
    ts = VectorizedLOptTruncatedStep(RegressionFamily(), LOPT, ConstantTruncationSchedule(5), 2)
    est = TruncatedPES(ts, 3)
    counters = lopt_core.datasets.count_draws(ts.task_family.datasets)
    ws = est.init_worker_state(THETA, KEY)
    for i in range(3):  # crosses a restart
        ws, estimate = est.compute_gradient_estimate(ws, THETA, jax.random.PRNGKey(i))
        assert np.isfinite(flat(estimate.grad)).all() and np.isfinite(float(estimate.mean_loss))
    # 3 estimates x 2 task slots x 3 steps, from train and outer_valid only.
    assert {k: c.count for k, c in counters.items()} == {
        "train": 18,
        "inner_valid": 0,
        "outer_valid": 18,
        "test": 0,
    }
    assert est.compiled_programs() == 1


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: TruncatedPES(TS_H, trunc_length=0), ValueError, "trunc_length"),
        (lambda: TruncatedPES(TS_H, std=0.0), ValueError, "std"),
        (lambda: TruncatedPES(LOPT), TypeError, "VectorizedLOptTruncatedStep"),
        (lambda: TruncatedGrad(TS_H, trunc_length=-2), ValueError, "trunc_length"),
        (lambda: FullES(TS_H, std=-1.0), ValueError, "std"),
        (lambda: FullES(TS_H, loss_type="min"), ValueError, "loss_type"),
        (lambda: FullES(make_step(LogUniformLengthSchedule(2, 9))), ValueError, "horizon"),
    ],
)
def test_bad_arguments_raise_clearly(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_full_es_with_an_explicit_horizon_ignores_the_schedule():
    est = FullES(make_step(NeverEndingTruncationSchedule()), horizon=3)
    assert est.unroll_length == 3
