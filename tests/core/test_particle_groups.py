"""Tests for lopt_core.outer.particle_groups: particles stepped in groups equal one vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import flat
from lopt_core.outer import (
    ConstantTruncationSchedule,
    FullES,
    TruncatedPES,
    VectorizedLOptTruncatedStep,
)
from lopt_core.outer.particle_groups import particles_per_group, vmap_in_groups
from toys import QuadraticFamily, RegressionFamily, ToyLearnableAdam

KEY = jax.random.PRNGKey(0)
LOPT = ToyLearnableAdam(initial_lr=0.03, initial_beta1=0.5)
THETA = LOPT.init(KEY)


def test_group_size_follows_the_budget():
    state = {"p": jnp.zeros((10, 3)), "m": jnp.zeros((10, 3, 2))}  # 9 elements per particle
    assert particles_per_group(state, None) is None
    assert particles_per_group(state, 90) is None  # all 10 fit
    assert particles_per_group(state, 89) == 9
    assert particles_per_group(state, 20) == 2
    assert particles_per_group(state, 1) == 1  # never less than one particle


@pytest.mark.parametrize("theta_axis", [None, 0])
@pytest.mark.parametrize("group", [None, 1, 3, 7])  # 3 leaves a remainder of 7 particles
def test_grouped_vmap_equals_vmap(theta_axis, group):
    theta = jnp.arange(7.0) if theta_axis == 0 else jnp.float32(2.0)
    xs = (jnp.arange(14.0).reshape(7, 2), {"b": jnp.ones((7, 3))})
    fn = lambda t, x, d: jnp.sum(x) * t + d["b"]
    expected = jax.vmap(fn, in_axes=(theta_axis, 0, 0))(theta, *xs)
    np.testing.assert_array_equal(vmap_in_groups(fn, theta, theta_axis, xs, group), expected)


def _estimates(estimator, num):
    """``num`` successive estimates (crossing a restart) and the final worker state."""
    ws = estimator.init_worker_state(THETA, KEY)
    grads = []
    for i in range(num):
        ws, estimate = estimator.compute_gradient_estimate(ws, THETA, jax.random.PRNGKey(i))
        grads.append(flat(estimate.grad))
    return np.stack(grads), flat(ws) if jax.tree_util.tree_leaves(ws) else np.zeros(0)


@pytest.mark.parametrize("estimator", ["pes", "full_es"])
def test_estimates_stepped_in_groups_equal_one_vmap(estimator):
    results = []
    for group_elements in (None, 1):  # 1: every particle in a group of its own
        family = RegressionFamily() if estimator == "pes" else QuadraticFamily(3)
        ts = VectorizedLOptTruncatedStep(
            family, LOPT, ConstantTruncationSchedule(5), 3, group_elements=group_elements
        )
        est = TruncatedPES(ts, trunc_length=3, std=0.01) if estimator == "pes" else FullES(ts)
        results.append(_estimates(est, 2))
    (grads, state), (grouped_grads, grouped_state) = results
    assert np.isfinite(grads).all() and np.abs(grads).max() > 0
    # Float rounding only: PES divides loss differences (rounded at ~1e-7) by std = 0.01.
    np.testing.assert_allclose(grouped_grads, grads, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grouped_state, state, rtol=1e-5, atol=1e-7)


def test_a_bad_budget_is_refused():
    with pytest.raises(ValueError, match="group_elements"):
        VectorizedLOptTruncatedStep(
            QuadraticFamily(3), LOPT, ConstantTruncationSchedule(5), 2, group_elements=0
        )
