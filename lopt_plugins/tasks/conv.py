"""Small conv-net classifiers on image datasets: a parametric builder and named presets.

Names follow ``learned_optimization``: ``Conv_<Dataset><size>_<channels>``,
e.g. ``Conv_Digits8_8x16`` (two conv layers of 8 and 16 channels on 8x8
digits); a dataset at its native size drops the size (``Conv_Mnist_16x32``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lopt_core import Datasets
from lopt_core.validation import one_of, positive_int, positive_int_tuple
from lopt_plugins.tasks._common import ACTIVATION_TAGS
from lopt_plugins.tasks._image import ImageClassificationTask, preset

POOLINGS = {"mean": jnp.mean, "max": jnp.max}


class ConvNet(nn.Module):
    """Stride-2 convolutions with ``channels``, global ``pooling``, then dense logits."""

    channels: Sequence[int]
    num_classes: int
    kernel_size: int = 3
    pooling: str = "mean"

    @nn.compact
    def __call__(self, images: jax.Array, activation: Callable[[jax.Array], jax.Array]):
        x = images
        kernel = (self.kernel_size, self.kernel_size)
        for i, c in enumerate(self.channels):
            x = activation(nn.Conv(c, kernel, strides=(2, 2), padding="SAME", name=f"conv_{i}")(x))
        x = POOLINGS[self.pooling](x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="logits")(x)


class ImageConvTask(ImageClassificationTask):
    """A small conv net classifier on an image dataset.

    Each entry of ``channels`` is a ``kernel_size`` x ``kernel_size`` stride-2
    conv layer (so each halves the image), followed by ``activation``; then a
    global ``pooling`` (``"mean"`` or ``"max"``) and a dense layer to the class
    logits. ``dataset``, ``image_size``, ``batch_size`` and ``data_dir`` are as
    for ``ImageMLPTask``. Normalized loss = cross-entropy /
    log(num_classes), clipped to [0, 1.5].
    """

    def __init__(
        self,
        dataset: str | Datasets = "digits",
        image_size: tuple[int, int] = (8, 8),
        channels: Sequence[int] = (8, 16),
        activation: str = "relu",
        batch_size: int = 128,
        data_dir: str | None = None,
        kernel_size: int = 3,
        pooling: str = "mean",
    ):
        self.channels = positive_int_tuple(channels, "channels", allow_empty=False)
        self.kernel_size = positive_int(kernel_size, "kernel_size")
        self.pooling = one_of(pooling, "pooling", POOLINGS)
        super().__init__(dataset, image_size, batch_size, data_dir, activation)
        self.module = ConvNet(self.channels, self.num_classes, self.kernel_size, self.pooling)
        self._set_args(dataset, ("channels", self.channels), data_dir)
        self._args += (("kernel_size", self.kernel_size), ("pooling", self.pooling))
        channels = "x".join(str(c) for c in self.channels)
        act = "" if activation == "relu" else f"_{ACTIVATION_TAGS[activation]}"
        kernel = "" if self.kernel_size == 3 else f"_K{self.kernel_size}"
        pool = "" if self.pooling == "mean" else f"_{self.pooling.capitalize()}Pool"
        self.name = f"Conv_{self.dataset_tag}_{channels}{act}{kernel}{pool}"


# (name, dataset, image size, channels)
_PRESETS: tuple[tuple[str, str, tuple[int, int], tuple[int, ...]], ...] = (
    ("Conv_Digits8_8x16", "digits", (8, 8), (8, 16)),
    ("Conv_Mnist8_8x16", "mnist", (8, 8), (8, 16)),
    ("Conv_Mnist_16x32", "mnist", (28, 28), (16, 32)),
    ("Conv_FashionMnist_16x32", "fashion_mnist", (28, 28), (16, 32)),
    ("Conv_Kmnist_16x32", "kmnist", (28, 28), (16, 32)),
    ("Conv_Cifar10_8_16x32", "cifar10", (8, 8), (16, 32)),
    ("Conv_Cifar10_32x64x64", "cifar10", (32, 32), (32, 64, 64)),
)

PRESETS: dict[str, type[ImageConvTask]] = {}
for _name, _dataset, _size, _channels in _PRESETS:
    PRESETS[_name] = preset(
        _name,
        ImageConvTask,
        f"Conv net with channels {_channels} (relu) on {_dataset} at {_size[0]}x{_size[1]}; "
        "normalized loss = cross-entropy / log(num_classes), clipped to [0, 1.5].",
        dataset=_dataset,
        image_size=_size,
        channels=_channels,
        activation="relu",
    )
# Module attributes, so that presets import and pickle by name.
globals().update(PRESETS)
