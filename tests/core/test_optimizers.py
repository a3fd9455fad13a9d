"""Tests for lopt_core.optimizers: the protocol, hand-designed optimizers and the optax adapter."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt_core import SGD, SGDM, Adam, AdamW, OptaxOptimizer, OptaxState, Optimizer, RMSProp

KEY = jax.random.PRNGKey(0)


def small_params():
    k1, k2 = jax.random.split(KEY)
    return {"w": jax.random.normal(k1, (2, 3)), "b": jax.random.normal(k2, (3,))}


def grads_sequence(n: int):
    """n different gradient pytrees shaped like small_params()."""
    keys = jax.random.split(jax.random.PRNGKey(1), n)
    return [
        {"w": jax.random.normal(k, (2, 3)), "b": jax.random.normal(jax.random.fold_in(k, 1), (3,))}
        for k in keys
    ]


def run_lopt(opt: Optimizer, params, grads):
    state = opt.init(params)
    for g in grads:
        state = opt.update(state, g, loss=jnp.asarray(1.0))
    return opt.get_params(state)


def run_optax(tx: optax.GradientTransformation, params, grads):
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def assert_trees_close(a, b, rtol=1e-6, atol=1e-7):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# Numerics against optax -------------------------------------------------------------------

MATCHES = [
    (Adam(0.01), optax.adam(0.01)),
    (Adam(0.05, beta1=0.8, beta2=0.99, epsilon=1e-6), optax.adam(0.05, b1=0.8, b2=0.99, eps=1e-6)),
    (SGDM(0.1, momentum=0.5), optax.sgd(0.1, momentum=0.5)),
    (RMSProp(0.01, decay=0.8, epsilon=1e-6), optax.rmsprop(0.01, decay=0.8, eps=1e-6)),
    (AdamW(0.01, weight_decay=0.1), optax.adamw(0.01, weight_decay=0.1)),
    (SGD(0.1), optax.sgd(0.1)),
]


@pytest.mark.parametrize("opt, tx", MATCHES, ids=[repr(o) for o, _ in MATCHES])
def test_matches_optax_step_by_step(opt, tx):
    params = small_params()
    grads = grads_sequence(5)
    state = opt.init(params)
    optax_params, optax_state = params, tx.init(params)
    for g in grads:
        state = opt.update(state, g, loss=jnp.asarray(1.0))
        updates, optax_state = tx.update(g, optax_state, optax_params)
        optax_params = optax.apply_updates(optax_params, updates)
        assert_trees_close(opt.get_params(state), optax_params)
    # ...and the run actually moved the parameters.
    assert not np.allclose(opt.get_params(state)["w"], params["w"])


def test_sgd_one_step_is_exactly_p_minus_lr_g():
    params = small_params()
    (g,) = grads_sequence(1)
    new = SGD(0.1).get_params(SGD(0.1).update(SGD(0.1).init(params), g))
    for name in ("w", "b"):
        np.testing.assert_array_equal(
            np.asarray(new[name]), np.asarray(params[name]) - np.float32(0.1) * np.asarray(g[name])
        )


def test_adamw_differs_from_adam_only_by_weight_decay():
    params, grads = small_params(), grads_sequence(3)
    adam = run_lopt(Adam(0.01), params, grads)
    adamw_no_decay = run_lopt(AdamW(0.01, weight_decay=0.0), params, grads)
    adamw = run_lopt(AdamW(0.01, weight_decay=0.5), params, grads)
    assert_trees_close(adam, adamw_no_decay)
    assert not np.allclose(adam["w"], adamw["w"])


def test_defaults_match_the_documented_optax_defaults():
    params, grads = small_params(), grads_sequence(3)
    assert_trees_close(run_lopt(Adam(), params, grads), run_optax(optax.adam(1e-3), params, grads))
    assert_trees_close(
        run_lopt(SGDM(), params, grads), run_optax(optax.sgd(0.01, momentum=0.9), params, grads)
    )


# State: pytrees that jit and vmap ---------------------------------------------------------

ALL_OPTIMIZERS = [
    SGD(0.1),
    SGDM(0.1),
    Adam(0.01),
    RMSProp(0.01),
    AdamW(0.01),
    OptaxOptimizer(optax.chain(optax.clip(1.0), optax.sgd(0.1))),
]


@pytest.mark.parametrize("opt", ALL_OPTIMIZERS, ids=[o.name for o in ALL_OPTIMIZERS])
def test_state_jits_and_vmaps(opt):
    batch = 3
    params = jax.random.normal(KEY, (batch, 4))
    grads = jax.random.normal(jax.random.PRNGKey(2), (batch, 4))
    losses = jnp.arange(batch, dtype=jnp.float32)

    @jax.jit
    def init_and_two_steps(p, g, loss):
        state = opt.init(p)
        state = opt.update(state, g, loss=loss)
        return opt.update(state, g, loss=loss)

    vmapped = jax.vmap(init_and_two_steps)(params, grads, losses)
    assert isinstance(vmapped, OptaxState)
    assert opt.get_params(vmapped).shape == (batch, 4)
    np.testing.assert_array_equal(vmapped.iteration, [2, 2, 2])
    for i in range(batch):
        one = init_and_two_steps(params[i], grads[i], losses[i])
        np.testing.assert_allclose(opt.get_params(vmapped)[i], opt.get_params(one), rtol=1e-6)


def test_state_holds_params_model_state_and_iteration():
    opt = Adam(0.01)
    params = small_params()
    state = opt.init(params, model_state={"count": jnp.asarray(0)}, num_steps=10, key=KEY)
    assert opt.get_params(state) is params
    assert opt.get_state(state)["count"] == 0
    assert state.iteration == 0
    (g,) = grads_sequence(1)
    state = opt.update(state, g, model_state={"count": jnp.asarray(1)})
    assert opt.get_state(state)["count"] == 1  # update replaces the model state
    assert state.iteration == 1
    # The state is a pytree: its leaves are params, model state, optax state and iteration.
    leaves = jax.tree_util.tree_leaves(state)
    assert any(leaf is state.iteration for leaf in leaves)


# Identity: equal hyper-parameters mean equal optimizers (shared jit cache) ----------------


def test_equal_hyper_parameters_are_equal_and_hash_alike():
    assert Adam(0.01) == Adam(0.01)
    assert hash(Adam(0.01)) == hash(Adam(0.01))
    assert Adam(0.01) == Adam(learning_rate=0.01, beta1=0.9)
    assert SGD(1) == SGD(1.0) and hash(SGD(1)) == hash(SGD(1.0))
    assert len({Adam(0.01), Adam(0.01), Adam(0.02)}) == 2


def test_different_hyper_parameters_or_types_are_not_equal():
    assert Adam(0.01) != Adam(0.02)
    assert Adam(0.01) != Adam(0.01, beta2=0.99)
    assert Adam(0.01) != AdamW(0.01, weight_decay=0.0)  # same numbers, different class
    assert SGD(0.1) != SGDM(0.1, momentum=0.0)
    assert Adam(0.01) != "Adam(0.01)"


def test_optax_optimizers_compare_by_identity():
    tx = optax.sgd(0.1)
    a = OptaxOptimizer(tx)
    assert a == a
    assert a != OptaxOptimizer(tx)  # the adapter cannot know two transforms are equivalent


def test_names_and_reprs():
    assert Adam(0.01).name == "Adam"
    assert repr(Adam(0.01)) == "Adam(learning_rate=0.01, beta1=0.9, beta2=0.999, epsilon=1e-08)"
    assert repr(SGDM(0.1, 0.5)) == "SGDM(learning_rate=0.1, momentum=0.5)"
    assert OptaxOptimizer(optax.sgd(0.1)).name == "OptaxOptimizer"


# OptaxOptimizer and extra args ------------------------------------------------------------


def value_recorder() -> optax.GradientTransformationExtraArgs:
    """An ExtraArgs transform that stores the ``value`` it is given and passes updates on."""

    def init(params):
        return {"value": jnp.asarray(-1.0), "calls": jnp.asarray(0)}

    def update(updates, state, params=None, *, value=None, **extra_args):
        recorded = state["value"] if value is None else jnp.asarray(value, jnp.float32)
        return updates, {"value": recorded, "calls": state["calls"] + 1}

    return optax.GradientTransformationExtraArgs(init, update)


def test_extra_args_transform_receives_the_loss_as_value():
    opt = OptaxOptimizer(value_recorder())
    state = opt.init(jnp.zeros(2))
    state = opt.update(state, jnp.ones(2), loss=jnp.asarray(3.5))
    assert state.optax_state["value"] == 3.5
    state = opt.update(state, jnp.ones(2))  # no loss: nothing is passed
    assert state.optax_state["value"] == 3.5
    assert state.optax_state["calls"] == 2


def test_extra_args_reach_a_transform_inside_a_chain():
    opt = OptaxOptimizer(optax.chain(optax.sgd(0.1), value_recorder()))
    state = opt.update(opt.init(jnp.zeros(2)), jnp.ones(2), loss=jnp.asarray(7.0))
    assert state.optax_state[1]["value"] == 7.0
    np.testing.assert_allclose(opt.get_params(state), [-0.1, -0.1])


def test_reduce_on_plateau_sees_the_loss():
    opt = OptaxOptimizer(
        optax.chain(optax.sgd(0.1), optax.contrib.reduce_on_plateau(accumulation_size=1))
    )
    state = opt.update(opt.init(jnp.zeros(2)), jnp.ones(2), loss=jnp.asarray(2.5))
    assert state.optax_state[1].best_value == 2.5


def test_plain_transform_ignores_the_loss():
    tx = optax.scale(-0.5)  # a plain GradientTransformation: update takes no extra args
    assert not isinstance(tx, optax.GradientTransformationExtraArgs)
    opt = OptaxOptimizer(tx)
    state = opt.update(opt.init(jnp.ones(2)), jnp.ones(2), loss=jnp.asarray(1.0))
    np.testing.assert_allclose(opt.get_params(state), [0.5, 0.5])


def test_optax_adapter_matches_optax_with_a_schedule():
    schedule = optax.linear_schedule(0.1, 0.0, 4)
    params, grads = small_params(), grads_sequence(4)
    assert_trees_close(
        run_lopt(OptaxOptimizer(optax.adam(schedule)), params, grads),
        run_optax(optax.adam(schedule), params, grads),
    )


# Invalid inputs ---------------------------------------------------------------------------


def test_invalid_learning_rates_are_rejected_with_the_value():
    with pytest.raises(ValueError, match="SGD: learning_rate must be positive, got -0.1"):
        SGD(-0.1)
    with pytest.raises(ValueError, match="Adam: learning_rate must be positive, got 0"):
        Adam(0)
    with pytest.raises(TypeError, match="SGDM: momentum must be a number, got '0.9'"):
        SGDM(0.1, momentum="0.9")
    with pytest.raises(TypeError, match="RMSProp: learning_rate must be a number, got nan"):
        RMSProp(float("nan"))


def test_optax_adapter_rejects_non_transforms():
    with pytest.raises(TypeError, match="needs an optax GradientTransformation.*got function"):
        OptaxOptimizer(lambda g: g)


def test_base_optimizer_must_be_implemented():
    opt = Optimizer()
    assert opt.name == "Optimizer"
    assert repr(opt) == "<Optimizer Optimizer>"
    with pytest.raises(NotImplementedError, match=r"Optimizer must implement init"):
        opt.init(jnp.zeros(2))
    with pytest.raises(NotImplementedError, match=r"Optimizer must implement update"):
        opt.update(None, jnp.zeros(2))


def test_custom_optimizer_uses_default_getters():
    """A subclass storing params/model_state fields gets get_params/get_state for free."""
    from flax import struct

    @struct.dataclass
    class State:
        params: jax.Array
        model_state: jax.Array

    class HalfStep(Optimizer):
        def init(self, params, model_state=None, num_steps=None, key=None):
            return State(params, model_state)

        def update(self, opt_state, grad, loss=None, model_state=None, key=None):
            return State(opt_state.params - 0.5 * grad, model_state)

    opt = HalfStep()
    state = jax.jit(opt.update)(opt.init(jnp.ones(2), jnp.asarray(3)), jnp.ones(2), None, 4)
    np.testing.assert_allclose(opt.get_params(state), [0.5, 0.5])
    assert opt.get_state(state) == 4
