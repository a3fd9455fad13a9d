"""Tests for ``ResidualAdamLOpt`` (lopt_plugins.learned_optimizers.residual_adam)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import FAST_COMPILE, toy_params_and_grads
from lopt_core import get_registry
from lopt_core.learned import LearnedOptimizer
from lopt_core.optimizers import OptaxOptimizer
from lopt_plugins.learned_optimizers import ResidualAdamLOpt
from lopt_plugins.learned_optimizers.residual_adam import HPARAMS, SCHEDULE_TIME_SCALES

KEY = jax.random.PRNGKey(0)
tree_map = jax.tree_util.tree_map


def bfloat16_tensor(key):
    return {"t": (0.1 * jax.random.normal(key, (2, 2, 2))).astype(jnp.bfloat16)}


def params_and_grads(n: int = 4, bfloat16: bool = False):
    """A vector and a matrix (and a bfloat16 tensor), and ``n`` stacked gradients for them."""
    params, grads = toy_params_and_grads(n, bfloat16_tensor if bfloat16 else None)
    return params, tree_map(lambda *g: jnp.stack(g), *grads)


@functools.partial(jax.jit, static_argnames=("lopt",), compiler_options=FAST_COMPILE)
def run_lopt(lopt, theta, params, grads):
    """The state after one update per stacked gradient; theta traced (one compile per lopt)."""
    opt = lopt.opt_fn(theta)
    state = opt.init(params)
    state, _ = jax.lax.scan(lambda s, g: (opt.update(s, g), None), state, grads)
    return state


@functools.partial(jax.jit, compiler_options=FAST_COMPILE)
def run_adamw(lr, b1, b2, eps, wd, params, grads):
    opt = OptaxOptimizer(optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd))
    state = opt.init(params)
    state, _ = jax.lax.scan(lambda s, g: (opt.update(s, g), None), state, grads)
    return opt.get_params(state)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.float32(x), np.float32(y), rtol=rtol, atol=atol)


# One instance per configuration: run_lopt compiles once per instance.
WITH_MLP = ResidualAdamLOpt(
    initial_lr=0.02,
    initial_beta1=0.8,
    initial_beta2=0.99,
    initial_epsilon=1e-6,
    initial_weight_decay=0.01,
    hidden_size=4,
    residual_mult=0.1,
)
NO_MLP = ResidualAdamLOpt(initial_lr=0.02, initial_weight_decay=0.01, use_mlp=False)


def test_is_a_registered_learned_optimizer():
    registry = get_registry()
    assert registry.has("learned_optimizer", "ResidualAdamLOpt")
    made = registry.create("learned_optimizer", "ResidualAdamLOpt", hidden_size=4)
    assert isinstance(made, LearnedOptimizer) and made.mlp.hidden_size == 4


@pytest.mark.parametrize(
    "lopt, adamw_args",
    [(WITH_MLP, (0.02, 0.8, 0.99, 1e-6, 0.01)), (NO_MLP, (0.02, 0.9, 0.999, 1e-8, 0.01))],
    ids=["mlp", "no-mlp"],
)
def test_initial_theta_is_exactly_adamw(lopt, adamw_args):
    """Zero offsets, zero schedule and a zero last MLP layer give AdamW with the initial values."""
    params, grads = params_and_grads()
    got = run_lopt(lopt, lopt.init(KEY), params, grads)
    assert_trees_close(got.params, run_adamw(*adamw_args, params, grads))
    assert int(got.iteration) == 4


def test_state_keeps_parameter_dtypes():
    """bfloat16 parameters stay bfloat16 (a promoted leaf would break lax.scan carries)."""
    params, grads = params_and_grads(2, bfloat16=True)
    state = run_lopt(WITH_MLP, WITH_MLP.init(KEY), params, grads)
    for name, p in params.items():
        for tree in (state.params, state.m, state.v):
            assert tree[name].dtype == p.dtype, name
    assert not np.allclose(np.float32(state.params["t"]), np.float32(params["t"]))


def test_theta_layout():
    theta = NO_MLP.init(KEY)
    assert set(theta) == {"hparams", "schedule"}
    assert theta["hparams"].shape == (len(HPARAMS),)
    assert theta["schedule"].shape == (len(SCHEDULE_TIME_SCALES),)
    custom = ResidualAdamLOpt(use_mlp=False, schedule_time_scales=(10, 100))
    assert custom.init(KEY)["schedule"].shape == (2,)
    theta = WITH_MLP.init(KEY)
    layers = theta["mlp"]["params"]
    assert layers["Dense_0"]["kernel"].shape == (5, 4)
    np.testing.assert_array_equal(layers["Dense_1"]["kernel"], 0.0)  # the last layer starts at 0
    assert np.abs(layers["Dense_0"]["kernel"]).sum() > 0  # the others do not


def test_hyper_parameters_are_offsets_times_hparam_mult():
    lopt = NO_MLP
    theta = lopt.init(KEY)
    h0 = lopt.hyper_parameters(theta)
    np.testing.assert_allclose(h0["lr"], 0.02, rtol=1e-6)
    np.testing.assert_allclose(h0["beta1"], 0.9, rtol=1e-6)
    np.testing.assert_allclose(h0["weight_decay"], 0.01, rtol=1e-5)
    # +log(2)/hparam_mult on log_lr doubles the learning rate, and the step.
    bumped = dict(theta, hparams=theta["hparams"].at[0].set(math.log(2.0) / lopt.hparam_mult))
    np.testing.assert_allclose(lopt.hyper_parameters(bumped)["lr"], 0.04, rtol=1e-5)
    zero_wd = ResidualAdamLOpt(initial_lr=0.02, initial_weight_decay=1e-30, use_mlp=False)
    params, grads = params_and_grads(1)
    base = run_lopt(zero_wd, theta, params, grads).params
    doubled = run_lopt(zero_wd, bumped, params, grads).params
    for name in ("b", "w"):
        np.testing.assert_allclose(
            doubled[name] - params[name], 2 * (base[name] - params[name]), rtol=1e-4, atol=1e-7
        )


def schedule_theta(lopt, weights: dict[float, float]):
    """Theta whose schedule puts ``weights[s] / hparam_mult`` on the time scale ``s``."""
    w = np.zeros(len(lopt.schedule_time_scales), np.float32)
    for scale, weight in weights.items():
        w[lopt.schedule_time_scales.index(scale)] = weight / lopt.hparam_mult
    return dict(lopt.init(KEY), schedule=jnp.asarray(w))


def test_schedule_multiplies_the_learning_rate_by_a_function_of_the_step():
    lopt = NO_MLP
    lrs = np.asarray(lopt.learning_rates(schedule_theta(lopt, {100: -0.5}), 401))
    assert lrs[0] == pytest.approx(0.02, rel=1e-6)  # tanh(0) = 0: no change at step 0
    assert np.all(np.diff(lrs) < 0)  # decays monotonically...
    expected = 0.02 * np.exp(5.0 * np.tanh(-0.5 * np.tanh(1.0) / 5.0))
    assert lrs[100] == pytest.approx(expected, rel=1e-5)  # ...as exp(soft-bounded sum)
    # A wild schedule stays within exp(+-5) of the base rate.
    wild = dict(lopt.init(KEY), schedule=jnp.full(len(SCHEDULE_TIME_SCALES), 1e3))
    assert np.all(np.asarray(lopt.learning_rates(wild, 50)) <= 0.02 * math.exp(5.0) * 1.00001)


def test_learning_rate_never_rises_after_warmup():
    lopt = NO_MLP  # warmup_steps=30
    # Rises with scale 10 (a warm-up), then keeps rising with scale 300: capped at step 30.
    rising = np.asarray(lopt.learning_rates(schedule_theta(lopt, {10: 1.0, 300: 1.0}), 400))
    assert np.all(np.diff(rising[:31]) > 0)
    np.testing.assert_allclose(rising[30:], rising[30], rtol=1e-6)
    # Falls (scale 30), then would rise again (scale 300): it stays at its minimum instead.
    dip = schedule_theta(lopt, {30: -2.0, 300: 3.0})
    raw = np.asarray(
        lopt.hyper_parameters(dip)["lr"] * jnp.exp(lopt.schedule_log_mult(dip, jnp.arange(400)))
    )
    lrs = np.asarray(lopt.learning_rates(dip, 400))
    assert raw[399] > raw[100] * 1.5  # the unconstrained schedule rises again...
    assert np.all(np.diff(lrs[30:]) <= 0)  # ...the one used does not
    np.testing.assert_allclose(lrs[30:], np.minimum.accumulate(raw[30:]), rtol=1e-6)


def test_update_uses_the_scheduled_learning_rate():
    """With a constant gradient Adam's direction is 1, so each step moves by lr(t)."""
    lopt = ResidualAdamLOpt(
        initial_lr=0.01, initial_weight_decay=1e-30, use_mlp=False, warmup_steps=5
    )
    theta = schedule_theta(lopt, {3: 1.0, 30: -1.0, 300: 2.0})
    params = {"w": jnp.zeros((2,))}
    grads = {"w": jnp.ones((40, 2))}
    state = run_lopt(lopt, theta, params, grads)
    lrs = np.asarray(lopt.learning_rates(theta, 40))
    np.testing.assert_allclose(-state.params["w"], lrs.sum(), rtol=1e-4)
    np.testing.assert_allclose(np.exp(state.log_mult) * 0.01, lrs[-1], rtol=1e-5)


