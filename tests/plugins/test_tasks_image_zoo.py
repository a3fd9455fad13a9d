"""The image zoo: autoencoders, VAEs, ResNets (batch and layer norm), ViTs, MLP-Mixers and
their distributions, on the bundled 8x8 digits (tiny models, small batches, one compile each)."""

from __future__ import annotations

import functools
import json
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt_core
from helpers import DOCS_DIR
from lopt_plugins import datasets
from lopt_plugins.learned_optimizers import LearnableAdam
from lopt_plugins.task_distributions import image_zoo
from lopt_plugins.tasks import autoencoder, mixer, resnet, vit
from lopt_plugins.tasks.autoencoder import ImageAutoencoderTask, ImageVAETask
from lopt_plugins.tasks.mixer import MixerTask
from lopt_plugins.tasks.resnet import ResNetTask
from lopt_plugins.tasks.vit import ViTTask

KEY = jax.random.PRNGKey(0)
LOG10 = math.log(10)
BATCH = 16
CHANNELS = {"digits": 1, "mnist": 1, "fashion_mnist": 1, "kmnist": 1, "cifar10": 3}

# kind -> (tiny task on 8x8 digits, Adam learning rate, normalized loss after 100 steps below).
# The thresholds leave a margin over the worst of 8 seeds measured (0.59, 0.62, 0.57, 0.67,
# 0.71, 0.59 in this order); every kind starts at about 1.
TINY = {
    "ae": (lambda: ImageAutoencoderTask(hidden_sizes=(32, 8, 32), batch_size=BATCH), 1e-2, 0.8),
    "vae": (lambda: ImageVAETask(hidden_sizes=(32,), latent_size=8, batch_size=BATCH), 1e-2, 0.8),
    "resnet_bn": (lambda: ResNetTask(channels=(8, 16), batch_size=BATCH), 1e-2, 0.8),
    "resnet_ln": (lambda: ResNetTask(channels=(8, 16), norm="layer", batch_size=BATCH), 1e-2, 0.85),
    "vit": (lambda: ViTTask(depth=1, width=16, batch_size=BATCH), 3e-3, 0.85),
    "mixer": (lambda: MixerTask(depth=1, width=16, batch_size=BATCH), 3e-3, 0.8),
}


