"""Tests for ``lopt_core.learned.to_optax``: a learned optimizer as an optax transformation.

(The built-in MLP learned optimizers' export: tests/plugins/test_learned_optimizers.py.)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from helpers import fast_jit, grads_sequence, small_params
from lopt_core.learned import LearnedOptimizer, to_optax
from lopt_core.optimizers import Optimizer
from toys import ToyLearnableAdam

KEY = jax.random.PRNGKey(0)
tree_map = jax.tree_util.tree_map


@struct.dataclass
class _LossScaledState:
    params: object
    model_state: object
    iteration: jax.Array


class LossScaledSGD(LearnedOptimizer):
    """A toy learned optimizer whose step is ``lr * loss * grad``: it needs the loss."""

    def init(self, key):
        return {"lr": jnp.asarray(0.1)}

    def opt_fn(self, theta, is_training=False):
        lr = theta["lr"]

        class _Opt(Optimizer):
            def init(self, params, model_state=None, num_steps=None, key=None):
                return _LossScaledState(params, model_state, jnp.zeros((), jnp.int32))

            def update(self, opt_state, grad, loss=None, model_state=None, key=None):
                params = tree_map(lambda p, g: p - lr * loss * g, opt_state.params, grad)
                return _LossScaledState(params, model_state, opt_state.iteration + 1)

        return _Opt()


def test_returns_an_extra_args_transformation():
    lopt = ToyLearnableAdam()
    tx = to_optax(lopt, lopt.init(KEY), num_steps=10)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)


def test_matches_the_learned_optimizer_step_by_step():
    lopt = ToyLearnableAdam(initial_lr=0.05, initial_beta1=0.8)
    theta = lopt.init(KEY)
    params = small_params()
    grads = grads_sequence(params, 4)
    tx = to_optax(lopt, theta, num_steps=4)
    opt = lopt.opt_fn(theta)

    @fast_jit
    def both(params, grads):
        tx_state, opt_state, tx_params = tx.init(params), opt.init(params, num_steps=4), params
        for i, g in enumerate(grads):
            loss = jnp.asarray(1.0 + i)
            updates, tx_state = tx.update(g, tx_state, tx_params, loss=loss)
            tx_params = optax.apply_updates(tx_params, updates)
            opt_state = opt.update(opt_state, g, loss=loss)
        return tx_params, opt.get_params(opt_state)

    via_optax, direct = both(params, grads)
    for name in params:
        np.testing.assert_allclose(via_optax[name], direct[name], rtol=1e-5, atol=1e-7)
        assert not np.allclose(via_optax[name], params[name])


def test_loss_is_an_optional_extra_argument():
    lopt = LossScaledSGD()
    tx = to_optax(lopt, lopt.init(KEY))
    params = small_params()
    (g,) = grads_sequence(params, 1)
    state = tx.init(params)
    with_loss, _ = tx.update(g, state, params, loss=jnp.asarray(3.0))
    as_value, _ = tx.update(g, state, params, value=jnp.asarray(3.0))  # optax's own name
    without, _ = tx.update(g, state, params)
    for name in params:
        np.testing.assert_allclose(with_loss[name], -0.1 * 3.0 * g[name], rtol=1e-6)
        np.testing.assert_allclose(as_value[name], with_loss[name])
        # Without the loss, what depends on it sees zero.
        np.testing.assert_array_equal(without[name], np.zeros_like(g[name]))


def test_update_follows_the_callers_params():
    """optax owns the params: updates are computed from the params passed in, not a stale copy."""
    lopt = LossScaledSGD()
    tx = to_optax(lopt, {"lr": jnp.asarray(1.0)})
    params = small_params()
    state = tx.init(params)
    (g,) = grads_sequence(params, 1)
    moved = tree_map(lambda p: p + 100.0, params)
    updates, state = tx.update(g, state, moved, loss=jnp.asarray(1.0))
    new = optax.apply_updates(moved, updates)
    for name in params:
        np.testing.assert_allclose(new[name], moved[name] - g[name], rtol=1e-6)


def test_works_inside_optax_chain_with_extra_args():
    lopt = ToyLearnableAdam(initial_lr=0.1)
    tx = optax.chain(optax.clip_by_global_norm(1e-3), to_optax(lopt, lopt.init(KEY)))
    params = small_params()
    (g,) = grads_sequence(params, 1)
    updates, _ = fast_jit(lambda g, s, p: tx.update(g, s, p, loss=jnp.asarray(2.0)))(
        g, tx.init(params), params
    )
    # Adam's first step is lr * sign(g) whatever the (clipped) gradient's scale.
    for name in params:
        np.testing.assert_allclose(updates[name], -0.1 * np.sign(g[name]), rtol=1e-3)


def test_errors_are_clear():
    with pytest.raises(TypeError, match="LearnedOptimizer"):
        to_optax(optax.adam(1e-3), {})
    lopt = ToyLearnableAdam()
    tx = to_optax(lopt, lopt.init(KEY))
    params = small_params()
    with pytest.raises(ValueError, match="params"):
        tx.update(params, tx.init(params))


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.tanh(nn.Dense(16)(x)))[..., 0]


def test_trains_a_flax_model_in_a_plain_optax_loop():
    kx, kw, kinit = jax.random.split(jax.random.PRNGKey(3), 3)
    x = jax.random.normal(kx, (64, 4))
    y = jnp.sin(x @ jax.random.normal(kw, (4,)))
    model = MLP()
    params = model.init(kinit, x)
    lopt = ToyLearnableAdam(initial_lr=1e-2)
    num_steps = 150
    tx = to_optax(lopt, lopt.init(KEY), num_steps=num_steps)

    def loss_fn(params):
        return jnp.mean(jnp.square(model.apply(params, x) - y))

    @fast_jit
    def train(params):
        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params, loss=loss)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, num_steps)
        return params, losses

    trained, losses = train(params)
    assert np.isfinite(np.asarray(losses)).all()
    assert float(loss_fn(trained)) < 0.3 * float(losses[0]), (float(losses[0]), losses[-5:])
