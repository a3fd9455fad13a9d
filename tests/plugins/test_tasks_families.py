"""Tests for the image MLP families of lopt_plugins.tasks (init, data, activation), on digits."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt_core
from helpers import sample_tasks_jitted
from lopt_plugins.tasks import (
    ImageMLPActivationFamily,
    ImageMLPDataFamily,
    ImageMLPInitFamily,
    ImageMLPTask,
)

KEY = jax.random.PRNGKey(0)


SMALL = {"hidden_sizes": (16,), "batch_size": 8}


def _train_8(family: lopt_core.TaskFamily) -> np.ndarray:
    """Train 8 sampled tasks in one compiled call; return their [8, 2] inner_valid losses."""
    result = lopt_core.train_family(family, lopt_core.Adam(0.01), KEY, num_tasks=8, num_steps=20)
    losses = np.asarray(result.inner_valid_loss)
    assert losses.shape == (8, 2) and np.asarray(result.train_loss).shape == (8, 20)
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(result.train_loss))
    return losses


def test_init_family_trains_8_tasks_in_one_call():
    family = ImageMLPInitFamily(**SMALL)
    assert family.datasets is ImageMLPTask(**SMALL).datasets
    losses = _train_8(family)
    # Each task has its own init scale, so the initial losses all differ.
    assert len(np.unique(np.round(losses[:, 0], 4))) == 8
    assert np.mean(losses[:, 1] < losses[:, 0]) >= 0.75


def test_init_family_scale_and_distribution():
    family = ImageMLPInitFamily(hidden_sizes=(64,), batch_size=8)

    @jax.jit  # one compile for the three distributions: the index is an array
    def init(distribution):
        cfg = {"init_scale": jnp.array(3.0), "init_distribution": distribution}
        return family.task_fn(cfg).init(KEY)["params"]

    for distribution in family.distributions:
        params = init(jnp.array(family.distributions.index(distribution)))
        kernel = np.asarray(params["hidden_0"]["kernel"])  # fan_in 64: std should be 3 / 8
        assert kernel.shape == (64, 64)
        np.testing.assert_allclose(kernel.std(), 3.0 / 8.0, rtol=0.06)
        np.testing.assert_allclose(kernel.mean(), 0.0, atol=0.02)
        np.testing.assert_array_equal(params["hidden_0"]["bias"], 0.0)
        bound = np.abs(kernel).max() / (3.0 / 8.0)
        if distribution == "uniform":  # unit variance: within +-sqrt(3)
            assert bound <= math.sqrt(3) + 1e-5
        elif distribution == "truncated_normal":  # cut at 2 std of the untruncated normal
            assert bound <= 2.0 / 0.8796 + 1e-4
        else:
            assert bound > 2.0 / 0.8796  # 4096 normal draws go past the truncation point


def test_init_family_samples_log_uniform_scales():
    family = ImageMLPInitFamily(min_init_scale=0.5, max_init_scale=2.0, **SMALL)
    cfgs = sample_tasks_jitted(family, 64)
    scales = np.asarray(cfgs["init_scale"])
    assert np.all((scales >= 0.5) & (scales <= 2.0))
    assert set(np.asarray(cfgs["init_distribution"]).tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="0 < min_init_scale <= max_init_scale"):
        ImageMLPInitFamily(min_init_scale=0.0, **SMALL)
    with pytest.raises(ValueError, match="distributions must be a non-empty sequence"):
        ImageMLPInitFamily(distributions=("cauchy",), **SMALL)


def test_data_family_trains_8_tasks_in_one_call():
    # Batches of 32: with few kept classes, a batch of 8 often holds none (its loss is 0).
    family = ImageMLPDataFamily(hidden_sizes=(16,), batch_size=32)
    losses = _train_8(family)
    assert len(np.unique(np.round(losses[:, 0], 4))) == 8
    assert np.mean(losses[:, 1] < losses[:, 0]) >= 0.75


def test_data_family_samples_class_subsets():
    family = ImageMLPDataFamily(min_classes=3, max_label_noise=0.2, **SMALL)
    cfgs = sample_tasks_jitted(family, 64)
    counts = np.asarray(cfgs["class_mask"]).sum(axis=1)
    assert counts.min() >= 3 and counts.max() <= 10 and len(set(counts.tolist())) > 3
    noise = np.asarray(cfgs["label_noise"])
    assert np.all((noise >= 0) & (noise <= 0.2))
    with pytest.raises(ValueError, match=r"min_classes must be an int in \[1, 10\]"):
        ImageMLPDataFamily(min_classes=11, **SMALL)


def test_data_family_loss_uses_only_kept_classes_and_noise_follows_the_key():
    family = ImageMLPDataFamily(**SMALL)
    mask = jnp.zeros(10, bool).at[jnp.array([0, 3])].set(True)
    cfg = {"class_mask": mask, "label_noise": jnp.array(0.5)}
    task, clean_task = family.task_fn(cfg), family.eval_task_fn(cfg)
    params = task.init(KEY)
    batch = {"image": jnp.ones((6, 8, 8, 1)) * 0.5, "label": jnp.array([0, 3, 5, 0, 9, 3])}
    logits = family.base_task.logits(params, batch["image"])
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    kept = np.array([0, 1, 3, 5])  # the examples labelled 0 or 3
    clean_loss, noisy_loss = jax.jit(clean_task.loss), jax.jit(task.loss)
    loss = clean_loss(params, KEY, batch)
    np.testing.assert_allclose(loss, per_example[kept].mean(), rtol=1e-5)
    k1, k2 = jax.random.split(KEY)
    np.testing.assert_allclose(clean_loss(params, k1, batch), clean_loss(params, k2, batch))
    noisy = {float(noisy_loss(params, k, batch)) for k in jax.random.split(KEY, 8)}
    assert len(noisy) > 1  # label noise is redrawn from the loss key
    # Wrong labels are drawn from the kept classes: with only class 0 kept, every label stays 0.
    only_0 = {"class_mask": jnp.arange(10) == 0, "label_noise": jnp.array(1.0)}
    np.testing.assert_allclose(
        jax.jit(family.task_fn(only_0).loss)(params, k1, batch),
        per_example[np.array([0, 3])].mean(),
        rtol=1e-5,
    )


def test_activation_family_trains_8_tasks_in_one_call():
    family = ImageMLPActivationFamily(**SMALL)
    assert len(set(np.asarray(sample_tasks_jitted(family, 8)["activation"]).tolist())) > 2
    losses = _train_8(family)
    assert np.mean(losses[:, 1] < losses[:, 0]) >= 0.75


def test_activation_family_switches_to_the_named_activation():
    activations = ("relu", "tanh", "sigmoid")
    family = ImageMLPActivationFamily(activations=activations, **SMALL)
    batch = next(family.datasets.train)
    params = family.base_task.init(KEY)

    @jax.jit
    def losses(index):
        return family.task_fn({"activation": index}).loss(params, KEY, batch)

    for i, name in enumerate(activations):
        direct = ImageMLPTask(activation=name, **SMALL).loss(params, KEY, batch)
        np.testing.assert_allclose(losses(jnp.array(i)), direct, rtol=1e-5)
    with pytest.raises(ValueError, match="activations must be a non-empty sequence"):
        ImageMLPActivationFamily(activations=("relu", "mish"), **SMALL)


def test_families_compare_by_arguments_and_have_names():
    assert ImageMLPInitFamily(**SMALL) == ImageMLPInitFamily(**SMALL)
    assert hash(ImageMLPDataFamily(**SMALL)) == hash(ImageMLPDataFamily(**SMALL))
    assert ImageMLPDataFamily(**SMALL) != ImageMLPDataFamily(max_label_noise=0.1, **SMALL)
    assert ImageMLPInitFamily(**SMALL).name == "ImageMLPInitFamily_Digits8_Relu16"
    assert ImageMLPActivationFamily(**SMALL).name == "ImageMLPActivationFamily_Digits8_16"
