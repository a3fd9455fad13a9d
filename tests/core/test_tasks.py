"""Tests for lopt_core.tasks: Task defaults, TaskFamily and single_task_to_family."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt_core import Datasets, Task, TaskFamily, single_task_to_family

KEY = jax.random.PRNGKey(0)


class LossOnly(Task):
    """Implements only init and loss: the minimal task."""

    def init(self, key):
        return jnp.arange(3.0)

    def loss(self, params, key, batch):
        return jnp.sum((params - batch) ** 2)


class LossAndAuxOnly(Task):
    """Implements init and loss_and_aux."""

    def init(self, key):
        return jnp.arange(3.0)

    def loss_and_aux(self, params, key, batch):
        loss = jnp.sum((params - batch) ** 2)
        return loss, {"abs": jnp.sum(jnp.abs(params - batch))}


class StatefulAux(Task):
    """Implements only the stateful forms: init_with_state and loss_with_state_and_aux."""

    def init_with_state(self, key):
        return jnp.arange(3.0), jnp.asarray(10.0)

    def loss_with_state_and_aux(self, params, state, key, batch):
        loss = jnp.sum((params - batch) ** 2) + state
        return loss, state + 1, {"state": state}


class StatefulNoAux(Task):
    """Implements init_with_state and loss_with_state."""

    def init_with_state(self, key):
        return jnp.arange(3.0), jnp.asarray(5.0)

    def loss_with_state(self, params, state, key, batch):
        return jnp.sum(params * batch) * state, state * 2


class Nothing(Task):
    """Implements nothing at all."""


BATCH = jnp.ones(3)
PARAMS = jnp.arange(3.0)
EXPECTED_LOSS = float(jnp.sum((PARAMS - BATCH) ** 2))


# Task defaults ----------------------------------------------------------------------------


def test_loss_only_task_gets_every_other_form():
    task = LossOnly()
    params = task.init(KEY)
    np.testing.assert_array_equal(params, PARAMS)
    params2, state = task.init_with_state(KEY)
    np.testing.assert_array_equal(params2, PARAMS)
    assert state is None

    assert task.loss(params, KEY, BATCH) == EXPECTED_LOSS
    loss, aux = task.loss_and_aux(params, KEY, BATCH)
    assert loss == EXPECTED_LOSS and aux == {}
    loss, state = task.loss_with_state(params, "s", KEY, BATCH)
    assert loss == EXPECTED_LOSS and state == "s"  # state passes through untouched
    loss, state, aux = task.loss_with_state_and_aux(params, "s", KEY, BATCH)
    assert loss == EXPECTED_LOSS and state == "s" and aux == {}


def test_loss_and_aux_task_gets_loss_and_keeps_its_aux_in_the_stateful_form():
    task = LossAndAuxOnly()
    assert task.loss(PARAMS, KEY, BATCH) == EXPECTED_LOSS
    loss, state = task.loss_with_state(PARAMS, None, KEY, BATCH)
    assert loss == EXPECTED_LOSS and state is None
    loss, state, aux = task.loss_with_state_and_aux(PARAMS, None, KEY, BATCH)
    assert loss == EXPECTED_LOSS and state is None
    assert aux["abs"] == float(jnp.sum(jnp.abs(PARAMS - BATCH)))


def test_stateful_task_gets_init_and_loss_with_state():
    task = StatefulAux()
    np.testing.assert_array_equal(task.init(KEY), PARAMS)
    params, state = task.init_with_state(KEY)
    assert state == 10.0
    loss, new_state = task.loss_with_state(params, state, KEY, BATCH)
    assert loss == EXPECTED_LOSS + 10.0
    assert new_state == 11.0
    loss, new_state, aux = task.loss_with_state_and_aux(params, state, KEY, BATCH)
    assert (loss, new_state, aux["state"]) == (EXPECTED_LOSS + 10.0, 11.0, 10.0)


def test_stateful_task_without_aux_gets_the_and_aux_form():
    task = StatefulNoAux()
    params, state = task.init_with_state(KEY)
    loss, new_state, aux = task.loss_with_state_and_aux(params, state, KEY, BATCH)
    assert loss == float(jnp.sum(PARAMS)) * 5.0
    assert new_state == 10.0
    assert aux == {}


def test_stateful_only_task_says_loss_is_missing_instead_of_recursing():
    # A stateful task has no stateless loss to fall back to; it must say so, not recurse.
    with pytest.raises(NotImplementedError, match="StatefulAux must implement loss"):
        StatefulAux().loss(PARAMS, KEY, BATCH)


@pytest.mark.parametrize(
    "method, args, message",
    [
        ("init", (KEY,), r"Nothing must implement init\(key\)"),
        ("init_with_state", (KEY,), r"Nothing must implement init\(key\)"),
        ("loss", (PARAMS, KEY, BATCH), r"Nothing must implement loss.*loss_with_state"),
        ("loss_and_aux", (PARAMS, KEY, BATCH), r"Nothing must implement loss"),
        ("loss_with_state", (PARAMS, None, KEY, BATCH), r"Nothing must implement loss"),
        ("loss_with_state_and_aux", (PARAMS, None, KEY, BATCH), r"Nothing must implement loss"),
    ],
)
def test_unimplemented_task_raises_not_implemented_not_recursion(method, args, message):
    with pytest.raises(NotImplementedError, match=message):
        getattr(Nothing(), method)(*args)


def test_task_defaults_for_name_normalizer_datasets_repr():
    task = LossOnly()
    assert task.name == "LossOnly"
    assert task.datasets is None
    x = jnp.asarray([0.5, 2.0])
    assert task.normalizer(x) is x
    assert repr(task) == "<Task LossOnly>"

    class Named(LossOnly):
        name = "custom_name"

    assert Named().name == "custom_name"
    assert repr(Named()) == "<Task custom_name>"


def test_task_defaults_jit_and_grad():
    # The delegating defaults must be traceable like hand-written methods.
    task = StatefulAux()
    grad = jax.jit(jax.grad(lambda p: task.loss_with_state(p, 1.0, KEY, BATCH)[0]))(PARAMS)
    np.testing.assert_allclose(grad, 2 * (PARAMS - BATCH))


# TaskFamily -------------------------------------------------------------------------------


class ScaledQuadTask(Task):
    def __init__(self, cfg):
        self.cfg = cfg

    def init(self, key):
        return jnp.zeros(2)

    def loss(self, params, key, batch):
        return self.cfg["scale"] * jnp.sum((params - self.cfg["center"]) ** 2)


class QuadFamily(TaskFamily):
    def sample(self, key):
        k1, k2 = jax.random.split(key)
        return {"scale": jax.random.uniform(k1, ()), "center": jax.random.normal(k2, (2,))}

    def task_fn(self, cfg):
        return ScaledQuadTask(cfg)


def test_sample_tasks_is_sample_vmapped_over_split_keys():
    family = QuadFamily()
    cfgs = family.sample_tasks(KEY, 5)
    assert cfgs["scale"].shape == (5,)
    assert cfgs["center"].shape == (5, 2)
    keys = jax.random.split(KEY, 5)
    for i in range(5):
        one = family.sample(keys[i])
        np.testing.assert_allclose(cfgs["scale"][i], one["scale"], rtol=1e-6)
        np.testing.assert_allclose(cfgs["center"][i], one["center"], rtol=1e-6)
    # Different tasks really differ.
    assert len(set(np.asarray(cfgs["scale"]).tolist())) == 5


def test_sample_tasks_rejects_non_positive_n():
    with pytest.raises(ValueError, match="at least 1.*got 0"):
        QuadFamily().sample_tasks(KEY, 0)


def test_task_fn_builds_a_task_from_cfg_and_eval_task_fn_defaults_to_it():
    family = QuadFamily()
    cfg = family.sample(KEY)
    task = family.task_fn(cfg)
    expected = cfg["scale"] * jnp.sum(cfg["center"] ** 2)
    np.testing.assert_allclose(task.loss(task.init(KEY), KEY, None), expected, rtol=1e-6)
    eval_task = family.eval_task_fn(cfg)
    assert isinstance(eval_task, ScaledQuadTask)
    assert eval_task.cfg is cfg


def test_task_fn_works_under_vmap():
    family = QuadFamily()
    cfgs = family.sample_tasks(KEY, 3)

    def loss_of(cfg):
        task = family.task_fn(cfg)
        return task.loss(task.init(KEY), KEY, None)

    losses = jax.vmap(loss_of)(cfgs)
    np.testing.assert_allclose(
        losses, cfgs["scale"] * jnp.sum(cfgs["center"] ** 2, axis=1), rtol=1e-6
    )


def test_family_defaults_name_datasets_repr_and_missing_methods():
    family = QuadFamily()
    assert family.name == "QuadFamily"
    assert family.datasets is None
    assert repr(family) == "<TaskFamily QuadFamily>"
    with pytest.raises(NotImplementedError, match=r"TaskFamily must implement sample\(key\)"):
        TaskFamily().sample(KEY)
    with pytest.raises(NotImplementedError, match=r"TaskFamily must implement task_fn\(cfg\)"):
        TaskFamily().task_fn(None)


# single_task_to_family --------------------------------------------------------------------


def test_single_task_family_task_fn_returns_that_very_task():
    task = LossOnly()
    family = single_task_to_family(task)
    assert isinstance(family, TaskFamily)
    for seed in range(3):
        assert family.task_fn(family.sample(jax.random.PRNGKey(seed))) is task
    cfgs = family.sample_tasks(KEY, 4)
    assert jax.tree_util.tree_leaves(cfgs)[0].shape[0] == 4
    assert family.task_fn(cfgs) is task


def test_single_task_family_eval_task_fn_returns_the_task_when_no_eval_task():
    # The reference implementation raised here instead of returning.
    task = LossOnly()
    family = single_task_to_family(task)
    assert family.eval_task_fn(family.sample(KEY)) is task


def test_single_task_family_eval_task_fn_returns_the_given_eval_task():
    # The reference implementation ignored its eval_task argument.
    task, eval_task = LossOnly(), LossAndAuxOnly()
    family = single_task_to_family(task, eval_task=eval_task)
    cfg = family.sample(KEY)
    assert family.eval_task_fn(cfg) is eval_task
    assert family.task_fn(cfg) is task


def test_single_task_family_name_and_datasets_come_from_the_task():
    task = LossOnly()
    task.datasets = Datasets(iter(()), iter(()), iter(()), iter(()))
    family = single_task_to_family(task)
    assert family.name == "LossOnly"
    assert family.datasets is task.datasets
    assert single_task_to_family(task, name="renamed").name == "renamed"


def test_single_task_to_family_rejects_non_tasks():
    with pytest.raises(TypeError, match="expects a Task, got function"):
        single_task_to_family(lambda key: None)
    with pytest.raises(TypeError, match="eval_task must be a Task or None, got str"):
        single_task_to_family(LossOnly(), eval_task="test")


def test_name_can_be_assigned_in_init():
    class Named(Task):
        def __init__(self):
            self.name = "custom_name"

    class NamedFamily(TaskFamily):
        def __init__(self):
            self.name = "family_name"

    assert Named().name == "custom_name"
    assert NamedFamily().name == "family_name"

    class Plain(Task):
        pass

    assert Plain().name == "Plain"
