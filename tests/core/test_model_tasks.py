"""Tasks from a flax linen or nnx model (batch norm included) or an (init, loss) pair."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lopt_core
from lopt_core import Adam, Datasets, FunctionTask, InitScaleFamily, LinenTask, NNXTask


def regression_data(batch: int = 16) -> Datasets:
    """y = x @ w for a fixed w, x ~ N(0, 1); batches of {"x", "y"}, four splits."""
    w = np.linspace(-1, 1, 4).astype(np.float32)

    def split(seed):
        rng = np.random.default_rng(seed)
        while True:
            x = rng.normal(size=(batch, 4)).astype(np.float32)
            yield {"x": x, "y": x @ w}

    abstract = {
        "x": jax.ShapeDtypeStruct((batch, 4), jnp.float32),
        "y": jax.ShapeDtypeStruct((batch,), jnp.float32),
    }
    return Datasets(*(split(i) for i in range(4)), abstract_batch=abstract)


def mse(outputs, batch):
    loss = jnp.mean((outputs[:, 0] - batch["y"]) ** 2)
    return loss, {"rmse": jnp.sqrt(loss)}


class LinenBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(1)(nn.relu(x))


class NNXBN(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(4, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, momentum=0.5, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.bn(self.dense(x))))


def _trains_and_updates_batch_stats(task, stats):
    params, state = task.init_with_state(jax.random.PRNGKey(0))
    assert set(params) and state is not None
    result = lopt_core.train(task, Adam(0.05), jax.random.PRNGKey(1), num_steps=30, eval_every=30)
    assert result.train_loss[-1] < 0.5 * result.train_loss[0]
    assert "rmse" in result.test_aux
    batch = next(task.datasets.train)
    _, new_state, aux = task.loss_with_state_and_aux(params, state, jax.random.PRNGKey(2), batch)
    assert not np.allclose(stats(new_state), stats(state))  # the running mean moved
    assert float(aux["rmse"]) > 0


def test_a_linen_model_with_batch_norm_is_a_task():
    task = LinenTask(LinenBN(), mse, regression_data(), inputs="x", name="LinenBN")
    assert task.name == "LinenBN"
    _trains_and_updates_batch_stats(task, lambda s: s["batch_stats"]["BatchNorm_0"]["mean"])


def test_an_nnx_model_with_batch_norm_is_a_task():
    task = NNXTask(lambda rngs: NNXBN(rngs), mse, regression_data(), inputs="x")
    params, _ = task.init_with_state(jax.random.PRNGKey(0))
    other, _ = task.init_with_state(jax.random.PRNGKey(1))
    assert params["dense"]["kernel"].shape == (4, 8)
    assert not np.allclose(params["dense"]["kernel"], other["dense"]["kernel"])
    _trains_and_updates_batch_stats(task, lambda s: s["bn"]["mean"])


def test_an_init_and_loss_pair_is_a_task_and_its_inits_a_family():
    data = regression_data()

    def init_fn(key):
        return {"w": jax.random.normal(key, (4,))}

    def loss_fn(params, key, batch):
        return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)

    task = FunctionTask(init_fn, loss_fn, data)
    result = lopt_core.train(task, Adam(0.1), jax.random.PRNGKey(0), num_steps=40)
    assert result.train_loss[-1] < 0.1 * result.train_loss[0]

    family = InitScaleFamily(task, 0.1, 10.0)
    scales = family.sample_tasks(jax.random.PRNGKey(0), 16)
    assert 0.1 <= float(scales.min()) and float(scales.max()) <= 10.0
    inits = jax.vmap(lambda c: family.task_fn(c).init(jax.random.PRNGKey(3))["w"])(scales)
    np.testing.assert_allclose(
        inits / scales[:, None], init_fn(jax.random.PRNGKey(3))["w"][None].repeat(16, 0), rtol=1e-5
    )
    curves = lopt_core.train_family(family, Adam(0.1), jax.random.PRNGKey(1), 4, 20)
    assert curves.train_loss.shape == (4, 20)

    def stateful_init(key):
        return init_fn(key), jnp.zeros(())

    def stateful_loss(params, count, key, batch):
        return loss_fn(params, key, batch), count + 1, {"count": count}

    counting = FunctionTask(stateful_init, stateful_loss, data, stateful=True)
    params, count = counting.init_with_state(jax.random.PRNGKey(0))
    _, count, aux = counting.loss_with_state_and_aux(params, count, None, next(data.train))
    assert float(count) == 1.0 and float(aux["count"]) == 0.0


def test_a_model_without_an_example_batch_says_what_to_pass():
    data = Datasets(*(iter(()) for _ in range(4)))
    with pytest.raises(ValueError, match="example_batch="):
        LinenTask(LinenBN(), mse, data, inputs="x").init(jax.random.PRNGKey(0))
    task = LinenTask(
        nn.Dense(1), mse, data, inputs="x", example_batch={"x": np.zeros((2, 4), np.float32)}
    )
    assert task.init(jax.random.PRNGKey(0))["kernel"].shape == (4, 1)
