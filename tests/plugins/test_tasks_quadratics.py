"""Tests for the quadratic tasks and families of lopt_plugins.tasks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt_core
from helpers import sample_tasks_jitted
from lopt_plugins.tasks import (
    FixedDimQuadraticFamily,
    NoisyConditionedQuadraticFamily,
    QuadraticTask,
)

KEY = jax.random.PRNGKey(0)


def test_quadratic_task_init_loss_and_adam_decrease():
    task = QuadraticTask(dim=10)
    assert task.datasets is None
    result = lopt_core.train(task, lopt_core.Adam(0.1), KEY, num_steps=50)
    init_loss, final_loss = np.asarray(result.inner_valid_loss)
    # params ~ N(0, I): the initial loss is a chi-square with 10 degrees of freedom.
    assert np.isfinite(init_loss) and 2.0 < init_loss < 30.0
    assert final_loss < 0.05 * init_loss
    assert np.asarray(result.train_loss).shape == (50,)
    np.testing.assert_allclose(task.normalizer(init_loss), init_loss / 10, rtol=1e-6)


def test_quadratic_normalizer_clips_and_maps_nan():
    task = QuadraticTask(dim=4)
    out = task.normalizer(jnp.array([0.0, 4.0, 1e9, jnp.nan, jnp.inf, -1.0]))
    np.testing.assert_allclose(out, [0.0, 1.0, 10.0, 10.0, 10.0, 0.0])


def test_quadratic_task_equality_and_errors():
    assert QuadraticTask(5) == QuadraticTask(5) and hash(QuadraticTask(5)) == hash(QuadraticTask(5))
    assert QuadraticTask(5) != QuadraticTask(6)
    with pytest.raises(ValueError, match="dim must be a positive integer, got 0"):
        QuadraticTask(0)


def test_fixed_dim_family_trains_8_tasks_in_one_call():
    family = FixedDimQuadraticFamily(dim=10)
    cfgs = sample_tasks_jitted(family, 8)
    assert cfgs["target"].shape == (8, 10)
    result = lopt_core.train_family(family, lopt_core.Adam(0.1), KEY, num_tasks=8, num_steps=50)
    losses = np.asarray(result.inner_valid_loss)
    assert losses.shape == (8, 2) and np.all(np.isfinite(losses))
    assert np.all(losses[:, 1] < 0.2 * losses[:, 0])
    # Different targets give different problems, so distinct initial losses.
    assert len(np.unique(np.round(losses[:, 0], 4))) == 8


def test_conditioned_family_samples():
    family = NoisyConditionedQuadraticFamily(
        dim=6, min_log10_condition=1.0, max_log10_condition=2.0
    )
    cfgs = sample_tasks_jitted(family, 16)
    eig = np.asarray(cfgs["eigenvalues"])
    np.testing.assert_allclose(eig[:, 0], 1.0)
    condition = eig[:, 0] / eig[:, -1]
    assert np.all(condition >= 10.0 - 1e-3) and np.all(condition <= 100.0 + 1e-2)
    assert np.ptp(condition) > 1.0  # the condition number really is sampled
    rot = np.asarray(cfgs["rotation"])
    eye = np.broadcast_to(np.eye(6), rot.shape)
    np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), eye, atol=1e-5)
    noise = np.asarray(cfgs["noise_std"])
    assert np.all((noise >= 0) & (noise <= 1)) and np.ptp(noise) > 0


def test_conditioned_task_loss_matches_formula_and_noise_uses_key():
    family = NoisyConditionedQuadraticFamily(dim=4)
    cfg = family.sample(KEY)
    task = family.task_fn(cfg)
    params = jnp.arange(4.0)
    a = cfg["rotation"] @ jnp.diag(cfg["eigenvalues"]) @ cfg["rotation"].T
    clean = dict(cfg, noise_std=jnp.array(0.0))
    d = params - cfg["target"]
    np.testing.assert_allclose(
        family.task_fn(clean).loss(params, KEY, None), 0.5 * d @ a @ d, rtol=1e-5
    )
    k1, k2 = jax.random.split(KEY)
    assert float(task.loss(params, k1, None)) != float(task.loss(params, k2, None))
    assert float(family.task_fn(clean).loss(params, k1, None)) == float(
        family.task_fn(clean).loss(params, k2, None)
    )


def test_conditioned_family_trains_8_tasks_in_one_call():
    family = NoisyConditionedQuadraticFamily(dim=10)
    result = lopt_core.train_family(family, lopt_core.Adam(0.1), KEY, num_tasks=8, num_steps=50)
    losses = np.asarray(result.inner_valid_loss)
    assert losses.shape == (8, 2) and np.all(np.isfinite(losses))
    assert np.all(losses[:, 1] < losses[:, 0])
    assert len(np.unique(np.round(losses[:, 0], 4))) == 8


def test_conditioned_normalizer_is_about_one_at_init():
    family = NoisyConditionedQuadraticFamily(dim=10)

    def normalized_init_loss(cfg, key):
        task = family.task_fn(cfg)
        init_key, loss_key = jax.random.split(key)
        return task.normalizer(task.loss(task.init(init_key), loss_key, None))

    keys = jax.random.split(KEY, 64)
    values = np.asarray(jax.vmap(normalized_init_loss)(sample_tasks_jitted(family, 64), keys))
    # E[loss / trace(A)] = 1 + noise_std**2 / 2 with noise_std ~ U[0, 1]: about 1.17.
    assert 0.8 < values.mean() < 1.6
    assert np.all(values > 0)


def test_conditioned_family_rejects_bad_ranges():
    with pytest.raises(ValueError, match="min_noise_std <= max_noise_std"):
        NoisyConditionedQuadraticFamily(min_noise_std=1.0, max_noise_std=0.5)
