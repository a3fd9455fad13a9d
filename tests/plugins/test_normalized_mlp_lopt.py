"""NormalizedMLPLOpt: normalized AdamW at init, schedule, orthogonalized option, conditioner."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt_core import meta_train
from lopt_core.outer import ConstantTruncationSchedule, TruncatedPES
from lopt_core.registry import get_registry
from lopt_plugins.learned_optimizers import NormalizedMLPLOpt

PARAMS = {"w": jnp.arange(12.0).reshape(3, 4) / 10.0 - 0.5, "b": jnp.array([0.1, -0.2, 0.3])}
GRAD = {"w": jnp.sin(jnp.arange(12.0)).reshape(3, 4), "b": jnp.array([1.0, -2.0, 0.5])}


def _step(lopt, steps=1, num_steps=100):
    theta = lopt.init(jax.random.PRNGKey(0))
    opt = lopt.opt_fn(theta)
    state = opt.init(PARAMS, num_steps=num_steps)
    for _ in range(steps):
        state = opt.update(state, GRAD)
    return theta, state


def test_at_init_it_is_adamw_normalized_per_tensor():
    lopt = NormalizedMLPLOpt(initial_lr=1e-2, initial_weight_decay=1e-3)
    theta, state = _step(lopt)
    lr = float(lopt.learning_rate(theta, 0.0))
    for name in PARAMS:
        p, g = PARAMS[name], GRAD[name]
        u = g / (jnp.abs(g) + 1e-8)  # Adam's first step: m_hat / sqrt(v_hat) = sign(g)
        expected = p - lr * (u / jnp.sqrt(jnp.mean(u**2)) + 1e-3 * p)
        np.testing.assert_allclose(state.params[name], expected, rtol=1e-5, atol=1e-7)


def test_the_schedule_warms_up_decays_and_stretches_with_the_run():
    lopt = NormalizedMLPLOpt(initial_lr=1e-2, warmup_fraction=0.1, final_lr_fraction=0.1)
    theta = lopt.init(jax.random.PRNGKey(0))
    lr = lambda s: float(lopt.learning_rate(theta, s))
    assert lr(0.0) < 0.02 * 1e-2
    assert lr(0.1) == pytest.approx(1e-2, rel=1e-3)
    assert lr(1.0) == pytest.approx(1e-3, rel=1e-3) and lr(3.0) == lr(1.0)
    assert lr(0.2) > lr(0.5) > lr(0.9)
    # A learned schedule term moves it, within its soft bound.
    moved = lopt.learning_rate({**theta, "schedule": theta["schedule"].at[0].set(5.0)}, 0.0)
    assert float(moved) <= lr(0.0) * np.exp(3.0) * 1.0001


def test_orthogonalized_updates_matrices_by_newton_schulz_and_vectors_by_adamw():
    lopt = NormalizedMLPLOpt(orthogonalize=True, initial_weight_decay=1e-12)
    theta, state = _step(lopt)
    lr = float(lopt.learning_rate(theta, 0.0))
    step_w = (PARAMS["w"] - state.params["w"]) / lr
    singular = np.linalg.svd(np.asarray(step_w), compute_uv=False) / np.sqrt(4)
    assert np.all((singular > 0.5) & (singular < 1.3)), singular  # about orthogonal
    step_b = (PARAMS["b"] - state.params["b"]) / lr
    # AdamW's first step, sign(g), through the soft bound 3 tanh(x / 3) on Adam's direction.
    np.testing.assert_allclose(step_b, 3 * np.tanh(np.sign(GRAD["b"]) / 3), rtol=1e-3)


def test_the_conditioner_starts_as_the_plain_optimizer_and_keeps_a_state_per_tensor():
    plain = _step(NormalizedMLPLOpt(), steps=3)[1]
    theta, conditioned = _step(NormalizedMLPLOpt(conditioner_size=4), steps=3)
    for name in PARAMS:
        np.testing.assert_allclose(conditioned.params[name], plain.params[name], rtol=1e-5)
    assert len(conditioned.conditioner) == 2 and conditioned.conditioner[0].shape == (4,)
    assert float(jnp.abs(conditioned.conditioner[0]).sum()) > 0  # the GRU has run
    assert "conditioner" in theta


@pytest.mark.parametrize("options", [{}, {"conditioner_size": 4}])
def test_it_meta_trains_with_pes(tmp_path, options):
    family = get_registry().create("task_family", "FixedDimQuadraticFamily", dim=3)
    lopt = NormalizedMLPLOpt(initial_lr=1e-2, **options)
    start = lopt.init(jax.random.PRNGKey(0))
    result = meta_train(
        tmp_path / "run", family, lopt, num_steps=3, num_tasks=2, progress=False,
        gradient_estimator=functools.partial(TruncatedPES, trunc_length=3, std=0.05),
        truncation_schedule=ConstantTruncationSchedule(6), outer_learning_rate=1e-2,
    )  # fmt: skip
    theta = result.state.theta
    assert np.isfinite(result.last_metrics["meta_loss"])
    for part in ("schedule", "hparams", *(["conditioner"] if options else [])):
        moved = jax.tree_util.tree_map(lambda a, b: jnp.abs(a - b).max(), theta[part], start[part])
        assert max(float(x) for x in jax.tree_util.tree_leaves(moved)) > 0, part
