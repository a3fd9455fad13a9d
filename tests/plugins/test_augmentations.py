"""Tests for the task augmentations (lopt_plugins.augmentations): exactness, effects, state,
vmapped training, composition, equality, argument errors and registration."""

from __future__ import annotations

import configparser
import functools
import importlib.metadata
import math

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt_core
import lopt_plugins.augmentations as aug_plugin
import lopt_plugins.tasks as tasks_plugin
from helpers import REPO_ROOT
from lopt_plugins.augmentations import (
    GradientNoise,
    LossTransform,
    LowPrecision,
    ReparamWeights,
    SubsampleBatch,
)
from lopt_plugins.tasks import ImageMLPInitFamily, ImageMLPTask
from toys import QuadraticFamily, Regression, RegressionFamily, regression_datasets

KEY = jax.random.PRNGKey(0)
tree_map = jax.tree_util.tree_map

# A tiny MLP on digits: four parameter tensors, dict-of-dict parameters, real batches.
SMALL = {"hidden_sizes": (8,), "batch_size": 8}


def small_family() -> ImageMLPInitFamily:
    return ImageMLPInitFamily(**SMALL)


def digits_batch() -> dict:
    return next(ImageMLPTask(**SMALL).datasets.train)


def assert_trees_equal(a, b) -> None:
    """Same structure, same dtypes, identical bits."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_trees_close(a, b, rtol=1e-4, atol=1e-6) -> None:
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@functools.partial(jax.jit, static_argnums=0)
def init_loss_grad(task_fn, cfg, batch):
    """Init, loss and gradient of the task ``task_fn(cfg)`` (one compile per task_fn)."""
    task = task_fn(cfg)
    params = task.init(KEY)
    loss, grad = jax.value_and_grad(task.loss)(params, KEY, batch)
    return params, loss, grad


# ReparamWeights ----------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["global", "tensor", "parameter"])
def test_reparam_at_scale_one_is_the_wrapped_task_bit_for_bit(level):
    family = small_family()
    wrapped = ReparamWeights(family=family, level=level, min_scale=1.0, max_scale=1.0)
    cfg = wrapped.sample(KEY)
    assert all(np.all(np.asarray(s) == 1.0) for s in jax.tree_util.tree_leaves(cfg["scales"]))
    batch = digits_batch()
    ours = init_loss_grad(wrapped.task_fn, cfg, batch)
    theirs = init_loss_grad(family.task_fn, cfg["inner"], batch)
    assert_trees_equal(ours, theirs)


@pytest.mark.parametrize("level", ["global", "tensor", "parameter"])
def test_reparam_applies_its_scales(level):
    family = small_family()
    wrapped = ReparamWeights(family=family, level=level)
    cfg = wrapped.sample(KEY)
    shapes = {"global": [()], "tensor": [(4,)], "parameter": [(8,), (64, 8), (10,), (8, 10)]}
    scales = jax.tree_util.tree_leaves(cfg["scales"])
    assert sorted(np.shape(s) for s in scales) == sorted(shapes[level])
    task, inner = wrapped.task_fn(cfg), family.task_fn(cfg["inner"])
    params, inner_params = task.init(KEY), inner.init(KEY)
    # p' = p / s: multiplying back gives the wrapped init (up to rounding), and differs from it.
    restored = task._rescale(params, multiply=True)
    assert_trees_close(restored, inner_params, rtol=1e-5, atol=1e-7)
    assert not np.allclose(
        params["params"]["logits"]["kernel"], inner_params["params"]["logits"]["kernel"]
    )
    # loss(p') is the wrapped loss at p = p' * s; its gradient is s times the wrapped one.
    batch = digits_batch()
    loss, grad = jax.value_and_grad(task.loss)(params, KEY, batch)
    inner_loss, inner_grad = jax.value_and_grad(inner.loss)(restored, KEY, batch)
    np.testing.assert_allclose(loss, inner_loss, rtol=1e-5)
    expected = task._rescale(inner_grad, multiply=True)
    assert_trees_close(grad, expected, rtol=1e-4, atol=1e-6)
    # Evaluation sees the optimizer's p' too, and reports the original loss.
    np.testing.assert_allclose(
        wrapped.eval_task_fn(cfg).loss(params, KEY, batch), inner_loss, rtol=1e-5
    )


# SubsampleBatch ----------------------------------------------------------------------------


def test_subsample_with_fraction_one_is_the_wrapped_loss():
    family = small_family()
    wrapped = SubsampleBatch(family=family, min_fraction=1.0)
    cfg = wrapped.sample(KEY)
    assert float(cfg["fraction"]) == 1.0
    task, inner = wrapped.task_fn(cfg), family.task_fn(cfg["inner"])
    params, batch = inner.init(KEY), digits_batch()
    (loss, aux), grad = jax.value_and_grad(task.loss_and_aux, has_aux=True)(params, KEY, batch)
    (inner_loss, inner_aux), inner_grad = jax.value_and_grad(inner.loss_and_aux, has_aux=True)(
        params, KEY, batch
    )
    np.testing.assert_allclose(loss, inner_loss, rtol=1e-5)
    np.testing.assert_allclose(aux["accuracy"], inner_aux["accuracy"], rtol=1e-6)
    assert_trees_close(grad, inner_grad, rtol=1e-4, atol=1e-6)
    assert wrapped.eval_task_fn(cfg) is not task  # evaluation: the wrapped task on whole batches
    assert type(wrapped.eval_task_fn(cfg)) is type(inner)


def test_subsample_keeps_the_first_ceil_fraction_examples():
    family = small_family()
    wrapped = SubsampleBatch(family=family)
    cfg = {**wrapped.sample(KEY), "fraction": jnp.float32(0.3)}  # ceil(0.3 * 8) = 3
    task, inner = wrapped.task_fn(cfg), family.task_fn(cfg["inner"])
    params, batch = inner.init(KEY), digits_batch()
    first3 = tree_map(lambda x: x[:3], batch)
    loss, grad = jax.value_and_grad(task.loss)(params, KEY, batch)
    inner_loss, inner_grad = jax.value_and_grad(inner.loss)(params, KEY, first3)
    np.testing.assert_allclose(loss, inner_loss, rtol=1e-5)
    assert_trees_close(grad, inner_grad, rtol=1e-4, atol=1e-6)
    # The other examples play no part.
    changed = {**batch, "label": batch["label"].copy()}
    changed["label"][3:] = (changed["label"][3:] + 1) % 10
    np.testing.assert_allclose(task.loss(params, KEY, changed), loss, rtol=1e-6)


# LossTransform -----------------------------------------------------------------------------


@pytest.mark.parametrize("transform", ["affine", "log"])
def test_loss_transform_and_its_normalizer(transform):
    family = RegressionFamily()
    wrapped = LossTransform(family=family, transform=transform, eps=1e-3)
    cfg = wrapped.sample(KEY)
    assert set(cfg) == ({"inner", "scale", "shift"} if transform == "affine" else {"inner"})
    cfg = {**cfg, "scale": jnp.float32(2.5), "shift": jnp.float32(-0.5)}  # (log ignores them)
    task, inner = wrapped.task_fn(cfg), family.task_fn(cfg["inner"])
    params, batch = inner.init(KEY), next(family.datasets.train)
    loss, grad = jax.value_and_grad(task.loss)(params, KEY, batch)
    inner_loss, inner_grad = jax.value_and_grad(inner.loss)(params, KEY, batch)
    if transform == "affine":
        expected, factor = 2.5 * inner_loss - 0.5, 2.5
    else:
        expected, factor = np.log(inner_loss + 1e-3), 1 / (inner_loss + 1e-3)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(grad, factor * inner_grad, rtol=1e-5)
    # The normalizer sees the original scale, and so does evaluation.
    np.testing.assert_allclose(task.normalizer(loss), inner.normalizer(inner_loss), rtol=1e-5)
    assert isinstance(wrapped.eval_task_fn(cfg), Regression)


def test_loss_transform_samples_in_its_ranges_and_is_exact_at_the_identity():
    family = RegressionFamily()
    cfgs = LossTransform(family=family).sample_tasks(KEY, 64)
    assert np.all((cfgs["scale"] >= 0.1) & (cfgs["scale"] <= 10.0))
    assert np.all((cfgs["shift"] >= -1.0) & (cfgs["shift"] <= 1.0))
    identity = LossTransform(family, min_scale=1, max_scale=1, min_shift=0, max_shift=0)
    cfg = identity.sample(KEY)
    inner = family.task_fn(cfg["inner"])
    params, batch = inner.init(KEY), next(family.datasets.train)
    loss = identity.task_fn(cfg).loss(params, KEY, batch)
    assert float(loss) == float(inner.loss(params, KEY, batch))


# GradientNoise -----------------------------------------------------------------------------


def test_gradient_noise_keeps_the_value_and_adds_noise_of_the_sampled_std():
    family = QuadraticFamily(dim=4096)  # a deterministic loss with many entries
    wrapped = GradientNoise(family=family)
    cfg = {**wrapped.sample(KEY), "std": jnp.float32(0.05)}
    task, inner = wrapped.task_fn(cfg), family.task_fn(cfg["inner"])
    params = inner.init(KEY)
    loss, grad = jax.value_and_grad(task.loss)(params, KEY, None)
    inner_loss, inner_grad = jax.value_and_grad(inner.loss)(params, KEY, None)
    assert float(loss) == float(inner_loss)  # exactly the same value
    noise = np.asarray(grad - inner_grad)
    np.testing.assert_allclose(noise.std(), 0.05, rtol=0.05)
    assert abs(noise.mean()) < 0.005
    # Fresh noise for every loss key, the same noise for the same key.
    other = np.asarray(jax.grad(task.loss)(params, jax.random.PRNGKey(1), None) - inner_grad)
    assert np.corrcoef(noise, other)[0, 1] < 0.1
    np.testing.assert_array_equal(jax.grad(task.loss)(params, KEY, None) - inner_grad, noise)
    stds = wrapped.sample_tasks(KEY, 64)["std"]
    assert np.all((stds >= 1e-3) & (stds <= 1e-1)) and len(np.unique(stds)) == 64


# LowPrecision ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where, param_dtype, rtol", [("params", jnp.bfloat16, 2e-2), ("compute", jnp.float32, 5e-2)]
)
def test_low_precision_dtypes_and_closeness(where, param_dtype, rtol):
    family = small_family()
    wrapped = LowPrecision(family=family, where=where)
    cfg = wrapped.sample(KEY)
    task, inner = wrapped.task_fn(cfg), family.task_fn(cfg["inner"])
    params, inner_params, batch = task.init(KEY), inner.init(KEY), digits_batch()
    assert {p.dtype for p in jax.tree_util.tree_leaves(params)} == {jnp.dtype(param_dtype)}
    (loss, aux), grad = jax.value_and_grad(task.loss_and_aux, has_aux=True)(params, KEY, batch)
    assert loss.dtype == jnp.float32 and aux["accuracy"].dtype == jnp.float32
    assert {g.dtype for g in jax.tree_util.tree_leaves(grad)} == {jnp.dtype(param_dtype)}
    inner_loss = inner.loss(inner_params, KEY, batch)
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, inner_loss, rtol=rtol)
    # Evaluation: full-precision compute either way.
    eval_loss = wrapped.eval_task_fn(cfg).loss(params, KEY, batch)
    assert eval_loss.dtype == jnp.float32 and np.isfinite(eval_loss)


# Vectorized training and composition -------------------------------------------------------

TRAINED = {
    "reparam": lambda: ReparamWeights(family=small_family(), level="tensor"),
    "subsample": lambda: SubsampleBatch(family=small_family()),
    # (The loss-side wrappers need no parameter tree: a tiny regression compiles faster.)
    "affine": lambda: LossTransform(family=RegressionFamily()),
    "log": lambda: LossTransform(family=RegressionFamily(), transform="log"),
    "noise": lambda: GradientNoise(family=RegressionFamily()),
    "bf16_params": lambda: LowPrecision(family=small_family()),
    "bf16_compute": lambda: LowPrecision(family=small_family(), where="compute"),
    "composed": lambda: ReparamWeights(
        family=SubsampleBatch(family=small_family()), level="parameter", min_scale=0.1, max_scale=10
    ),
}


@pytest.mark.parametrize("name", list(TRAINED))
def test_train_family_vmaps_8_augmented_tasks(name):
    family = TRAINED[name]()
    result = lopt_core.train_family(family, lopt_core.Adam(0.01), KEY, num_tasks=8, num_steps=4)
    assert np.asarray(result.train_loss).shape == (8, 4)
    assert np.all(np.isfinite(result.train_loss)) and np.all(np.isfinite(result.inner_valid_loss))


def test_composition_nests_cfgs_names_and_datasets():
    inner = small_family()
    family = ReparamWeights(family=SubsampleBatch(family=inner))
    assert family.name == f"ReparamWeights(SubsampleBatch({inner.name}))"
    assert family.datasets is inner.datasets
    cfg = family.sample(KEY)
    assert set(cfg) == {"inner", "scales"} and set(cfg["inner"]) == {"inner", "fraction"}
    task = family.task_fn(cfg)
    inner_name = inner.task_fn(cfg["inner"]["inner"]).name
    assert task.name == f"ReparamWeights(SubsampleBatch({inner_name}))"
    assert task.datasets is inner.datasets
    # A Task is accepted and wrapped as a one-member family.
    single = GradientNoise(family=ImageMLPTask(**SMALL))
    assert single.name == f"GradientNoise({ImageMLPTask(**SMALL).name})"


# Equality ----------------------------------------------------------------------------------


def test_equal_wrappers_of_equal_families_are_equal():
    a = ReparamWeights(family=SubsampleBatch(family=small_family()), level="tensor")
    b = ReparamWeights(family=SubsampleBatch(family=small_family()), level="tensor")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != ReparamWeights(family=SubsampleBatch(family=small_family()), level="global")
    assert a != ReparamWeights(
        family=SubsampleBatch(family=small_family(), min_fraction=0.5), level="tensor"
    )
    assert GradientNoise(family=small_family()) != LossTransform(family=small_family())
    task = ImageMLPTask(**SMALL)
    assert LowPrecision(family=task) == LowPrecision(family=ImageMLPTask(**SMALL))
    assert "level='tensor'" in repr(a)


# Argument errors ---------------------------------------------------------------------------

BAD_ARGUMENTS = [  # (wrapper, its arguments besides family, what the message must say)
    (ReparamWeights, {"level": "layer"}, r"level must be one of .*'parameter', got 'layer'"),
    (ReparamWeights, {"min_scale": 0}, r"min_scale must be a positive number, got 0"),
    (ReparamWeights, {"min_scale": 10, "max_scale": 1}, r"min_scale must be at most .*swap"),
    (SubsampleBatch, {"min_fraction": 0}, r"min_fraction must be a number in \(0, 1\], got 0"),
    (SubsampleBatch, {"min_fraction": 1.5}, r"min_fraction must be .*, got 1.5; e.g. 0.25"),
    (LossTransform, {"transform": "square"}, r"transform must be one of 'affine', 'log', got"),
    (LossTransform, {"min_shift": 1, "max_shift": -1}, r"min_shift must be at most max_shift"),
    (LossTransform, {"min_shift": math.inf}, r"min_shift must be a finite number, got inf"),
    (LossTransform, {"eps": -1e-6}, r"eps must be a positive number, got -1e-06"),
    (GradientNoise, {"max_std": -1.0}, r"max_std must be a positive number, got -1.0"),
    (LowPrecision, {"dtype": "int8"}, r"dtype must be one of 'bfloat16', 'float16', got 'int8'"),
    (LowPrecision, {"where": "optimizer"}, r"where must be one of 'params', 'compute', got"),
]


@pytest.mark.parametrize("wrapper, kwargs, match", BAD_ARGUMENTS)
def test_bad_arguments_raise_one_clear_line(wrapper, kwargs, match):
    with pytest.raises(ValueError, match=rf"^{wrapper.__name__}: {match}") as info:
        wrapper(family=small_family(), **kwargs)
    assert "\n" not in str(info.value)


def test_unusable_families_are_refused():
    with pytest.raises(
        TypeError, match=r"ReparamWeights: family must be a TaskFamily or Task, got int: 3"
    ):
        ReparamWeights(family=3)
    with pytest.raises(
        TypeError, match=r"SubsampleBatch: family .*the class ImageMLPInitFamily itself: call it"
    ):
        SubsampleBatch(family=ImageMLPInitFamily)
    with pytest.raises(ValueError, match=r"SubsampleBatch: .*data-free.*wrap a family with data"):
        SubsampleBatch(family=QuadraticFamily())


# Model state -------------------------------------------------------------------------------


class CountingTask(lopt_core.Task):
    """A stateful regression: the state counts loss calls and averages the loss."""

    def __init__(self):
        self.datasets = regression_datasets()

    def init_with_state(self, key):
        return jax.random.normal(key, (4,)), {"calls": jnp.int32(0), "mean": jnp.float32(0)}

    def loss_with_state(self, params, state, key, batch):
        loss = jnp.mean((batch["x"] @ params - batch["y"]) ** 2)
        calls = state["calls"] + 1
        mean = state["mean"] + (loss.astype(jnp.float32) - state["mean"]) / calls
        return loss, {"calls": calls, "mean": mean}


WRAPPERS = [
    lambda f: ReparamWeights(family=f, level="parameter"),
    lambda f: SubsampleBatch(family=f),
    lambda f: LossTransform(family=f),
    lambda f: GradientNoise(family=f),
    lambda f: LowPrecision(family=f),
    lambda f: LowPrecision(family=f, where="compute"),
]


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_model_state_flows_through(wrap):
    family = wrap(CountingTask())
    task = family.task_fn(family.sample(KEY))
    params, state = task.init_with_state(KEY)
    assert int(state["calls"]) == 0
    batch = next(family.datasets.train)
    loss, state, _ = task.loss_with_state_and_aux(params, state, KEY, batch)
    loss, state = task.loss_with_state(params, state, KEY, batch)
    assert int(state["calls"]) == 2 and state["calls"].dtype == jnp.int32
    assert state["mean"].dtype == jnp.float32 and float(state["mean"]) > 0


def test_model_state_flows_through_every_wrapper_composed_under_train_family():
    family = CountingTask()
    for wrap in WRAPPERS:
        family = wrap(family)
    result = lopt_core.train_family(family, lopt_core.SGD(0.01), KEY, num_tasks=8, num_steps=3)
    np.testing.assert_array_equal(result.model_state["calls"], 3)
    assert np.all(np.isfinite(result.train_loss))


# Registration and gin ----------------------------------------------------------------------

EXPECTED = {"ReparamWeights", "SubsampleBatch", "LossTransform", "GradientNoise", "LowPrecision"}


def test_plugin_registers_every_augmentation_under_its_kind():
    registry = lopt_core.Registry(strict=True)
    registry.load_module(aug_plugin, distribution="lopt")
    assert set(registry.names("task_augmentation")) == EXPECTED == set(aug_plugin.AUGMENTATIONS)
    for name in EXPECTED:
        factory = registry.entry("task_augmentation", name).factory
        assert factory is getattr(aug_plugin, name) and factory.__doc__
        assert issubclass(factory, lopt_core.TaskFamily)


def test_setup_cfg_declares_the_entry_point():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    lines = config["options.entry_points"]["lopt"].split("\n")
    assert "augmentations = lopt_plugins.augmentations" in [line.strip() for line in lines]


def test_get_registry_loads_the_installed_plugin(fresh_registry):
    if "augmentations" not in {p.name for p in importlib.metadata.entry_points(group="lopt")}:
        pytest.skip("installed metadata predates the entry point: reinstall (pip install -e .)")
    assert EXPECTED <= set(lopt_core.get_registry().names("task_augmentation"))


def test_gin_composes_augmentations(fresh_registry):
    from lopt_core import gin_config

    registry = lopt_core.Registry(strict=True)
    registry.load_module(tasks_plugin, distribution="lopt")
    registry.load_module(aug_plugin, distribution="lopt")
    gin_config.parse_config(
        bindings=[
            "ReparamWeights.family = @SubsampleBatch()",
            "ReparamWeights.level = 'tensor'",
            "SubsampleBatch.family = @ImageMLPInitFamily()",
            "SubsampleBatch.min_fraction = 0.5",
            "ImageMLPInitFamily.hidden_sizes = (8,)",
            "ImageMLPInitFamily.batch_size = 8",
        ],
        registry=registry,
    )
    family = gin.get_configurable("lopt.task_augmentation.ReparamWeights")()
    assert family == ReparamWeights(
        family=SubsampleBatch(family=small_family(), min_fraction=0.5), level="tensor"
    )