def test_mlp_outputs_rescale_adam_and_add_a_residual():
    """Last-layer biases (a, d): step = lr * (u * exp(soft(a)) + soft(residual_mult * d))."""
    lopt = WITH_MLP
    theta = lopt.init(KEY)
    params, grads = params_and_grads(1)
    adam = run_lopt(lopt, theta, params, grads).params  # at init: AdamW
    last = theta["mlp"]["params"]["Dense_1"]
    for a, d in ((math.log(2.0), 0.0), (0.0, 0.5)):
        changed = dict(last, bias=jnp.asarray([a, d], jnp.float32))
        th = {**theta, "mlp": {"params": {**theta["mlp"]["params"], "Dense_1": changed}}}
        new = run_lopt(lopt, th, params, grads).params
        scale = 3.0 * math.tanh(a / 3.0)
        for name in ("b", "w"):
            p = params[name]
            adam_step = p - adam[name] - 0.02 * 0.01 * p  # lr * u, weight decay removed
            residual = 3.0 * math.tanh(lopt.residual_mult * d / 3.0)
            want = p - math.exp(scale) * adam_step - 0.02 * residual
            want = want - 0.02 * 0.01 * p
            np.testing.assert_allclose(new[name], want, rtol=1e-4, atol=1e-6)


def test_update_is_invariant_to_the_gradient_scale():
    """Adam's direction and the MLP's (normalized, or scale-free) inputs ignore the scale."""
    lopt = ResidualAdamLOpt(initial_lr=0.01, initial_epsilon=1e-12, hidden_size=4)
    theta = lopt.init(KEY)
    last = theta["mlp"]["params"]["Dense_1"]
    theta["mlp"]["params"]["Dense_1"] = dict(last, kernel=jnp.full(last["kernel"].shape, 0.3))
    params, grads = params_and_grads()
    scaled = lambda c: tree_map(lambda g: c * g, grads)
    a = run_lopt(lopt, theta, params, scaled(1.0)).params
    b = run_lopt(lopt, theta, params, scaled(1e3)).params
    assert_trees_close(a, b, rtol=1e-4, atol=1e-6)
    # ...while the MLP does change the step (it is not the initial AdamW).
    adam = run_lopt(lopt, lopt.init(KEY), params, grads).params
    assert not np.allclose(a["w"], adam["w"])