def _num_params(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _task_params(task) -> int:
    return _num_params(jax.eval_shape(task.init, KEY))


@functools.cache
def _trained(kind: str) -> tuple[lopt_core.Task, lopt_core.TrainResult]:
    """8 seeds of the tiny ``kind`` trained 100 Adam steps in one vmapped call (one compile,
    shared by the tests that read it)."""
    make, lr, _ = TINY[kind]
    task = make()
    family = lopt_core.single_task_to_family(task)
    result = lopt_core.train_family(
        family, lopt_core.Adam(lr), KEY, 8, 100, num_eval_batches=4, eval_splits=("inner_valid",)
    )
    return task, result


@pytest.mark.parametrize("kind", sorted(TINY))
def test_eight_seeds_start_sensibly_and_learn(kind):
    """Finite losses for every seed; about 1 normalized at init, clearly lower after 100 steps."""
    task, result = _trained(kind)
    losses = np.asarray(result.inner_valid_loss)  # [seeds, 2]: init and after 100 steps
    assert losses.shape == (8, 2) and np.all(np.isfinite(losses))
    assert np.all(np.isfinite(np.asarray(result.train_loss)))
    normalized = np.asarray(task.normalizer(jnp.asarray(losses)))
    if kind in ("ae", "vae"):
        assert np.all(np.abs(normalized[:, 0] - 1.0) < 0.25), normalized[:, 0]
    else:
        assert np.all(np.abs(losses[:, 0] - LOG10) < 0.3), losses[:, 0]
    # The digits iterators are shared with earlier tests, so the batches (and the slowest
    # seed) depend on test order: the median learns clearly, every seed learns something.
    assert np.median(normalized[:, 1]) < TINY[kind][2], normalized[:, 1]
    assert np.all(normalized[:, 1] < 0.95 * normalized[:, 0]), normalized


def test_batch_norm_statistics_are_model_state_updated_by_training():
    task, result = _trained("resnet_bn")
    batch = next(task.datasets.test)

    @jax.jit  # one compile for all of it: eager flax code dispatches op by op, slowly
    def check(trained_params, trained_state, batch):
        params, state = task.init_with_state(KEY)
        # The smallest over seeds of the largest change of each statistic.
        moved = jax.tree_util.tree_map(
            lambda t, s: jnp.min(jnp.max(jnp.abs(t - s), axis=-1)), trained_state, state
        )
        params, trained_state = jax.tree_util.tree_map(
            lambda x: x[0], (trained_params, trained_state)
        )
        loss, new_state, _ = task.loss_with_state_and_aux(params, state, KEY, batch)
        stateless = task.loss(params, KEY, batch)
        running = task.logits(params, batch["image"], state=trained_state, train=False)
        return state, moved, loss, new_state, stateless, running

    state, moved, loss, new_state, stateless, running = check(
        result.params, result.model_state, batch
    )
    assert set(state) == {"batch_stats"} and set(result.params) == {"params"}
    structure = jax.tree_util.tree_structure(state)
    assert jax.tree_util.tree_structure(result.model_state) == structure
    assert jax.tree_util.tree_structure(new_state) == structure
    assert all(float(d) > 1e-3 for d in jax.tree_util.tree_leaves(moved)), moved
    # Training-mode losses do not depend on the running statistics; inference uses them.
    assert jnp.allclose(loss, stateless, rtol=1e-5)
    assert running.shape == (BATCH, 10) and bool(jnp.all(jnp.isfinite(running)))
    layer_norm = TINY["resnet_ln"][0]()
    assert jax.eval_shape(layer_norm.init_with_state, KEY)[1] is None  # stateless


def test_patch_conv_equals_flax_conv():
    x = jax.random.normal(KEY, (2, 7, 7, 3))
    for kernel_size, stride in ((3, 1), (3, 2), (1, 2)):
        conv = nn.Conv(5, (kernel_size,) * 2, strides=stride, padding="SAME", use_bias=False)
        params = conv.init(KEY, x)
        assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(
            jnp.shape, resnet.PatchConv(5, kernel_size, stride).init(KEY, x)
        )
        ours = jax.jit(resnet.PatchConv(5, kernel_size, stride).apply)(params, x)
        np.testing.assert_allclose(ours, jax.jit(conv.apply)(params, x), atol=1e-5)


@pytest.mark.parametrize(
    "estimator",
    [
        functools.partial(lopt_core.outer.TruncatedPES, trunc_length=2),
        lopt_core.outer.FullES,
        functools.partial(lopt_core.outer.TruncatedGrad, trunc_length=2),
    ],
    ids=["TruncatedPES", "FullES", "TruncatedGrad"],
)
def test_a_batch_norm_task_meta_trains_with_every_estimator(tmp_path, estimator):
    # Model state (batch statistics) flows through the truncated step and each estimator.
    result = lopt_core.meta_train(
        tmp_path,
        task_family=ResNetTask(channels=(4,), batch_size=8),
        learned_optimizer=LearnableAdam(),
        gradient_estimator=estimator,
        truncation_schedule=lopt_core.outer.ConstantTruncationSchedule(4),
        num_tasks=2,
        num_steps=2,
        progress=False,
    )
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert np.all(np.isfinite([r["meta_loss"] for r in rows]))
    assert np.isfinite(result.last_metrics["meta_loss"])


def test_vae_noise_comes_from_the_key():
    task = TINY["vae"][0]()
    params = jax.jit(task.init)(KEY)
    batch = next(task.datasets.test)
    loss_and_aux = jax.jit(task.loss_and_aux)
    one = loss_and_aux(params, jax.random.PRNGKey(1), batch)[0]
    assert float(one) == float(loss_and_aux(params, jax.random.PRNGKey(1), batch)[0])
    assert float(one) != float(loss_and_aux(params, jax.random.PRNGKey(2), batch)[0])
    _, aux = loss_and_aux(params, KEY, batch)
    assert set(aux) == {"reconstruction", "kl"} and float(aux["kl"]) > 0


def test_normalizers_clip_and_map_non_finite_to_the_max():
    losses = jnp.array([0.0, math.log(2), 100.0, jnp.nan, jnp.inf])
    out = TINY["ae"][0]().normalizer(losses)
    np.testing.assert_allclose(out, [0.0, 1.0, 1.5, 1.5, 1.5], rtol=1e-6)
    out = TINY["vit"][0]().normalizer(jnp.array([LOG10, jnp.nan]))
    np.testing.assert_allclose(out, [1.0, 1.5], rtol=1e-6)


def test_names_and_equality_follow_the_arguments():
    assert TINY["ae"][0]().name == "ImageMLPAE_Digits8_32x8x32"
    assert TINY["vae"][0]().name == "ImageMLPVAE_Digits8_32x32x8"
    assert ResNetTask(blocks_per_stage=2, activation="silu", batch_size=8).name == (
        "ResNet_Digits8_BN_8x16_B2_Silu"
    )
    assert TINY["resnet_ln"][0]().name == "ResNet_Digits8_LN_8x16"
    assert ViTTask(pooling="mean", mlp_ratio=4, batch_size=8).name == (
        "ViT_Digits8_P2_D2_W32_H2_R4_MeanPool"
    )
    assert MixerTask(activation="relu", batch_size=8).name == "Mixer_Digits8_P2_D2_W32_T32_C64_Relu"
    for make, *_ in TINY.values():
        a, b = make(), make()
        assert a == b and hash(a) == hash(b)
        assert repr(a).startswith(type(a).__name__ + "(dataset='digits'")
    assert ViTTask(batch_size=8) != ViTTask(num_heads=4, batch_size=8)
    assert ResNetTask(batch_size=8) != ResNetTask(norm="layer", batch_size=8)
    assert ImageVAETask(batch_size=8) != ImageVAETask(latent_size=4, batch_size=8)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ViTTask(patch_size=3), "patch_size=3 must divide"),
        (lambda: ViTTask(width=30, num_heads=4), "num_heads=4 must divide width=30"),
        (lambda: MixerTask(patch_size=5), "must divide the image size"),
        (lambda: ResNetTask(norm="group"), "norm"),
        (lambda: ImageAutoencoderTask(hidden_sizes=()), "hidden_sizes"),
        (lambda: ImageVAETask(latent_size=0), "latent_size"),
    ],
)
def test_bad_arguments_say_what_is_wrong(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def zoo_param_counts() -> dict[str, int]:
    """``{preset name: parameter count}`` of every zoo preset, from its module (no data)."""
    counts = {}

    def count(name, module, images, *args):
        variables = jax.eval_shape(lambda k: module.init(k, images, *args), KEY)
        counts[name] = _num_params(variables["params"])  # not batch norm's statistics

    def images(dataset, size):
        return jnp.zeros((1, *size, CHANNELS[dataset]))

    for name, dataset, size, hidden in autoencoder._AE_PRESETS:
        pixels = math.prod(size) * CHANNELS[dataset]
        module = autoencoder.MLPAutoencoder(hidden, pixels)
        count(name, module, images(dataset, size), jax.nn.relu)
    for name, dataset, size, hidden, latent in autoencoder._VAE_PRESETS:
        pixels = math.prod(size) * CHANNELS[dataset]
        module = autoencoder.MLPVAE(hidden, latent, pixels)
        count(name, module, images(dataset, size), jnp.zeros((1, latent)), jax.nn.relu)
    for name, dataset, size, channels, norm in resnet._PRESETS:
        count(name, resnet.ResNet(channels, 10, 1, norm), images(dataset, size), jax.nn.relu)
    for name, dataset, size, patch, depth, width, heads in vit._PRESETS:
        module = vit.ViT(patch, depth, width, heads, 2 * width, 10)
        count(name, module, images(dataset, size), jax.nn.gelu)
    for name, dataset, size, patch, depth, width, tokens, channels in mixer._PRESETS:
        module = mixer.Mixer(patch, depth, width, tokens, channels, 10)
        count(name, module, images(dataset, size), jax.nn.gelu)
    return counts


def test_documented_parameter_counts_match_the_models_and_digits_presets_build():
    text = (DOCS_DIR / "tasks.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \|.*?\| ([\d,]+) \| `image", text, re.MULTILINE)
    documented = {name: int(count.replace(",", "")) for name, count in rows}
    counts = zoo_param_counts()
    assert {name: documented.get(name) for name in counts} == counts
    presets = {**autoencoder.PRESETS, **resnet.PRESETS, **vit.PRESETS, **mixer.PRESETS}
    assert set(presets) == set(counts)
    for name, cls in presets.items():
        assert cls.__name__ == name
        if "Digits" in name:
            task = cls(batch_size=BATCH)
            assert task.name == name and _task_params(task) == counts[name]
    for cls in (ImageAutoencoderTask, ImageVAETask, ResNetTask, ViTTask, MixerTask):
        assert f"**`{cls.__name__}(" in text


def test_file_backed_presets_without_data_raise_the_datasets_error(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    for preset in (
        autoencoder.ImageMLPVAE_Mnist_128x128x32,
        resnet.ResNet_Cifar10_BN_16x32x64,
        vit.ViT_Mnist_P4_D4_W64_H4,
        mixer.Mixer_Cifar10_P4_D4_W64_T64_C128,
    ):
        with pytest.raises(datasets.DatasetNotFoundError):
            preset(batch_size=BATCH, data_dir=str(tmp_path))


DISTRIBUTIONS = {
    "resnet": (image_zoo.ResNetDistribution, image_zoo.resnet_cost),
    "vit": (image_zoo.ViTDistribution, image_zoo.vit_cost),
    "mixer": (image_zoo.MixerDistribution, image_zoo.mixer_cost),
    "autoencoder": (image_zoo.AutoencoderDistribution, image_zoo.autoencoder_cost),
}


@pytest.mark.parametrize("kind", sorted(DISTRIBUTIONS))
def test_distributions_draw_within_bounds_with_exact_parameter_counts(kind):
    cls, cost = DISTRIBUTIONS[kind]
    distribution = cls(max_params=20_000, max_step_mflops=50.0)
    tasks = [distribution.sample(jax.random.PRNGKey(i)).task for i in range(8)]
    assert len({t.name for t in tasks}) > 2
    for task in tasks:
        c = distribution.cost(task)
        assert c == cost(task)
        assert c.params <= 20_000 and 0 < c.step_mflops <= 50.0
        assert c.params == _task_params(task), task.name
    again = distribution.sample(jax.random.PRNGKey(3))
    assert again == distribution.sample(jax.random.PRNGKey(3))


def test_zoo_mixture_draws_every_kind():
    small = dict(max_params=20_000, max_step_mflops=50.0)
    zoo = image_zoo.ImageZooDistribution(
        image_zoo.ResNetDistribution(**small),
        image_zoo.ViTDistribution(**small),
        image_zoo.MixerDistribution(**small),
        image_zoo.AutoencoderDistribution(**small),
    )
    prefixes = {zoo.sample(jax.random.PRNGKey(i)).name.split("_")[0] for i in range(40)}
    assert prefixes == {"ResNet", "ViT", "Mixer", "ImageMLPAE", "ImageMLPVAE"}


def test_distribution_arguments_are_checked():
    with pytest.raises(ValueError, match="none divides the image size"):
        image_zoo.ViTDistribution(patch_sizes=(3,))
    with pytest.raises(ValueError, match="unknown"):
        image_zoo.ResNetDistribution(norms=("group",))
    with pytest.raises(ValueError, match="no draw"):
        image_zoo.MixerDistribution(max_params=100)
