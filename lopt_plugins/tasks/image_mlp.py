"""MLP classifiers on image datasets: a parametric builder and named presets.

Preset names follow ``learned_optimization``: ``ImageMLP_<Dataset><size>_<Act><hidden sizes>``,
e.g. ``ImageMLP_Digits8_Relu32`` is one hidden layer of 32 relu units on 8x8
digits; a dataset at its native size (28 for the MNIST family, 32 for
cifar10) drops the size, as in ``ImageMLP_FashionMnist_Relu128x128``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax

from lopt_core import Datasets
from lopt_core.validation import positive_int_tuple
from lopt_plugins.tasks._common import ACTIVATION_TAGS
from lopt_plugins.tasks._image import ImageClassificationTask, preset


class MLP(nn.Module):
    """Flatten, ``hidden_sizes`` dense layers with ``activation``, then ``num_classes`` logits."""

    hidden_sizes: Sequence[int]
    num_classes: int

    @nn.compact
    def __call__(self, images: jax.Array, activation: Callable[[jax.Array], jax.Array]):
        x = images.reshape((images.shape[0], -1))
        for i, size in enumerate(self.hidden_sizes):
            x = activation(nn.Dense(size, name=f"hidden_{i}")(x))
        return nn.Dense(self.num_classes, name="logits")(x)


class ImageMLPTask(ImageClassificationTask):
    """An MLP classifier on an image dataset.

    ``dataset`` is the name of a registered dataset (the built-in ``digits``,
    ``mnist``, ``fashion_mnist``, ``kmnist``, ``cifar10``, or a plugin's) built
    at ``image_size`` with ``batch_size``, or a ``lopt_core.Datasets`` of image
    batches (``batch_size`` and ``data_dir`` then play no part); either way its
    images must be ``image_size``. ``data_dir`` is passed to datasets read from
    files. Loss, extras and
    normalizer: see ``ImageClassificationTask`` (normalized loss = loss / log(classes)).
    """

    def __init__(
        self,
        dataset: str | Datasets = "digits",
        image_size: tuple[int, int] = (8, 8),
        hidden_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        batch_size: int = 128,
        data_dir: str | None = None,
    ):
        self.hidden_sizes = positive_int_tuple(hidden_sizes, "hidden_sizes")
        super().__init__(dataset, image_size, batch_size, data_dir, activation)
        self.module = MLP(self.hidden_sizes, self.num_classes)
        self._set_args(dataset, ("hidden_sizes", self.hidden_sizes), data_dir)
        sizes = "x".join(str(s) for s in self.hidden_sizes) or "Linear"
        self.name = f"ImageMLP_{self.dataset_tag}_{ACTIVATION_TAGS[activation]}{sizes}"


# (name, dataset, image size, hidden sizes, activation)
_PRESETS: tuple[tuple[str, str, tuple[int, int], tuple[int, ...], str], ...] = (
    ("ImageMLP_Digits8_Relu32", "digits", (8, 8), (32,), "relu"),
    ("ImageMLP_Digits8_Relu64x32", "digits", (8, 8), (64, 32), "relu"),
    ("ImageMLP_Digits8_Tanh32", "digits", (8, 8), (32,), "tanh"),
    ("ImageMLP_Mnist8_Relu32", "mnist", (8, 8), (32,), "relu"),
    ("ImageMLP_FashionMnist8_Relu32", "fashion_mnist", (8, 8), (32,), "relu"),
    ("ImageMLP_Kmnist8_Relu32", "kmnist", (8, 8), (32,), "relu"),
    ("ImageMLP_Mnist_Relu128x128", "mnist", (28, 28), (128, 128), "relu"),
    ("ImageMLP_FashionMnist_Relu128x128", "fashion_mnist", (28, 28), (128, 128), "relu"),
    ("ImageMLP_Cifar10_8_Relu32", "cifar10", (8, 8), (32,), "relu"),
    ("ImageMLP_Cifar10_Relu128x128", "cifar10", (32, 32), (128, 128), "relu"),
)

PRESETS: dict[str, type[ImageMLPTask]] = {}
for _name, _dataset, _size, _hidden, _act in _PRESETS:
    PRESETS[_name] = preset(
        _name,
        ImageMLPTask,
        f"MLP with hidden layers {_hidden} ({_act}) on {_dataset} at {_size[0]}x{_size[1]}; "
        "normalized loss = cross-entropy / log(num_classes), clipped to [0, 1.5].",
        dataset=_dataset,
        image_size=_size,
        hidden_sizes=_hidden,
        activation=_act,
    )
# Module attributes, so that presets import and pickle by name.
globals().update(PRESETS)
