"""Tests for the built-in learned optimizers (lopt_plugins.learned_optimizers)."""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt_plugins.learned_optimizers as lo_plugins
from helpers import FAST_COMPILE, fast_jit, grads_sequence, small_params, toy_params_and_grads
from lopt_core import SGD, SGDM, Adam
from lopt_core.learned import LearnedOptimizer, to_optax
from lopt_plugins.learned_optimizers import (
    AdafacMLPLOpt,
    LearnableAdam,
    LearnableSGD,
    LearnableSGDM,
    MLPLOpt,
)
from lopt_plugins.learned_optimizers.adafac_mlp_lopt import (
    _factored_second_moment,
    _init_factored,
    _update_factored,
)
from lopt_plugins.learned_optimizers.features import TIME_SCALES

KEY = jax.random.PRNGKey(0)
tree_map = jax.tree_util.tree_map


def scalar_and_tensor(key):
    """A scalar and a bfloat16 3-D tensor: every rank a model has, and a narrow dtype."""
    # Small values, so that bfloat16 resolves steps of ~1e-3.
    t = (0.01 * jax.random.normal(key, (2, 3, 4))).astype(jnp.bfloat16)
    return {"s": jnp.asarray(0.3), "t": t}


def params_and_grads(n: int = 3, ranks: bool = False):
    """A vector and a matrix (plus a scalar and a bfloat16 3-D tensor if ``ranks``), and grads."""
    return toy_params_and_grads(n, scalar_and_tensor if ranks else None)


def stack(trees):
    return tree_map(lambda *xs: jnp.stack(xs), *trees)


@functools.partial(jax.jit, static_argnames=("opt", "with_loss"), compiler_options=FAST_COMPILE)
def run(opt, params, grads, with_loss: bool = True):
    """``opt``'s state after one update per gradient, in one jitted scan (compiled once each)."""
    grads = stack(grads)
    num_steps = len(jax.tree_util.tree_leaves(grads)[0])
    state = opt.init(params, num_steps=num_steps)

    def step(state, xs):
        i, g = xs
        if with_loss:
            return opt.update(state, g, loss=1.0 + i.astype(jnp.float32)), None
        return opt.update(state, g), None

    state, _ = jax.lax.scan(step, state, (jnp.arange(num_steps), grads))
    return state


@functools.partial(
    jax.jit, static_argnames=("lopt", "with_loss", "is_training"), compiler_options=FAST_COMPILE
)
def run_lopt(lopt, theta, params, grads, with_loss: bool = True, is_training: bool = False):
    """Like ``run`` for ``lopt.opt_fn(theta)``; theta is traced, so one compile serves all."""
    opt = lopt.opt_fn(theta, is_training=is_training)
    return run.__wrapped__(opt, params, grads, with_loss)


def lopt_params(lopt, theta, params, grads, **kw):
    return run_lopt(lopt, theta, params, grads, **kw).params


def assert_trees_close(a, b, rtol=1e-5, atol=1e-7):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


ALL = [
    LearnableSGD(),
    LearnableSGDM(),
    LearnableAdam(),
    MLPLOpt(),
    AdafacMLPLOpt(),
]
IDS = [type(lopt).__name__ for lopt in ALL]


# The protocol, jit and vmap ---------------------------------------------------------------


@pytest.mark.parametrize("lopt", ALL, ids=IDS)
def test_update_runs_jitted_without_loss_keeps_shapes_and_dtypes(lopt):
    assert isinstance(lopt, LearnedOptimizer)
    theta = lopt.init(KEY)
    opt = lopt.opt_fn(theta)
    # The loss is an optional keyword, never a required positional.
    assert inspect.signature(opt.update).parameters["loss"].default is None
    # Every rank a model has (scalars, vectors, matrices, 3-D tensors) and a bfloat16
    # tensor: the jitted lax.scan in run() fails if a state leaf changes dtype.
    params, grads = params_and_grads(ranks=True)
    state = run_lopt(lopt, theta, params, grads, with_loss=False)
    new_params = opt.get_params(state)
    for name, p in params.items():
        assert new_params[name].shape == p.shape and new_params[name].dtype == p.dtype
        assert np.isfinite(np.asarray(new_params[name], np.float32)).all()
        assert not np.allclose(new_params[name].astype(np.float32), p.astype(np.float32)), name
    assert opt.get_state(state) is None
    for leaf, initial in zip(
        jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(opt.init(params)), strict=True
    ):
        assert leaf.dtype == initial.dtype


