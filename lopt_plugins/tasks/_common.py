"""Pieces shared by the built-in tasks: datasets by name, activations, losses, normalizers.

Normalizer convention (every built-in task follows it): ``normalizer(loss)`` is
about 1 at initialization and 0 at a perfect solution, is clipped to
``[0, max_value]`` and maps NaN/inf to ``max_value``, so that a diverged run
counts as "as bad as it gets" instead of poisoning a meta-loss average.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lopt_core import Datasets
from lopt_core.validation import positive_int, positive_int_tuple

# Built-in image datasets: name -> (name in tasks' names, native image size, needs files).
IMAGE_DATASETS: dict[str, tuple[str, tuple[int, int], bool]] = {
    "digits": ("Digits", (8, 8), False),
    "mnist": ("Mnist", (28, 28), True),
    "fashion_mnist": ("FashionMnist", (28, 28), True),
    "kmnist": ("Kmnist", (28, 28), True),
    "cifar10": ("Cifar10", (32, 32), True),
}

# Activations by name, in a fixed order: ActivationFamily indices refer to this order.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "sigmoid": jax.nn.sigmoid,
    "leaky_relu": jax.nn.leaky_relu,
    "softplus": jax.nn.softplus,
}

ACTIVATION_TAGS: dict[str, str] = {
    "relu": "Relu",
    "tanh": "Tanh",
    "gelu": "Gelu",
    "silu": "Silu",
    "elu": "Elu",
    "sigmoid": "Sigmoid",
    "leaky_relu": "LeakyRelu",
    "softplus": "Softplus",
}

# A classifier or LM doing worse than 1.5x chance is as bad as a diverged one.
CLASSIFICATION_MAX = 1.5


def clipped(x: jax.Array, max_value: float) -> jax.Array:
    """``x`` clipped to ``[0, max_value]``, with NaN and +-inf mapped to ``max_value``."""
    x = jnp.nan_to_num(x, nan=max_value, posinf=max_value, neginf=max_value)
    return jnp.clip(x, 0.0, max_value)


def classification_normalizer(loss: jax.Array, num_classes: int) -> jax.Array:
    """Cross-entropy divided by ``log(num_classes)`` (chance level = 1), clipped to [0, 1.5]."""
    return clipped(loss / math.log(num_classes), CLASSIFICATION_MAX)


def classification_loss_and_aux(
    logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean softmax cross-entropy over all leading axes, and ``accuracy``.

    ``weights`` (same shape as ``labels``) gives a weighted mean; a batch whose
    weights are all zero has loss 0 rather than NaN.
    """
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(losses.dtype)
    if weights is None:
        return jnp.mean(losses), {"accuracy": jnp.mean(correct)}
    weights = weights.astype(losses.dtype)
    total = jnp.maximum(jnp.sum(weights), 1.0)
    return jnp.sum(weights * losses) / total, {"accuracy": jnp.sum(weights * correct) / total}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation called ``name``; a ValueError lists the known ones."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r}; the known activations are {', '.join(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]


def size_tag(image_size: tuple[int, int]) -> str:
    """``8`` for 8x8, ``8x12`` for 8x12: the image size as it appears in task names."""
    h, w = image_size
    return str(h) if h == w else f"{h}x{w}"


def image_datasets(
    dataset: str | Datasets, image_size: Any, batch_size: int, data_dir: str | None
) -> tuple[Datasets, str, tuple[int, int]]:
    """Resolve ``dataset`` to ``(Datasets, tag for names, image size)``.

    A name is looked up among ``IMAGE_DATASETS`` and built by the matching
    ``lopt_plugins.datasets`` function (cached there, so tasks share data); a
    ``Datasets`` is used as is, after checking that it matches ``image_size``.
    """
    image_size = positive_int_tuple(image_size, "image_size")
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (height, width), got {image_size!r}.")
    batch_size = positive_int(batch_size, "batch_size")
    if isinstance(dataset, Datasets):
        shape = image_shape(dataset)
        if tuple(shape[:2]) != image_size:
            raise ValueError(
                f"The Datasets given has images of shape {shape}, but image_size={image_size}; "
                f"pass image_size={tuple(shape[:2])} so that the task describes its data."
            )
        name = str(dataset.extra_info.get("name", "Custom"))
        return dataset, _image_tag(name, image_size), image_size
    if dataset not in IMAGE_DATASETS:
        raise ValueError(
            f"Unknown image dataset {dataset!r}; the built-in ones are "
            f"{', '.join(IMAGE_DATASETS)}. Or pass a lopt_core.Datasets of image batches."
        )
    needs_files = IMAGE_DATASETS[dataset][2]
    # Imported here: importing the tasks plugin must not import the datasets' dependencies.
    from lopt_plugins import datasets as builtin_datasets

    builder = getattr(builtin_datasets, dataset)
    if needs_files:
        built = builder(batch_size=batch_size, image_size=image_size, data_dir=data_dir)
    else:
        if data_dir is not None:
            raise ValueError(
                f"The {dataset!r} dataset is bundled and takes no data_dir (got {data_dir!r})."
            )
        built = builder(batch_size=batch_size, image_size=image_size)
    return built, _image_tag(dataset, image_size), image_size


def _image_tag(dataset: str, image_size: tuple[int, int]) -> str:
    """How a dataset at a size appears in task names: ``Digits8``, ``Cifar10_8``, ``Mnist28``."""
    display = IMAGE_DATASETS[dataset][0] if dataset in IMAGE_DATASETS else dataset
    sep = "_" if display[-1:].isdigit() else ""
    return f"{display}{sep}{size_tag(image_size)}"


def image_shape(datasets: Datasets) -> tuple[int, int, int]:
    """``(height, width, channels)`` of a dataset's images, from ``extra_info`` or its batch."""
    shape = datasets.extra_info.get("image_shape")
    if shape is None and datasets.abstract_batch is not None:
        try:
            shape = datasets.abstract_batch["image"].shape[1:]
        except (KeyError, TypeError, AttributeError):
            shape = None
    if shape is None or len(shape) != 3:
        raise ValueError(
            "An image task needs the image shape (H, W, C) of its dataset, in "
            "Datasets.extra_info['image_shape'] or as abstract_batch['image'] of shape "
            f"[B, H, W, C]; got extra_info={datasets.extra_info!r}, "
            f"abstract_batch={datasets.abstract_batch!r}."
        )
    return tuple(int(s) for s in shape)


def extra_int(datasets: Datasets, key: str, task: str) -> int:
    """``datasets.extra_info[key]`` as an int, or an error saying which task needs it."""
    if key not in datasets.extra_info:
        raise ValueError(
            f"{task} needs Datasets.extra_info[{key!r}], but the dataset's extra_info has only "
            f"{sorted(datasets.extra_info)}."
        )
    return int(datasets.extra_info[key])


class ArgsEquality:
    """Equality and hash by type and constructor arguments.

    The training loops cache compiled code on the task (a static jit argument),
    so two equal tasks, e.g. built twice from one gin config, share one compile.
    """

    # ((argument name, value), ...), set by the constructor.
    _args: tuple = ()

    def _key(self) -> tuple:
        return (type(self), self._args)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._args)
        return f"{type(self).__name__}({args})"
