"""Tests for the image MLP and conv tasks of lopt_plugins.tasks, on the bundled digits data."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt_core
from lopt_plugins import datasets
from lopt_plugins.tasks import (
    TASKS,
    ImageConvTask,
    ImageMLP_Digits8_Relu32,
    ImageMLP_Mnist8_Relu32,
    ImageMLPTask,
    conv,
    image_mlp,
)

KEY = jax.random.PRNGKey(0)
LOG10 = math.log(10)


def _check_learns(task: lopt_core.Task) -> None:
    """Init loss is about log(10) and 50 steps of Adam lower it clearly."""
    result = lopt_core.train(
        task, lopt_core.Adam(0.01), KEY, num_steps=50, eval_every=50, num_eval_batches=4
    )
    init_loss, final_loss = np.asarray(result.inner_valid_loss)
    assert np.isfinite(init_loss) and abs(init_loss - LOG10) < 0.3, init_loss
    assert final_loss < 0.8 * init_loss, (init_loss, final_loss)
    accuracy = np.asarray(result.inner_valid_aux["accuracy"])
    assert accuracy[1] > accuracy[0] and accuracy[1] > 0.3
    assert abs(float(task.normalizer(init_loss)) - 1.0) < 0.15


def test_image_mlp_on_digits_learns():
    task = ImageMLPTask("digits", (8, 8), hidden_sizes=(32,), batch_size=16)
    assert task.num_classes == 10 and task.image_shape == (8, 8, 1)
    assert task.name == "ImageMLP_Digits8_Relu32"
    _check_learns(task)


def test_conv_on_digits_learns():
    # Two layers, as in the presets: one stride-2 layer and a global pool barely learns digits.
    task = ImageConvTask("digits", (8, 8), channels=(8, 16), batch_size=16)
    assert task.name == "Conv_Digits8_8x16"
    _check_learns(task)


def test_conv_parameter_shapes_follow_channels():
    task = ImageConvTask("digits", (8, 8), channels=(8, 16), activation="tanh", batch_size=16)
    assert task.name == "Conv_Digits8_8x16_Tanh"  # relu, the default, is left out of names
    shapes = jax.tree_util.tree_map(jnp.shape, jax.eval_shape(task.init, KEY))["params"]
    assert shapes["conv_0"]["kernel"] == (3, 3, 1, 8)
    assert shapes["conv_1"]["kernel"] == (3, 3, 8, 16)
    assert shapes["logits"]["kernel"] == (16, 10)
    images = jnp.zeros((5, 8, 8, 1))
    assert jax.eval_shape(task.logits, jax.eval_shape(task.init, KEY), images).shape == (5, 10)


def test_classification_normalizer():
    task = ImageMLPTask(batch_size=16)
    out = task.normalizer(jnp.array([0.0, LOG10, 100.0, jnp.nan, -jnp.inf]))
    np.testing.assert_allclose(out, [0.0, 1.0, 1.5, 1.5, 1.5], rtol=1e-6)


def test_mlp_parameter_shapes_follow_hidden_sizes():
    task = ImageMLPTask(hidden_sizes=(64, 32), activation="tanh", batch_size=16)
    shapes = jax.tree_util.tree_map(jnp.shape, jax.eval_shape(task.init, KEY))["params"]
    assert shapes["hidden_0"]["kernel"] == (64, 64)
    assert shapes["hidden_1"]["kernel"] == (64, 32)
    assert shapes["logits"]["kernel"] == (32, 10)
    assert task.name == "ImageMLP_Digits8_Tanh64x32"


def test_presets_are_named_like_their_registration():
    presets = {**image_mlp.PRESETS, **conv.PRESETS}
    for name, cls in presets.items():
        assert TASKS[name] is cls and cls.__name__ == name
    # Digits presets need no files: build them all and compare with the parametric builder.
    preset = ImageMLP_Digits8_Relu32(batch_size=16)
    assert preset.name == "ImageMLP_Digits8_Relu32"
    assert preset.datasets is ImageMLPTask(batch_size=16).datasets  # shared through the cache
    for name, cls in presets.items():
        if "Digits" in name:
            task = cls(batch_size=16)
            assert task.name == name and task.datasets.extra_info["name"] == "digits"


def test_file_backed_task_without_data_raises_the_datasets_error(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    with pytest.raises(datasets.DatasetNotFoundError):
        ImageMLP_Mnist8_Relu32(batch_size=16, data_dir=str(tmp_path))
    with pytest.raises(datasets.DatasetNotFoundError, match="data_dir"):
        ImageConvTask("cifar10", (8, 8), batch_size=16)


def test_a_datasets_object_can_be_given():
    data = datasets.digits(batch_size=16)
    task = ImageMLPTask(data, (8, 8), batch_size=16)
    assert task.datasets is data and task.name == "ImageMLP_Digits8_Relu32"
    with pytest.raises(ValueError, match=r"image_size=\(8, 8\)"):
        ImageMLPTask(data, (28, 28), batch_size=16)


def test_equal_arguments_give_equal_tasks():
    a = ImageMLPTask(hidden_sizes=[32], batch_size=16)  # a list is turned into a tuple
    b = ImageMLPTask(hidden_sizes=(32,), batch_size=16)
    assert a == b and hash(a) == hash(b)
    assert a != ImageMLPTask(hidden_sizes=(16,), batch_size=16)
    assert a != ImageConvTask(batch_size=16)
    a.name = "renamed"  # names can be assigned, as for any lopt_core.Task
    assert a.name == "renamed" and a == b


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": "imagenet"}, "Unknown image dataset 'imagenet'"),
        ({"activation": "swishy"}, "Unknown activation 'swishy'"),
        ({"hidden_sizes": (32, 0)}, "hidden_sizes must be a sequence of positive integers"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"data_dir": "/somewhere"}, "bundled and takes no data_dir"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageMLPTask(**kwargs)