def test_wild_theta_gives_finite_parameters():
    lopt = WITH_MLP
    theta = tree_map(lambda t: t + 50.0, lopt.init(KEY))
    theta["hparams"] = jnp.asarray([0.0, 50.0, -50.0, -50.0, -50.0])  # betas pushed to 0 and 1
    params, grads = params_and_grads()
    state = run_lopt(lopt, theta, params, grads)
    for leaf in jax.tree_util.tree_leaves(state.params):
        assert np.isfinite(np.float32(leaf)).all()


def test_vmap_over_theta_matches_one_at_a_time():
    lopt = WITH_MLP
    theta = lopt.init(KEY)
    thetas = jax.vmap(lambda c: tree_map(lambda t: t + c, theta))(jnp.asarray([0.0, 0.05]))
    params, grads = params_and_grads(2)
    batched = jax.vmap(lambda th: run_lopt(lopt, th, params, grads).params)(thetas)
    for i in range(2):
        one = run_lopt(lopt, tree_map(lambda t, i=i: t[i], thetas), params, grads).params
        assert_trees_close(tree_map(lambda x, i=i: x[i], batched), one, rtol=1e-4, atol=1e-5)
    assert not np.allclose(batched["w"][0], batched["w"][1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"initial_lr": 0.0}, "initial_lr"),
        ({"initial_epsilon": -1.0}, "initial_epsilon"),
        ({"initial_weight_decay": float("nan")}, "initial_weight_decay"),
        ({"initial_beta1": 1.0}, "initial_beta1"),
        ({"initial_beta2": -0.1}, "initial_beta2"),
        ({"hparam_mult": 0.0}, "hparam_mult"),
        ({"residual_mult": -1.0}, "residual_mult"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"schedule_time_scales": ()}, "schedule_time_scales"),
        ({"schedule_time_scales": (10, -1)}, "schedule_time_scales"),
        ({"warmup_steps": -1}, "warmup_steps"),
    ],
)
def test_bad_arguments_raise_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResidualAdamLOpt(**kwargs)