@pytest.mark.parametrize("lopt", ALL, ids=IDS)
def test_vmap_over_theta_matches_a_loop(lopt):
    """Estimators vmap the optimizer over perturbed copies of theta."""
    theta = lopt.init(KEY)
    scales = jnp.asarray([0.9, 1.0, 1.2])
    thetas = jax.vmap(lambda c: tree_map(lambda t: t * c, theta))(scales)
    params, grads = params_and_grads()
    batched = jax.vmap(lambda th: lopt_params(lopt, th, params, grads))(thetas)
    for i in range(len(scales)):
        one = lopt_params(lopt, tree_map(lambda t, i=i: t[i], thetas), params, grads)
        assert_trees_close(tree_map(lambda x, i=i: x[i], batched), one, rtol=1e-4, atol=1e-6)
    # The copies really differ (theta is not ignored).
    assert not np.allclose(batched["w"][0], batched["w"][2])


@pytest.mark.parametrize("lopt", ALL, ids=IDS)
def test_theta_is_a_pytree_of_float_arrays_and_init_is_deterministic(lopt):
    theta = lopt.init(KEY)
    leaves = jax.tree_util.tree_leaves(theta)
    assert leaves and all(jnp.issubdtype(x.dtype, jnp.floating) for x in leaves)
    assert_trees_close(theta, lopt.init(KEY), rtol=0, atol=0)


# Learned hyper-parameters ----------------------------------------------------------------


def test_hyper_parameters_live_in_log_space():
    theta = LearnableAdam(2e-3, 0.8, 0.99, 1e-6).init(KEY)
    np.testing.assert_allclose(theta["log_lr"], np.log(2e-3), rtol=1e-6)
    np.testing.assert_allclose(theta["log_one_minus_beta1"], np.log(0.2), rtol=1e-6)
    np.testing.assert_allclose(theta["log_one_minus_beta2"], np.log(0.01), rtol=1e-6)
    np.testing.assert_allclose(theta["log_epsilon"], np.log(1e-6), rtol=1e-6)
    theta = LearnableSGDM(0.5, 0.75).init(KEY)
    np.testing.assert_allclose(theta["log_lr"], np.log(0.5), rtol=1e-6)
    np.testing.assert_allclose(theta["log_one_minus_momentum"], np.log(0.25), rtol=1e-6)
    # Every theta is a valid optimizer: adding log(2) to log_lr doubles an SGD step.
    lopt = LearnableSGD(0.1)
    params, grads = params_and_grads()
    theta = lopt.init(KEY)
    doubled = {"log_lr": theta["log_lr"] + jnp.log(2.0)}
    step = lambda th: tree_map(jnp.subtract, lopt_params(lopt, th, params, grads), params)
    assert_trees_close(step(doubled), tree_map(lambda s: 2 * s, step(theta)))


@pytest.mark.parametrize(
    "lopt, reference",
    [
        (LearnableSGD(0.05), SGD(0.05)),
        (LearnableSGDM(0.05, 0.8), SGDM(0.05, momentum=0.8)),
        (LearnableAdam(), Adam()),
        (LearnableAdam(0.03, 0.7, 0.95, 1e-5), Adam(0.03, beta1=0.7, beta2=0.95, epsilon=1e-5)),
    ],
    ids=["sgd", "sgdm", "adam-default", "adam-custom"],
)
def test_initial_theta_matches_the_hand_designed_optimizer(lopt, reference):
    params, grads = params_and_grads()
    assert_trees_close(
        lopt_params(lopt, lopt.init(KEY), params, grads),
        reference.get_params(run(reference, params, grads)),
        rtol=2e-5,
        atol=1e-7,
    )


# MLP learned optimizers -------------------------------------------------------------------


