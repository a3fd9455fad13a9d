"""Sampled image models of the zoo: ResNets, ViTs, MLP-Mixers and autoencoders.

- ``ResNetDistribution``: ``ResNetTask`` with 1-3 stages (channels doubling
  from a drawn first width), 1-2 blocks per stage, batch or layer norm;
- ``ViTDistribution``: ``ViTTask`` with drawn patch size, depth, width,
  heads, MLP ratio and pooling;
- ``MixerDistribution``: ``MixerTask`` with drawn patch size, depth, width and
  token/channel MLP sizes;
- ``AutoencoderDistribution``: ``ImageAutoencoderTask`` (encoder, bottleneck,
  mirrored decoder) or ``ImageVAETask`` (encoder, latent, mirrored decoder);
- ``ImageZooDistribution``: any of the four, uniformly.

Every draw stays within ``max_params`` and ``max_step_mflops`` (see
``_sampling``); ``cost(task)`` counts the parameters exactly (model state such
as batch statistics is not a parameter) and the multiply-adds of the convs and
dense layers (norms and elementwise work left out). Datasets, image sizes,
activations and batch sizes are drawn as in ``image``; list only datasets you
have (``digits`` is bundled).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lopt_core import Task
from lopt_plugins.task_distributions._sampling import (
    FLOPS_PER_MAC,
    Cost,
    checked_first_draw,
    int_options,
    int_range,
    log_uniform_int,
    options,
    pick,
)
from lopt_plugins.task_distributions.image import _ImageDistribution
from lopt_plugins.task_distributions.mixture import DistributionMixture
from lopt_plugins.tasks.autoencoder import ImageAutoencoderTask, ImageVAETask
from lopt_plugins.tasks.mixer import MixerTask
from lopt_plugins.tasks.resnet import NORMS, ResNetTask
from lopt_plugins.tasks.vit import POOLINGS, ViTTask


def _dense(n_in: int, n_out: int) -> tuple[int, int]:
    """(parameters, multiply-adds per input vector) of a dense layer with bias."""
    return n_in * n_out + n_out, n_in * n_out


def _step(params: int, macs_per_example: int, task: Task) -> Cost:
    return Cost(int(params), FLOPS_PER_MAC * macs_per_example * task.batch_size / 1e6)


def resnet_cost(task: ResNetTask) -> Cost:
    """Exact parameters (batch statistics excluded) and step MFLOPs of a ``ResNetTask``."""
    height, width, c_in = task.image_shape
    c0 = task.channels[0]
    params = 9 * c_in * c0 + 2 * c0  # stem conv (no bias) and its norm's scale and bias
    macs = height * width * 9 * c_in * c0
    c_in = c0
    for stage, c in enumerate(task.channels):
        for block in range(task.blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            height, width = math.ceil(height / stride), math.ceil(width / stride)
            params += 9 * c_in * c + 9 * c * c + 4 * c
            macs += height * width * (9 * c_in * c + 9 * c * c)
            if stride != 1 or c_in != c:
                params += c_in * c + 2 * c
                macs += height * width * c_in * c
            c_in = c
    head_params, head_macs = _dense(c_in, task.num_classes)
    return _step(params + head_params, macs + head_macs, task)


def vit_cost(task: ViTTask) -> Cost:
    """Exact parameters and step MFLOPs of a ``ViTTask``."""
    c = task.image_shape[-1]
    n, d, m = task.num_patches, task.width, task.mlp_ratio * task.width
    tokens = n + (task.pooling == "cls")
    params, macs = _dense(task.patch_size**2 * c, d)
    macs *= n
    params += tokens * d + d * (task.pooling == "cls")  # position embeddings, class token
    block_params = 4 * d + 4 * d * d + 4 * d + d * m + m + m * d + d
    block_macs = tokens * (4 * d * d + 2 * d * m) + 2 * tokens * tokens * d
    head_params, head_macs = _dense(d, task.num_classes)
    params += task.depth * block_params + 2 * d + head_params
    return _step(params, macs + task.depth * block_macs + head_macs, task)


def mixer_cost(task: MixerTask) -> Cost:
    """Exact parameters and step MFLOPs of a ``MixerTask``."""
    c = task.image_shape[-1]
    n, d = task.num_patches, task.width
    t, k = task.token_mlp_dim, task.channel_mlp_dim
    params, macs = _dense(task.patch_size**2 * c, d)
    macs *= n
    block_params = 4 * d + (2 * n * t + t + n) + (2 * d * k + k + d)
    block_macs = d * 2 * n * t + n * 2 * d * k
    head_params, head_macs = _dense(d, task.num_classes)
    params += task.depth * block_params + 2 * d + head_params
    return _step(params, macs + task.depth * block_macs + head_macs, task)


def _mlp(sizes: Sequence[int]) -> tuple[int, int]:
    pairs = [_dense(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return sum(p for p, _ in pairs), sum(m for _, m in pairs)


def autoencoder_cost(task: ImageAutoencoderTask | ImageVAETask) -> Cost:
    """Exact parameters and step MFLOPs of an ``ImageAutoencoderTask`` or ``ImageVAETask``."""
    pixels, hidden = task.num_pixels, list(task.hidden_sizes)
    if isinstance(task, ImageVAETask):
        enc_p, enc_m = _mlp([pixels, *hidden])
        lat_p, lat_m = _dense(([pixels, *hidden])[-1], 2 * task.latent_size)
        dec_p, dec_m = _mlp([task.latent_size, *hidden[::-1], pixels])
        return _step(enc_p + lat_p + dec_p, enc_m + lat_m + dec_m, task)
    params, macs = _mlp([pixels, *hidden, pixels])
    return _step(params, macs, task)


def _patch_sizes(patch_sizes, image_sizes, what: str) -> tuple[int, ...]:
    sizes = int_options(patch_sizes, what)
    for image_size in image_sizes:
        if not any(image_size[0] % p == 0 and image_size[1] % p == 0 for p in sizes):
            raise ValueError(f"{what} {sizes}: none divides the image size {image_size}.")
    return sizes


def _draw_patch(rng: np.random.Generator, sizes: tuple[int, ...], image_size) -> int:
    return pick(rng, [p for p in sizes if image_size[0] % p == 0 and image_size[1] % p == 0])


class ResNetDistribution(_ImageDistribution):
    """ResNets of ``stages`` stages whose channels double from ``channels`` (log-uniform),
    ``blocks_per_stage`` blocks each, and one of ``norms`` (``batch``, ``layer``)."""

    def __init__(
        self,
        stages: tuple[int, int] = (1, 3),
        channels: tuple[int, int] = (8, 32),
        blocks_per_stage: tuple[int, int] = (1, 2),
        norms: Sequence[str] = ("batch", "layer"),
        activations: Sequence[str] = ("relu", "silu"),
        datasets: Sequence[str] = ("digits",),
        image_sizes: Sequence[tuple[int, int]] = ((8, 8),),
        batch_sizes: Sequence[int] = (16, 32, 64),
        data_dir: str | None = None,
        max_params: int = 50_000,
        max_step_mflops: float = 100.0,
        powers_of_two: bool = True,
    ):
        super().__init__(
            datasets,
            image_sizes,
            activations,
            batch_sizes,
            data_dir,
            max_params,
            max_step_mflops,
            powers_of_two,
        )
        self.stages = int_range(stages, "stages")
        self.channels = int_range(channels, "channels")
        self.blocks_per_stage = int_range(blocks_per_stage, "blocks_per_stage")
        self.norms = options(norms, "norms", tuple(NORMS))
        checked_first_draw(self)

    def draw(self, rng: np.random.Generator) -> Task:
        stages = int(rng.integers(self.stages[0], self.stages[1] + 1))
        first = log_uniform_int(rng, self.channels, self.powers_of_two)
        return ResNetTask(
            channels=tuple(first * 2**i for i in range(stages)),
            norm=pick(rng, self.norms),
            blocks_per_stage=int(
                rng.integers(self.blocks_per_stage[0], self.blocks_per_stage[1] + 1)
            ),
            **self._data(rng),
        )

    def cost(self, task: Task) -> Cost:
        return resnet_cost(task)


class ViTDistribution(_ImageDistribution):
    """ViTs with drawn patch size (one that divides the image), depth, width (log-uniform),
    heads (those of ``num_heads`` that divide the width), MLP ratio and pooling."""

    def __init__(
        self,
        patch_sizes: Sequence[int] = (2, 4),
        depth: tuple[int, int] = (1, 4),
        widths: tuple[int, int] = (16, 64),
        num_heads: Sequence[int] = (1, 2, 4),
        mlp_ratios: Sequence[int] = (2, 4),
        poolings: Sequence[str] = POOLINGS,
        activations: Sequence[str] = ("gelu", "relu"),
        datasets: Sequence[str] = ("digits",),
        image_sizes: Sequence[tuple[int, int]] = ((8, 8),),
        batch_sizes: Sequence[int] = (16, 32, 64),
        data_dir: str | None = None,
        max_params: int = 50_000,
        max_step_mflops: float = 100.0,
        powers_of_two: bool = True,
    ):
        super().__init__(
            datasets,
            image_sizes,
            activations,
            batch_sizes,
            data_dir,
            max_params,
            max_step_mflops,
            powers_of_two,
        )
        self.patch_sizes = _patch_sizes(patch_sizes, self.image_sizes, "patch_sizes")
        self.depth = int_range(depth, "depth")
        self.widths = int_range(widths, "widths")
        self.num_heads = int_options(num_heads, "num_heads")
        self.mlp_ratios = int_options(mlp_ratios, "mlp_ratios")
        self.poolings = options(poolings, "poolings", POOLINGS)
        checked_first_draw(self)

    def draw(self, rng: np.random.Generator) -> Task:
        data = self._data(rng)
        width = log_uniform_int(rng, self.widths, self.powers_of_two)
        heads = [h for h in self.num_heads if width % h == 0] or [1]
        return ViTTask(
            patch_size=_draw_patch(rng, self.patch_sizes, data["image_size"]),
            depth=int(rng.integers(self.depth[0], self.depth[1] + 1)),
            width=width,
            num_heads=pick(rng, heads),
            mlp_ratio=pick(rng, self.mlp_ratios),
            pooling=pick(rng, self.poolings),
            **data,
        )

    def cost(self, task: Task) -> Cost:
        return vit_cost(task)


class MixerDistribution(_ImageDistribution):
    """MLP-Mixers with drawn patch size, depth, width and token/channel MLP sizes
    (each log-uniform)."""

    def __init__(
        self,
        patch_sizes: Sequence[int] = (2, 4),
        depth: tuple[int, int] = (1, 4),
        widths: tuple[int, int] = (16, 64),
        token_mlp_dims: tuple[int, int] = (16, 64),
        channel_mlp_dims: tuple[int, int] = (32, 128),
        activations: Sequence[str] = ("gelu", "relu"),
        datasets: Sequence[str] = ("digits",),
        image_sizes: Sequence[tuple[int, int]] = ((8, 8),),
        batch_sizes: Sequence[int] = (16, 32, 64),
        data_dir: str | None = None,
        max_params: int = 50_000,
        max_step_mflops: float = 100.0,
        powers_of_two: bool = True,
    ):
        super().__init__(
            datasets,
            image_sizes,
            activations,
            batch_sizes,
            data_dir,
            max_params,
            max_step_mflops,
            powers_of_two,
        )
        self.patch_sizes = _patch_sizes(patch_sizes, self.image_sizes, "patch_sizes")
        self.depth = int_range(depth, "depth")
        self.widths = int_range(widths, "widths")
        self.token_mlp_dims = int_range(token_mlp_dims, "token_mlp_dims")
        self.channel_mlp_dims = int_range(channel_mlp_dims, "channel_mlp_dims")
        checked_first_draw(self)

    def draw(self, rng: np.random.Generator) -> Task:
        data = self._data(rng)
        return MixerTask(
            patch_size=_draw_patch(rng, self.patch_sizes, data["image_size"]),
            depth=int(rng.integers(self.depth[0], self.depth[1] + 1)),
            width=log_uniform_int(rng, self.widths, self.powers_of_two),
            token_mlp_dim=log_uniform_int(rng, self.token_mlp_dims, self.powers_of_two),
            channel_mlp_dim=log_uniform_int(rng, self.channel_mlp_dims, self.powers_of_two),
            **data,
        )

    def cost(self, task: Task) -> Cost:
        return mixer_cost(task)


class AutoencoderDistribution(_ImageDistribution):
    """Autoencoders (``kinds``: ``ae``, ``vae``) with ``depth`` encoder layers of ``widths``
    (log-uniform), a bottleneck or latent of ``latent_sizes`` and the mirrored decoder."""

    KINDS = ("ae", "vae")

    def __init__(
        self,
        kinds: Sequence[str] = KINDS,
        depth: tuple[int, int] = (1, 2),
        widths: tuple[int, int] = (16, 128),
        latent_sizes: tuple[int, int] = (4, 32),
        activations: Sequence[str] = ("relu", "tanh", "gelu", "silu"),
        datasets: Sequence[str] = ("digits",),
        image_sizes: Sequence[tuple[int, int]] = ((8, 8),),
        batch_sizes: Sequence[int] = (32, 64, 128),
        data_dir: str | None = None,
        max_params: int = 50_000,
        max_step_mflops: float = 50.0,
        powers_of_two: bool = True,
    ):
        super().__init__(
            datasets,
            image_sizes,
            activations,
            batch_sizes,
            data_dir,
            max_params,
            max_step_mflops,
            powers_of_two,
        )
        self.kinds = options(kinds, "kinds", self.KINDS)
        self.depth = int_range(depth, "depth")
        self.widths = int_range(widths, "widths")
        self.latent_sizes = int_range(latent_sizes, "latent_sizes")
        checked_first_draw(self)

    def draw(self, rng: np.random.Generator) -> Task:
        kind = pick(rng, self.kinds)
        depth = int(rng.integers(self.depth[0], self.depth[1] + 1))
        encoder = sorted(
            (log_uniform_int(rng, self.widths, self.powers_of_two) for _ in range(depth)),
            reverse=True,
        )
        latent = log_uniform_int(rng, self.latent_sizes, self.powers_of_two)
        if kind == "vae":
            return ImageVAETask(hidden_sizes=encoder, latent_size=latent, **self._data(rng))
        hidden = (*encoder, latent, *encoder[::-1])
        return ImageAutoencoderTask(hidden_sizes=hidden, **self._data(rng))

    def cost(self, task: Task) -> Cost:
        return autoencoder_cost(task)


class ImageZooDistribution(DistributionMixture):
    """A draw of a ResNet, ViT, Mixer or autoencoder distribution, uniformly (default: each
    with its defaults; pass None to keep one's default)."""

    def __init__(
        self,
        resnet: ResNetDistribution | None = None,
        vit: ViTDistribution | None = None,
        mixer: MixerDistribution | None = None,
        autoencoder: AutoencoderDistribution | None = None,
    ):
        super().__init__(
            (
                resnet or ResNetDistribution(),
                vit or ViTDistribution(),
                mixer or MixerDistribution(),
                autoencoder or AutoencoderDistribution(),
            ),
            name="ImageZooDistribution",
        )


# For the package's registry: name -> factory (kind ``task_distribution``).
DISTRIBUTIONS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        ResNetDistribution,
        ViTDistribution,
        MixerDistribution,
        AutoencoderDistribution,
        ImageZooDistribution,
    )
}

__all__ = [
    "DISTRIBUTIONS",
    "autoencoder_cost",
    "mixer_cost",
    "resnet_cost",
    "vit_cost",
    *DISTRIBUTIONS,
]
