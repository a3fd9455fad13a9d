"""The base of the image classification tasks (MLP and conv), and named presets of them."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lopt_core import Datasets, Task
from lopt_core.validation import positive_int
from lopt_plugins.tasks._common import (
    ArgsEquality,
    activation_fn,
    classification_loss_and_aux,
    classification_normalizer,
)
from lopt_plugins.tasks._data import (
    BUILTIN_DATASETS,
    extra_int,
    image_datasets,
    image_shape,
    takes_argument,
)

Batch = dict[str, Any]


class ImageClassificationTask(ArgsEquality, Task):
    """A flax classifier of ``batch["image"]`` (float32 [B, H, W, C]) into ``batch["label"]``.

    Loss: mean softmax cross-entropy; extras: ``accuracy``. Normalizer:
    ``loss / log(num_classes)`` (about 1 at init, chance level), clipped to
    [0, 1.5] with NaN/inf mapped to 1.5. Subclasses set ``module``, a flax
    module called as ``module(images, activation)``, and ``name``.

    The data is built when the task is constructed, by the dataset registered
    under the name given (and shared between tasks through the datasets'
    cache); a dataset that needs files not present fails then, with the
    datasets' error. Image shape and ``num_classes`` are read from the built
    ``Datasets`` (``extra_info``, or its abstract batch for the shape).
    """

    module: nn.Module

    def __init__(
        self,
        dataset: str | Datasets,
        image_size: Any,
        batch_size: int,
        data_dir: str | None,
        activation: str,
    ):
        self.activation = activation
        self._activation_fn = activation_fn(activation)
        batch_size = positive_int(batch_size, "batch_size")
        self.datasets, self.dataset_tag, self.image_size = image_datasets(
            dataset, image_size, batch_size, data_dir
        )
        self.image_shape = image_shape(self.datasets)
        self.num_classes = extra_int(self.datasets, "num_classes", type(self).__name__)
        self.batch_size = batch_size

    def _set_args(
        self, dataset: str | Datasets, architecture: tuple[str, Any], data_dir: str | None
    ) -> None:
        """Set ``_args`` (equality, hash, repr): the constructor's arguments in its order,
        ``architecture`` being the ``(name, value)`` that follows ``image_size``."""
        self._args = (
            ("dataset", dataset),
            ("image_size", self.image_size),
            architecture,
            ("activation", self.activation),
            ("batch_size", self.batch_size),
            ("data_dir", data_dir),
        )

    def init(self, key: jax.Array) -> Any:
        """Flax's default initialization of ``module`` (lecun-normal kernels, zero biases)."""
        dummy = jnp.zeros((1, *self.image_shape), jnp.float32)
        return self.module.init(key, dummy, self._activation_fn)

    def logits(self, params: Any, images: jax.Array, activation=None) -> jax.Array:
        """Class logits ``[B, num_classes]``; ``activation`` overrides the task's own."""
        return self.module.apply(params, images, activation or self._activation_fn)

    def loss_and_aux(
        self, params: Any, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean cross-entropy of the batch, and its ``accuracy``."""
        return classification_loss_and_aux(self.logits(params, batch["image"]), batch["label"])

    def normalizer(self, loss: jax.Array) -> jax.Array:
        """``loss / log(num_classes)`` clipped to [0, 1.5]; NaN/inf map to 1.5."""
        return classification_normalizer(loss, self.num_classes)


def preset(
    name: str, base: type[ImageClassificationTask], doc: str, **fixed: Any
) -> type[ImageClassificationTask]:
    """A subclass of ``base`` named ``name`` with the architecture and data fixed.

    Only ``batch_size`` (and ``data_dir`` for datasets read from files) stay
    arguments, so that gin can still set them. ``fixed["dataset"]`` is a built-in
    dataset: the signature is fixed when the class is made, before any registry.
    """
    if takes_argument(BUILTIN_DATASETS[fixed["dataset"]], "data_dir"):

        def __init__(self, batch_size: int = 128, data_dir: str | None = None):
            base.__init__(self, batch_size=batch_size, data_dir=data_dir, **fixed)
            self.name = name
    else:

        def __init__(self, batch_size: int = 128):
            base.__init__(self, batch_size=batch_size, **fixed)
            self.name = name

    cls = type(
        name,
        (base,),
        {
            "__init__": __init__,
            "__doc__": doc,
            "__module__": base.__module__,
            "__qualname__": name,
        },
    )
    return cls