def constant_output_theta(lopt, direction: float, magnitude: float):
    """Theta whose MLP outputs ``(direction, magnitude)`` for every input: all weights zero."""
    theta = tree_map(jnp.zeros_like, lopt.init(KEY))
    layers = theta["params"]
    last = sorted(layers, key=lambda name: int(name.split("_")[-1]))[-1]
    layers[last]["bias"] = jnp.asarray([direction, magnitude], jnp.float32)
    return theta


@pytest.mark.parametrize("lopt", ALL[3:], ids=IDS[3:])
def test_mlp_update_is_direction_times_exp_magnitude(lopt):
    # update = direction * exp(magnitude * 1e-3) * 1e-3, subtracted from every element.
    theta = constant_output_theta(lopt, direction=2.0, magnitude=500.0)
    params, grads = params_and_grads()
    new = lopt_params(lopt, theta, params, grads)
    expected_step = len(grads) * 2.0 * np.exp(500.0 * 1e-3) * 1e-3
    for name, p in params.items():
        np.testing.assert_allclose(p - new[name], expected_step, rtol=1e-5)


@pytest.mark.parametrize(
    "lopt, num_features",
    [
        (MLPLOpt(hidden_size=4, momentum_decays=(0.5, 0.9, 0.99)), 2 + 3 + len(TIME_SCALES)),
        (AdafacMLPLOpt(momentum_decays=(0.9, 0.99), adafactor_decays=(0.9,)), None),
    ],
    ids=["MLPLOpt", "AdafacMLPLOpt"],
)
def test_mlp_input_width(lopt, num_features):
    theta = lopt.init(KEY)
    first = theta["params"]["Dense_0"]["kernel"]
    assert first.shape[0] == lopt.num_features
    if num_features is not None:  # gradient, parameter, momenta, tanh time features
        assert lopt.num_features == num_features


@pytest.mark.parametrize("lopt", ALL[3:], ids=IDS[3:])
def test_mlp_step_is_about_1e_3_at_init(lopt):
    params, grads = params_and_grads()
    new = lopt_params(lopt, lopt.init(KEY), params, grads)
    per_step = np.concatenate([np.ravel(np.abs(new[k] - params[k])) for k in params]) / len(grads)
    assert 1e-5 < np.median(per_step) < 1e-2, np.median(per_step)
    assert per_step.max() < 1e-2


def test_mlp_lopt_features_are_normalized_per_tensor():
    """Scaling a tensor's gradient (so its momenta too) leaves its update unchanged."""
    # Scales large enough that the normalizer's epsilon (1e-5) is negligible for every
    # momentum: after 3 steps (1 - 0.9999) * 1000 * g still has a second moment of ~0.1.
    lopt = ALL[3]
    theta = lopt.init(jax.random.PRNGKey(5))
    params, grads = params_and_grads()
    scaled = lambda c: [tree_map(lambda g: c * g, g) for g in grads]
    a = lopt_params(lopt, theta, params, scaled(1e3))
    b = lopt_params(lopt, theta, params, scaled(1e6))
    assert_trees_close(a, b, rtol=1e-4, atol=1e-7)
    # ...while a different gradient direction gives a different update.
    c = lopt_params(lopt, theta, params, scaled(-1e3))
    assert not np.allclose(a["w"], c["w"])


def test_mlp_lopt_uses_time_features():
    lopt = MLPLOpt(hidden_size=8)
    opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(2)))
    params, (g,) = params_and_grads(1)
    state = opt.init(params)
    update = jax.jit(opt.update, compiler_options=FAST_COMPILE)
    early = update(state, g)
    late = update(state.replace(iteration=jnp.asarray(5000, jnp.int32)), g)
    assert int(early.iteration) == 1
    assert not np.allclose(early.params["w"], late.params["w"])


def test_adafac_state_is_factored_for_matrices_and_full_for_vectors():
    lopt = AdafacMLPLOpt(adafactor_decays=(0.9, 0.99))
    params, grads = params_and_grads(1, ranks=True)
    state = jax.eval_shape(lambda: lopt.opt_fn(lopt.init(KEY)).init(params))
    f = state.factored
    assert f["w"].row.shape == (3, 2) and f["w"].col.shape == (2, 2) and f["w"].full is None
    assert f["t"].row.shape == (2, 3, 2) and f["t"].col.shape == (2, 4, 2)
    assert f["b"].full.shape == (3, 2) and f["b"].row is None
    assert f["s"].full.shape == (2,)


