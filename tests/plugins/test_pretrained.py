"""The shipped pretrained optimizer: registered, one line to optax, bfloat16, TrainState, lopt."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt_core
from lopt_core.pretrained_optimizers import Pretrained, export_theta
from lopt_core.registry import get_registry

NAME = "residual_adam_mix_v1"  # the default


def _problem(dtype=jnp.float32):
    """A two-layer regression net as a nested dict of parameters, and its loss."""
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(keys[0], (64, 8))
    y = jnp.tanh(x @ jax.random.normal(keys[1], (8, 1)))
    params = {
        "layer1": {"w": 0.3 * jax.random.normal(keys[2], (8, 16)), "b": jnp.zeros(16)},
        "layer2": {"w": 0.3 * jax.random.normal(keys[3], (16, 1)), "b": jnp.zeros(1)},
    }
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)

    def loss_fn(p):
        p = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p)
        h = jnp.tanh(x @ p["layer1"]["w"] + p["layer1"]["b"])
        return jnp.mean(jnp.square(h @ p["layer2"]["w"] + p["layer2"]["b"] - y))

    return params, loss_fn


def _fit(tx, params, loss_fn, steps=60):
    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state, loss

    state = tx.init(params)
    first = loss_fn(params)
    for _ in range(steps):
        params, state, _ = step(params, state)
    return float(first), float(loss_fn(params)), params


def test_it_is_registered_with_its_card_and_provenance():
    registry = get_registry()
    assert NAME in registry.names("pretrained")
    found = lopt_core.load_pretrained(NAME)
    assert isinstance(found, Pretrained) and found.card.is_file()
    assert found.theta_file.stat().st_size < 2 * 1024 * 1024
    meta = found.metadata()
    assert {"recipe", "commit", "source_step"} <= set(meta)
    assert "normalized_mlp_v1" in registry.names("pretrained")
    other = lopt_core.load_pretrained("normalized_mlp_v1")
    assert other.learned_optimizer.name == "NormalizedMLPLOpt" and other.theta()["mlp"]
    with pytest.raises(Exception, match="normalized_mlp_v1"):
        lopt_core.load_pretrained("normalized_mlp_v2")  # close matches in the message


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_one_line_optax_on_nested_params_under_jit(dtype):
    params, loss_fn = _problem(dtype)
    tx = optax.chain(optax.clip_by_global_norm(10.0), lopt_core.pretrained(NAME, num_steps=60))
    first, last, trained = _fit(tx, params, loss_fn)
    assert last < 0.5 * first
    assert all(p.dtype == dtype for p in jax.tree_util.tree_leaves(trained))


def test_flax_train_state():
    from flax.training import train_state

    params, loss_fn = _problem()
    state = train_state.TrainState.create(
        apply_fn=None, params=params, tx=lopt_core.pretrained(NAME, num_steps=40)
    )
    apply = jax.jit(lambda s: s.apply_gradients(grads=jax.grad(loss_fn)(s.params)))
    first = loss_fn(state.params)
    for _ in range(40):
        state = apply(state)
    assert float(loss_fn(state.params)) < 0.5 * float(first)


def test_the_same_optimizer_trains_lopt_tasks_and_task_families():
    found = lopt_core.load_pretrained(NAME)
    registry = get_registry()
    task = registry.create("task", "TeacherStudent_Dim8_Relu32")
    result = lopt_core.train(task, found.optimizer(), jax.random.PRNGKey(0), num_steps=50)
    assert float(np.mean(result.train_loss[-5:])) < float(result.train_loss[0])
    family = registry.create("task_family", "FixedDimQuadraticFamily", dim=4)
    curves = lopt_core.train_family(family, found.optimizer(), jax.random.PRNGKey(1), 4, 30)
    assert curves.train_loss.shape == (4, 30)
    assert np.all(curves.train_loss[:, -1] < curves.train_loss[:, 0])


def test_export_theta_round_trips(tmp_path):
    found = lopt_core.load_pretrained(NAME)
    out = export_theta(found.theta_file, found.learned_optimizer, tmp_path / "t.msgpack", note="x")
    copy = Pretrained("copy", found.learned_optimizer, out)
    assert copy.metadata()["note"] == "x"
    for a, b in zip(
        jax.tree_util.tree_leaves(copy.theta()),
        jax.tree_util.tree_leaves(found.theta()),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="its theta file"):
        Pretrained("gone", found.learned_optimizer, tmp_path / "gone.msgpack")
