"""Tests for lopt_core.training: train, train_family, sample_cfgs and StaticGraphError."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import toys
from lopt_core import (
    SGD,
    Adam,
    Datasets,
    OptaxOptimizer,
    StaticGraphError,
    Task,
    TaskFamily,
    TrainResult,
    sample_cfgs,
    single_task_to_family,
    train,
    train_family,
)
from lopt_core.training import compiled_programs
from toys import ToyLearnableAdam

KEY = jax.random.PRNGKey(42)
DIM = 3


def counting_datasets() -> Datasets:
    """Fresh datasets whose batch i of a split is full of (split offset + i)."""

    def split(offset):
        for i in itertools.count():
            yield {"x": np.full((2, DIM), offset + i, np.float32)}

    return Datasets(split(0.0), split(100.0), split(200.0), split(300.0))


class NoisyRegression(Task):
    """A tiny data task whose loss uses params, batch and key, so all three must line up."""

    def __init__(self, datasets: Datasets | None = None, target_scale: float = 1.0):
        self.datasets = datasets
        self.target_scale = target_scale

    def init(self, key):
        return {"w": jax.random.normal(key, (DIM,)), "b": jnp.zeros(())}

    def loss(self, params, key, batch):
        noise = 0.01 * jax.random.normal(key, (DIM,))
        pred = params["w"] * 0.01 * batch["x"] + params["b"]
        return jnp.mean((pred - self.target_scale - noise) ** 2)


class Quadratic(toys.Quadratic):
    """A data-free task: ||params - center||^2, from params = 0."""

    def __init__(self, center):
        super().__init__(center, x0=jnp.zeros(DIM))


def python_loop_reference(task, opt, key, num_steps, eval_every, num_eval_batches, datasets):
    """The semantics train() promises, written as a plain Python loop.

    The key is split into (init, optimizer, per-step, eval) keys; each step key into
    (loss, update) keys; train_loss[i] is the loss of batch i *before* update i;
    evaluations happen at step 0 and after every eval_every steps, on fresh batches.
    """
    init_key, opt_key, loop_key, eval_key = jax.random.split(key, 4)
    params, model_state = task.init_with_state(init_key)
    state = opt.init(params, model_state, num_steps=num_steps, key=opt_key)
    step_keys = jax.random.split(loop_key, num_steps)

    # jit only the per-step pieces (to keep the test fast); the loop itself stays in Python.
    @jax.jit
    def loss_and_grad(params, model_state, loss_key, batch):
        def loss_fn(p):
            return task.loss_with_state(p, model_state, loss_key, batch)

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    eval_loss = jax.jit(lambda p, s, b: task.loss_with_state(p, s, eval_key, b)[0])
    update = jax.jit(opt.update)

    def evaluate(state, split):
        batches = [next(datasets.split(split)) for _ in range(num_eval_batches)]
        p, s = opt.get_params(state), opt.get_state(state)
        return np.mean([eval_loss(p, s, b) for b in batches])

    # Draw the train batches first, then the eval batches, as train() does.
    train_batches = [next(datasets.train) for _ in range(num_steps)]
    losses, valid, test = [], [evaluate(state, "inner_valid")], [evaluate(state, "test")]
    for i in range(num_steps):
        loss_key, update_key = jax.random.split(step_keys[i])
        (loss, new_state), grad = loss_and_grad(
            opt.get_params(state), opt.get_state(state), loss_key, train_batches[i]
        )
        state = update(state, grad, loss, new_state, update_key)
        losses.append(loss)
        if (i + 1) % eval_every == 0:
            valid.append(evaluate(state, "inner_valid"))
            test.append(evaluate(state, "test"))
    return opt.get_params(state), np.array(losses), np.array(valid), np.array(test)


# train ------------------------------------------------------------------------------------


def test_train_matches_a_python_loop():
    opt = Adam(0.05)
    result = train(
        NoisyRegression(counting_datasets()), opt, KEY, 6, eval_every=2, num_eval_batches=2
    )
    params, losses, valid, test = python_loop_reference(
        NoisyRegression(), opt, KEY, 6, 2, 2, counting_datasets()
    )
    assert isinstance(result, TrainResult)
    assert result.train_loss.shape == (6,)
    np.testing.assert_allclose(result.train_loss, losses, rtol=2e-5)
    np.testing.assert_allclose(result.inner_valid_loss, valid, rtol=2e-5)
    np.testing.assert_allclose(result.test_loss, test, rtol=2e-5)
    np.testing.assert_allclose(result.params["w"], params["w"], rtol=2e-5)
    np.testing.assert_array_equal(result.eval_steps, [0, 2, 4, 6])
    # Training made progress, so the comparison is not between two constant runs.
    assert result.train_loss[-1] < result.train_loss[0]
    assert result.inner_valid_loss[-1] < result.inner_valid_loss[0]


def test_train_loss_at_step_i_is_before_update_i():
    # With SGD on ||p - c||^2 from p = 0, the loss before step i is ||c||^2 (1 - 2 lr)^(2 i).
    center = jnp.asarray([1.0, -2.0, 0.5])
    lr = 0.1
    result = train(Quadratic(center), SGD(lr), KEY, 4)
    expected = float(jnp.sum(center**2)) * (1 - 2 * lr) ** (2 * np.arange(4))
    np.testing.assert_allclose(result.train_loss, expected, rtol=1e-5)
    np.testing.assert_allclose(result.params, center * (1 - (1 - 2 * lr) ** 4), rtol=1e-5)


def test_data_free_eval_losses_and_default_schedule():
    center = jnp.asarray([1.0, 2.0, 3.0])
    result = train(Quadratic(center), SGD(0.1), KEY, 5)
    # eval_every=None: evaluations at step 0 and at the end only.
    np.testing.assert_array_equal(result.eval_steps, [0, 5])
    assert result.inner_valid_loss.shape == (2,) and result.test_loss.shape == (2,)
    final = float(jnp.sum((result.params - center) ** 2))
    np.testing.assert_allclose(
        result.inner_valid_loss, [float(jnp.sum(center**2)), final], rtol=1e-5
    )
    np.testing.assert_allclose(result.test_loss, result.inner_valid_loss)
    assert result.model_state is None


def test_eval_every_that_does_not_divide_num_steps_suggests_one_that_does():
    with pytest.raises(ValueError, match=r"num_steps \(10\).*eval_every \(4\).*eval_every=2"):
        train(Quadratic(jnp.ones(DIM)), SGD(0.1), KEY, 10, eval_every=4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_steps": 0}, "num_steps must be a positive integer, got 0"),
        ({"num_steps": 2.5}, "num_steps must be a positive integer, got 2.5"),
        ({"num_steps": 4, "eval_every": 0}, "eval_every must be a positive integer or None, got 0"),
        ({"num_steps": 4, "num_eval_batches": 0}, "num_eval_batches must be a positive integer"),
    ],
)
def test_train_rejects_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train(Quadratic(jnp.ones(DIM)), SGD(0.1), KEY, **kwargs)


def test_train_rejects_non_tasks_and_raw_optax():
    with pytest.raises(TypeError, match="train expects a Task, got function"):
        train(lambda k: 0, SGD(0.1), KEY, 2)
    with pytest.raises(TypeError, match="lopt_core Optimizer.*OptaxOptimizer"):
        train(Quadratic(jnp.ones(DIM)), optax.sgd(0.1), KEY, 2)


class CountingState(Task):
    """A stateful task: model state counts the training steps, and the loss reads it."""

    datasets = None

    def init_with_state(self, key):
        return jnp.zeros(DIM), jnp.asarray(0.0)

    def loss_with_state_and_aux(self, params, state, key, batch):
        loss = jnp.sum((params - state) ** 2)
        return loss, state + 1.0, {"count": state}


def test_stateful_task_threads_model_state_through_steps():
    task = CountingState()
    result = train(task, SGD(0.1), KEY, 4, eval_every=2)
    assert result.model_state == 4.0  # incremented once per training step
    # Evaluation reads the state but does not advance it; its aux reports the state seen.
    np.testing.assert_array_equal(result.inner_valid_aux["count"], [0.0, 2.0, 4.0])
    # Same semantics as a hand-written loop.
    _, losses, valid, _ = python_loop_reference(task, SGD(0.1), KEY, 4, 2, 1, counting_datasets())
    np.testing.assert_allclose(result.train_loss, losses, rtol=1e-6)
    np.testing.assert_allclose(result.inner_valid_loss, valid, rtol=1e-6)


def test_optax_extra_args_get_the_training_loss():
    def init(params):
        return jnp.zeros(())

    def update(updates, state, params=None, *, value, **extra_args):
        return updates, state + value  # the sum of every training loss seen

    opt = OptaxOptimizer(
        optax.chain(optax.sgd(0.1), optax.GradientTransformationExtraArgs(init, update))
    )
    result = train(Quadratic(jnp.ones(DIM)), opt, KEY, 3)
    np.testing.assert_allclose(result.opt_state.optax_state[1], result.train_loss.sum(), rtol=1e-6)


# Compilation cache ------------------------------------------------------------------------


@pytest.fixture
def compile_counter():
    """Counts XLA compilations through jax.monitoring (a public, version-stable hook)."""
    events = []

    def listener(name, duration, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)


def test_second_train_call_does_not_recompile(compile_counter):
    task = NoisyRegression(counting_datasets(), target_scale=0.5)
    train(task, Adam(0.01), KEY, 4)
    size = compiled_programs()["train"]
    other_key = jax.random.PRNGKey(7)  # made before counting: making a key compiles, eagerly
    compile_counter.clear()
    # Same task object, an equal (not identical) optimizer, another key: no compilation.
    result = train(task, Adam(0.01), other_key, 4)
    assert compile_counter == []
    assert compiled_programs()["train"] == size
    assert result.train_loss.shape == (4,)
    # A different number of steps is a new graph: the counter does see compilations.
    train(task, Adam(0.01), KEY, 2)
    assert len(compile_counter) >= 1
    assert compiled_programs()["train"] == size + 1


@dataclasses.dataclass
class UnhashableTask(Task):
    """A dataclass with eq=True has __hash__ = None: jit must still accept it."""

    center: jax.Array

    def init(self, key):
        return jnp.zeros(DIM)

    def loss(self, params, key, batch):
        return jnp.sum((params - self.center) ** 2)


def test_unhashable_task_trains_and_is_cached_by_identity(compile_counter):
    task = UnhashableTask(jnp.ones(DIM))
    with pytest.raises(TypeError):
        hash(task)
    first = train(task, SGD(0.1), KEY, 3)
    compile_counter.clear()
    second = train(task, SGD(0.1), KEY, 3)
    assert compile_counter == []
    np.testing.assert_array_equal(first.train_loss, second.train_loss)


# train_family -----------------------------------------------------------------------------


class ShiftedRegression(NoisyRegression):
    """NoisyRegression whose target is a traced cfg value."""

    def __init__(self, datasets, cfg):
        super().__init__(datasets)
        self.cfg = cfg

    def loss(self, params, key, batch):
        noise = 0.01 * jax.random.normal(key, (DIM,))
        pred = params["w"] * 0.01 * batch["x"] + params["b"]
        return jnp.mean((pred - self.cfg["target"] - noise) ** 2)


class ShiftedFamily(TaskFamily):
    def __init__(self, datasets):
        self.datasets = datasets

    def sample(self, key):
        return {"target": jax.random.uniform(key, (), minval=-2.0, maxval=2.0)}

    def task_fn(self, cfg):
        return ShiftedRegression(self.datasets, cfg)


def test_train_family_equals_separate_single_task_runs():
    num_tasks, num_steps = 4, 4
    family = ShiftedFamily(counting_datasets())
    opt = Adam(0.05)
    result = train_family(family, opt, KEY, num_tasks, num_steps, eval_every=2)
    assert result.train_loss.shape == (num_tasks, num_steps)
    assert result.inner_valid_loss.shape == (num_tasks, 3)
    assert result.params["w"].shape == (num_tasks, DIM)
    np.testing.assert_array_equal(result.eval_steps, np.tile([0, 2, 4], (num_tasks, 1)))

    # Reproduce: the key splits into (cfg key, run key); cfgs come from sample_tasks,
    # per-task keys from splitting the run key; task i draws its batches after task i-1's.
    cfg_key, run_key = jax.random.split(KEY)
    cfgs = family.sample_tasks(cfg_key, num_tasks)
    keys = jax.random.split(run_key, num_tasks)
    separate_datasets = counting_datasets()
    for i in range(num_tasks):
        cfg = jax.tree_util.tree_map(lambda x, i=i: x[i], cfgs)
        single = train(ShiftedRegression(separate_datasets, cfg), opt, keys[i], num_steps, 2)
        np.testing.assert_allclose(result.train_loss[i], single.train_loss, rtol=2e-5)
        np.testing.assert_allclose(result.inner_valid_loss[i], single.inner_valid_loss, rtol=2e-5)
        np.testing.assert_allclose(result.test_loss[i], single.test_loss, rtol=2e-5)
        np.testing.assert_allclose(result.params["w"][i], single.params["w"], rtol=2e-5)
    # The tasks really differ (different cfgs, keys and data).
    assert len(set(np.round(np.asarray(result.train_loss[:, -1]), 5).tolist())) == num_tasks


class BatchProbe(Task):
    """Loss = mean of the batch at params 0, so train_loss[0] reveals which batch came first."""

    def __init__(self, datasets):
        self.datasets = datasets

    def init(self, key):
        return jnp.zeros(())

    def loss(self, params, key, batch):
        return jnp.mean(batch["x"]) + params**2


class ProbeFamily(TaskFamily):
    def __init__(self, datasets):
        self.datasets = datasets

    def sample(self, key):
        return jnp.zeros(())

    def task_fn(self, cfg):
        return BatchProbe(self.datasets)


def test_train_family_gives_each_task_its_own_data():
    result = train_family(ProbeFamily(counting_datasets()), SGD(0.1), KEY, 3, 2, num_eval_batches=2)
    # Task i trains on train batches 2i and 2i+1, and evaluates on its own fresh batches.
    np.testing.assert_allclose(result.train_loss, [[0, 1], [2, 3], [4, 5]], atol=1e-6)
    # Evaluation j of task t averages inner_valid batches 100 + 4t + 2j + {0, 1}.
    expected_valid = [[100 + 4 * t + 2 * j + 0.5 for j in range(2)] for t in range(3)]
    np.testing.assert_allclose(result.inner_valid_loss, expected_valid, atol=1e-4)
    np.testing.assert_allclose(result.test_loss, np.asarray(expected_valid) + 200, atol=1e-4)


def test_train_family_on_a_data_free_single_task_family():
    center = jnp.asarray([1.0, 2.0, 3.0])
    family = single_task_to_family(Quadratic(center))
    result = train_family(family, SGD(0.1), KEY, 2, 3)
    single = train(Quadratic(center), SGD(0.1), KEY, 3)
    # Data-free and key-free: both tasks follow the one deterministic trajectory.
    np.testing.assert_allclose(result.train_loss, np.tile(single.train_loss, (2, 1)), rtol=1e-6)


def test_train_family_second_call_does_not_recompile(compile_counter):
    family = ShiftedFamily(counting_datasets())
    train_family(family, SGD(0.1), KEY, 2, 2)
    size = compiled_programs()["train_family"]
    compile_counter.clear()
    train_family(family, SGD(0.1), jax.random.PRNGKey(1), 2, 2)
    assert compile_counter == []
    assert compiled_programs()["train_family"] == size


def test_train_family_rejects_bad_arguments():
    family = single_task_to_family(Quadratic(jnp.ones(DIM)))
    with pytest.raises(ValueError, match="num_tasks must be a positive integer, got 0"):
        train_family(family, SGD(0.1), KEY, 0, 2)
    with pytest.raises(TypeError, match="expected a TaskFamily, got Quadratic"):
        train_family(Quadratic(jnp.ones(DIM)), SGD(0.1), KEY, 2, 2)
    with pytest.raises(ValueError, match=r"num_steps \(3\).*eval_every \(2\)"):
        train_family(family, SGD(0.1), KEY, 2, 3, eval_every=2)


# Static graphs ----------------------------------------------------------------------------


class SizedTask(Task):
    def __init__(self, size):
        self.size = size

    def init(self, key):
        return jnp.zeros((self.size,))

    def loss(self, params, key, batch):
        return jnp.sum(params**2)


class IntSizedTask(SizedTask):
    def init(self, key):
        return jnp.zeros((int(self.size),))


class SlicedTask(SizedTask):
    def init(self, key):
        return jnp.zeros(4)[: self.size]


class BranchingTask(SizedTask):
    def loss(self, params, key, batch):
        if self.size > 2:  # Python control flow on a traced value
            return jnp.sum(params**2)
        return jnp.sum(jnp.abs(params))


def _family_of(task_cls):
    class SizeFamily(TaskFamily):
        def sample(self, key):
            return jax.random.randint(key, (), 2, 4)

        def task_fn(self, cfg):
            return task_cls(cfg)

    return SizeFamily()


@pytest.mark.parametrize("task_cls", [SizedTask, IntSizedTask, SlicedTask, BranchingTask])
def test_family_without_a_static_graph_raises_static_graph_error(task_cls):
    with pytest.raises(StaticGraphError) as info:
        train_family(_family_of(task_cls), SGD(0.1), KEY, 2, 2)
    message = str(info.value)
    assert "SizeFamily.task_fn" in message
    assert "one computation graph" in message
    assert "lax.cond/lax.switch" in message
    assert "separate families" in message
    # StaticGraphError is a TypeError, so callers catching TypeError still do.
    assert isinstance(info.value, TypeError)


def test_family_whose_sample_is_not_traceable_raises_static_graph_error():
    class PythonIntSample(TaskFamily):
        def sample(self, key):
            return int(jax.random.randint(key, (), 0, 3))

        def task_fn(self, cfg):
            return SizedTask(3)

    with pytest.raises(StaticGraphError, match="PythonIntSample.sample.*lax.cond/lax.switch"):
        sample_cfgs(PythonIntSample(), KEY, 2)


def test_family_whose_sample_returns_a_non_array_raises_static_graph_error():
    class StringSample(TaskFamily):
        def sample(self, key):
            return "relu"

        def task_fn(self, cfg):
            return SizedTask(3)

    with pytest.raises(StaticGraphError, match="StringSample.sample must return a pytree"):
        train_family(StringSample(), SGD(0.1), KEY, 2, 2)


def test_task_with_python_control_flow_on_params_raises_static_graph_error():
    class BranchOnLoss(Quadratic):
        def loss(self, params, key, batch):
            loss = jnp.sum(params**2)
            return loss if loss > 1 else 2 * loss

    with pytest.raises(StaticGraphError, match="Task BranchOnLoss.*lax.cond"):
        train(BranchOnLoss(jnp.ones(DIM)), SGD(0.1), KEY, 2)


def test_unrelated_type_errors_are_not_relabelled():
    class Broken(Quadratic):
        def loss(self, params, key, batch):
            return params + "oops"

    with pytest.raises(TypeError) as info:
        train(Broken(jnp.ones(DIM)), SGD(0.1), KEY, 2)
    assert not isinstance(info.value, StaticGraphError)


def test_lax_cond_family_is_fine():
    class Activation(Task):
        def __init__(self, cfg):
            self.cfg = cfg

        def init(self, key):
            return jnp.ones(DIM)

        def loss(self, params, key, batch):
            act = jax.lax.cond(self.cfg > 0, jax.nn.relu, jnp.tanh, params)
            return jnp.sum(act**2)

    class ActivationFamily(TaskFamily):
        def sample(self, key):
            return jax.random.randint(key, (), 0, 2)

        def task_fn(self, cfg):
            return Activation(cfg)

    key = jax.random.PRNGKey(1)
    cfgs = sample_cfgs(ActivationFamily(), jax.random.split(key)[0], 4)
    assert set(np.asarray(cfgs).tolist()) == {0, 1}  # both branches are exercised
    result = train_family(ActivationFamily(), SGD(0.1), key, 4, 2)
    first = np.where(np.asarray(cfgs) > 0, DIM * 1.0, DIM * np.tanh(1.0) ** 2)
    np.testing.assert_allclose(result.train_loss[:, 0], first, rtol=1e-6)


def test_new_style_typed_keys_work():
    center = jnp.asarray([1.0, 2.0, 3.0])
    family = single_task_to_family(Quadratic(center))
    typed = train_family(family, SGD(0.1), jax.random.key(0), 2, 3)
    raw = train_family(family, SGD(0.1), jax.random.PRNGKey(0), 2, 3)
    # The data-free quadratic ignores keys, so both key styles give the same curves.
    np.testing.assert_allclose(typed.train_loss, raw.train_loss, rtol=1e-6)


def _never_read():
    raise AssertionError("the test split was read")
    yield  # a generator, so building the Datasets does not run it


def test_eval_splits_left_out_are_never_read():
    rng = np.random.default_rng(0)

    def batches():
        while True:
            yield {"x": rng.normal(size=(4, 3)).astype(np.float32)}

    class Mean(Task):
        datasets = Datasets(batches(), batches(), batches(), _never_read())

        def init(self, key):
            return jnp.ones(3)

        def loss(self, params, key, batch):
            return jnp.mean((batch["x"] - params) ** 2)

    result = train(Mean(), SGD(0.1), jax.random.PRNGKey(0), 4, eval_splits=("inner_valid",))
    assert result.test_loss is None
    assert result.inner_valid_loss.shape == (2,)
    with pytest.raises(AssertionError, match="test split was read"):
        train(Mean(), SGD(0.1), jax.random.PRNGKey(0), 4)
    with pytest.raises(ValueError, match="eval_splits"):
        train(Mean(), SGD(0.1), jax.random.PRNGKey(0), 4, eval_splits=("outer_valid",))


def _scaled_quadratic(scale):
    """``scale * ||params||^2`` from params = [0, 1, 2]."""
    return toys.Quadratic(jnp.zeros(3), scale, x0=jnp.arange(3.0))


def test_eval_task_computes_the_evaluation_losses():
    task, eval_task = _scaled_quadratic(1.0), _scaled_quadratic(3.0)
    plain = train(task, SGD(0.1), jax.random.PRNGKey(0), 4)
    scaled = train(task, SGD(0.1), jax.random.PRNGKey(0), 4, eval_task=eval_task)
    np.testing.assert_array_equal(plain.train_loss, scaled.train_loss)
    np.testing.assert_allclose(scaled.test_loss, 3.0 * plain.test_loss, rtol=1e-6)
    # train_family evaluates with the family's eval_task_fn.
    family = single_task_to_family(task, eval_task=eval_task)
    fam = train_family(family, SGD(0.1), jax.random.PRNGKey(0), 2, 4)
    expected = np.broadcast_to(3.0 * plain.inner_valid_loss, fam.inner_valid_loss.shape)
    np.testing.assert_allclose(fam.inner_valid_loss, expected, rtol=1e-6)


def test_learned_optimizer_with_theta_reuses_one_compilation():

    family = single_task_to_family(_scaled_quadratic(1.0))
    lopt = ToyLearnableAdam(initial_lr=0.05)
    theta = lopt.init(jax.random.PRNGKey(0))
    learned = train_family(family, lopt, jax.random.PRNGKey(1), 2, 8, theta=theta)
    adam = train_family(family, Adam(0.05), jax.random.PRNGKey(1), 2, 8)
    np.testing.assert_allclose(learned.train_loss, adam.train_loss, rtol=1e-4)
    before = compiled_programs()["train_family"]
    faster = jax.tree_util.tree_map(lambda x: x, theta) | {"log_lr": jnp.log(jnp.float32(0.2))}
    moved = train_family(family, lopt, jax.random.PRNGKey(1), 2, 8, theta=faster)
    assert compiled_programs()["train_family"] == before  # new theta, same compiled function
    assert float(moved.train_loss[0, -1]) < float(learned.train_loss[0, -1])
    with pytest.raises(ValueError, match="theta"):
        train_family(family, lopt, jax.random.PRNGKey(1), 2, 8)
    with pytest.raises(ValueError, match="only for learned optimizers"):
        train_family(family, Adam(0.05), jax.random.PRNGKey(1), 2, 8, theta=theta)