@pytest.mark.parametrize("shape", [(4, 5), (2, 4, 5)])
def test_adafactor_moments_recover_a_rank_one_second_moment(shape):
    decays = np.asarray([0.9, 0.5], np.float32)
    rng = np.random.default_rng(0)
    rows = rng.uniform(0.5, 2.0, shape[:-1]).astype(np.float32)
    cols = rng.uniform(0.5, 2.0, shape[-1:]).astype(np.float32)
    g = np.sqrt(rows[..., None] * cols)  # g**2 is rank one in the last two axes
    v = jax.jit(
        lambda g: _factored_second_moment(_update_factored(decays, _init_factored(g, 2), g)),
        compiler_options=FAST_COMPILE,
    )(g)
    assert v.shape == shape + (2,)
    expected = (1 - decays) * np.square(g)[..., None]
    np.testing.assert_allclose(v, expected, rtol=1e-5)


@pytest.mark.parametrize("lopt", [MLPLOpt(hidden_size=8), AdafacMLPLOpt()], ids=["mlp", "adafac"])
def test_mlp_learned_optimizers_export_finite_small_updates(lopt):
    tx = to_optax(lopt, lopt.init(KEY), num_steps=3)
    # A bfloat16 tensor too: its updates (and the state the loop carries) stay bfloat16.
    t = jnp.full((2, 2, 3), 0.01, jnp.bfloat16)
    params = {"s": jnp.asarray(0.5), **small_params(), "t": t}
    grads = grads_sequence(params, 3)

    @fast_jit
    def three_steps(params, grads):
        state = tx.init(params)
        all_updates = []
        for i, g in enumerate(grads):
            # Mix calls with and without the loss: both are legal.
            kwargs = {"loss": jnp.asarray(1.0)} if i % 2 else {}
            updates, state = tx.update(g, state, params, **kwargs)
            params = optax.apply_updates(params, updates)
            all_updates.append(updates)
        return all_updates

    for updates in three_steps(params, grads):
        for name, u in updates.items():
            assert u.dtype == params[name].dtype
            u = np.asarray(u, np.float32)
            assert u.shape == np.shape(params[name])
            assert np.isfinite(u).all() and 0 < np.abs(u).max() < 1e-2, (name, u)


# Argument checks and registration ---------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LearnableSGD(initial_lr=0.0), "initial_lr"),
        (lambda: LearnableSGD(initial_lr=float("nan")), "initial_lr"),
        (lambda: LearnableSGDM(initial_momentum=1.0), "initial_momentum"),
        (lambda: LearnableSGDM(initial_lr=-1.0), "initial_lr"),
        (lambda: LearnableAdam(initial_beta1=-0.1), "initial_beta1"),
        (lambda: LearnableAdam(initial_beta2=1.5), "initial_beta2"),
        (lambda: LearnableAdam(initial_epsilon=0.0), "initial_epsilon"),
        (lambda: MLPLOpt(hidden_size=0), "hidden_size"),
        (lambda: MLPLOpt(hidden_layers=-1), "hidden_layers"),
        (lambda: MLPLOpt(momentum_decays=()), "decays"),
        (lambda: MLPLOpt(momentum_decays=(0.9, 1.0)), "decays"),
        (lambda: AdafacMLPLOpt(rms_decay=1.0), "decays"),
        (lambda: AdafacMLPLOpt(adafactor_decays=(-0.5,)), "decays"),
    ],
)
def test_bad_constructor_arguments_raise_clearly(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_plugin_registers_every_learned_optimizer():
    registered = {}

    class Recorder:
        def register(self, kind, name, factory):
            registered[(kind, name)] = factory

    lo_plugins.lopt_register(registry=Recorder())
    for cls in (LearnableSGD, LearnableSGDM, LearnableAdam, MLPLOpt, AdafacMLPLOpt):
        assert registered[("learned_optimizer", cls.__name__)] is cls
    # Whatever else the plugin registers is a learned optimizer under its class name.
    for (kind, name), factory in registered.items():
        assert kind == "learned_optimizer" and name == factory.__name__
        assert issubclass(factory, LearnedOptimizer)