def test_defaults_are_pytorch_adamw():
    lopt = ResidualAdamLOpt()
    h = {k: float(v) for k, v in lopt.hyper_parameters(lopt.init(KEY)).items()}
    want = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 1e-2}
    assert h == pytest.approx(want, rel=1e-5)


def test_the_elementwise_mlp_equals_flax_apply_on_the_same_features():
    """The update runs the MLP elementwise per tensor; it must match PerElementMLP.apply on
    [p, g, m, sqrt(v)] normalized per tensor plus the bounded u, up to float rounding."""
    from lopt_plugins.learned_optimizers.features import second_moment_normalize
    from lopt_plugins.learned_optimizers.residual_adam import soft_bound

    lopt = ResidualAdamLOpt(residual_mult=0.5)
    theta = lopt.init(jax.random.PRNGKey(0))
    # A trained-looking theta: every weight nonzero, so both outputs matter.
    theta = jax.tree_util.tree_map(
        lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(1), x.shape), theta
    )
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.array([0.5, -0.5])}
    grad = {"w": jnp.cos(jnp.arange(12.0)).reshape(3, 4), "b": jnp.array([0.3, -1.2])}
    opt = lopt.opt_fn(theta)
    state = opt.update(opt.init(params), grad)

    h = lopt.hyper_parameters(theta)
    lr = h["lr"] * jnp.exp(lopt.next_log_mult(theta, jnp.int32(0), jnp.float32(0.0)))
    for name, p in params.items():
        g = grad[name]
        m, v = (1 - h["beta1"]) * g, (1 - h["beta2"]) * g**2
        sqrt_v = jnp.sqrt(v / (1 - h["beta2"]))
        u = (m / (1 - h["beta1"])) / (sqrt_v + h["epsilon"])
        features = jnp.concatenate(
            [
                second_moment_normalize(jnp.stack([p, g, m, sqrt_v], -1)),
                soft_bound(u, 3.0)[..., None],
            ],
            axis=-1,
        )
        out = lopt.mlp.apply(theta["mlp"], features)
        d = u * jnp.exp(soft_bound(out[..., 0], 3.0)) + soft_bound(0.5 * out[..., 1], 3.0)
        expected = p - lr * (d + h["weight_decay"] * p)
        np.testing.assert_allclose(state.params[name], expected, rtol=2e-5, atol=1e-7)
