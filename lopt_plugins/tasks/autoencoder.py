"""MLP autoencoders and variational autoencoders of images: parametric builders and presets.

Names follow ``learned_optimization``: ``ImageMLPAE_<Dataset><size>_<hidden sizes>``
(``ImageMLPAE_Mnist_128x32x128``: hidden layers of 128, 32 and 128 units) and
``ImageMLPVAE_<Dataset><size>_<encoder>x<decoder>x<latent>``
(``ImageMLPVAE_Mnist_128x128x32``: a 128-unit encoder, a 32-dim latent and the
mirrored 128-unit decoder). Both model every pixel as a Bernoulli variable (a
sigmoid output read as a probability) and measure losses in nats per pixel, so
that the normalizer, ``loss / log(2)`` (bits per pixel), is about 1 at
initialization whatever the image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lopt_core import Datasets, Task
from lopt_core.validation import positive_int, positive_int_tuple
from lopt_plugins.tasks._common import ACTIVATION_TAGS, ArgsEquality, activation_fn, clipped
from lopt_plugins.tasks._data import image_datasets, image_shape
from lopt_plugins.tasks._image import preset

Batch = dict[str, Any]

# Normalized losses above 1.5 bits per pixel count as diverged.
RECONSTRUCTION_MAX = 1.5


def bits_per_pixel_normalizer(loss: jax.Array) -> jax.Array:
    """``loss / log(2)``: nats per pixel to bits per pixel (about 1 at init), clipped to [0, 1.5].

    An untrained sigmoid output is close to 0.5, whose Bernoulli cross-entropy is
    ``log(2)`` nats for any target pixel.
    """
    return clipped(loss / math.log(2), RECONSTRUCTION_MAX)


def _dense_stack(
    x: jax.Array, sizes: Sequence[int], activation: Callable[[jax.Array], jax.Array], prefix: str
) -> jax.Array:
    for i, size in enumerate(sizes):
        x = activation(nn.Dense(size, name=f"{prefix}_{i}")(x))
    return x


class MLPAutoencoder(nn.Module):
    """Flatten, ``hidden_sizes`` dense layers with ``activation``, then a logit per pixel."""

    hidden_sizes: Sequence[int]
    num_pixels: int

    @nn.compact
    def __call__(self, images: jax.Array, activation: Callable[[jax.Array], jax.Array]):
        x = _dense_stack(
            images.reshape((images.shape[0], -1)), self.hidden_sizes, activation, "hidden"
        )
        return nn.Dense(self.num_pixels, name="output")(x)


class MLPVAE(nn.Module):
    """Encoder ``hidden_sizes`` -> Gaussian latent (mean, log-variance) -> mirrored decoder.

    ``noise`` (``[B, latent_size]``, standard normal) gives the reparameterized
    sample ``z = mean + exp(log_var / 2) * noise``. Returns pixel logits, mean, log_var.
    """

    hidden_sizes: Sequence[int]
    latent_size: int
    num_pixels: int

    @nn.compact
    def __call__(
        self,
        images: jax.Array,
        noise: jax.Array,
        activation: Callable[[jax.Array], jax.Array],
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        x = _dense_stack(
            images.reshape((images.shape[0], -1)), self.hidden_sizes, activation, "encoder"
        )
        stats = nn.Dense(2 * self.latent_size, name="latent")(x)
        mean, log_var = stats[:, : self.latent_size], stats[:, self.latent_size :]
        z = mean + jnp.exp(0.5 * log_var) * noise
        x = _dense_stack(z, self.hidden_sizes[::-1], activation, "decoder")
        return nn.Dense(self.num_pixels, name="output")(x), mean, log_var


class _ImageModelTask(ArgsEquality, Task):
    """What the autoencoders share: data (built as the image classifiers build theirs)."""

    def __init__(
        self, dataset: str | Datasets, image_size: Any, batch_size: int, data_dir: str | None
    ):
        batch_size = positive_int(batch_size, "batch_size")
        self.datasets, self.dataset_tag, self.image_size = image_datasets(
            dataset, image_size, batch_size, data_dir
        )
        self.image_shape = image_shape(self.datasets)
        self.num_pixels = math.prod(self.image_shape)
        self.batch_size = batch_size

    def normalizer(self, loss: jax.Array) -> jax.Array:
        """``loss / log(2)`` (bits per pixel) clipped to [0, 1.5]; NaN/inf map to 1.5."""
        return bits_per_pixel_normalizer(loss)


class ImageAutoencoderTask(_ImageModelTask):
    """An MLP autoencoder of the images of a dataset (labels are ignored).

    Flatten the image, a dense layer per entry of ``hidden_sizes`` followed by
    ``activation`` (the smallest one is the bottleneck), then a dense layer to
    one logit per pixel. Loss: the mean over pixels and batch of the Bernoulli
    cross-entropy between ``sigmoid(logit)`` and the pixel value in [0, 1]
    (nats per pixel; grey pixels leave a floor, their binary entropy); extras:
    ``mse``, the mean squared error of ``sigmoid(logit)``. Normalizer:
    ``loss / log(2)``, clipped to [0, 1.5]. ``dataset``, ``image_size``,
    ``batch_size`` and ``data_dir`` are as for ``ImageMLPTask``.
    """

    def __init__(
        self,
        dataset: str | Datasets = "digits",
        image_size: tuple[int, int] = (8, 8),
        hidden_sizes: Sequence[int] = (32, 8, 32),
        activation: str = "relu",
        batch_size: int = 128,
        data_dir: str | None = None,
    ):
        self.hidden_sizes = positive_int_tuple(hidden_sizes, "hidden_sizes", allow_empty=False)
        self.activation = activation
        self._activation_fn = activation_fn(activation)
        super().__init__(dataset, image_size, batch_size, data_dir)
        self.module = MLPAutoencoder(self.hidden_sizes, self.num_pixels)
        self._args = (
            ("dataset", dataset),
            ("image_size", self.image_size),
            ("hidden_sizes", self.hidden_sizes),
            ("activation", activation),
            ("batch_size", self.batch_size),
            ("data_dir", data_dir),
        )
        act = "" if activation == "relu" else f"_{ACTIVATION_TAGS[activation]}"
        sizes = "x".join(str(s) for s in self.hidden_sizes)
        self.name = f"ImageMLPAE_{self.dataset_tag}_{sizes}{act}"

    def init(self, key: jax.Array) -> Any:
        """Flax's default initialization (lecun-normal kernels, zero biases)."""
        return self.module.init(key, jnp.zeros((1, *self.image_shape)), self._activation_fn)

    def reconstruction(self, params: Any, images: jax.Array) -> jax.Array:
        """The reconstructed images (pixel probabilities), shaped like ``images``."""
        logits = self.module.apply(params, images, self._activation_fn)
        return jax.nn.sigmoid(logits).reshape(images.shape)

    def loss_and_aux(
        self, params: Any, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean Bernoulli cross-entropy per pixel, and the ``mse`` of the reconstruction."""
        images = batch["image"]
        targets = images.reshape((images.shape[0], -1))
        logits = self.module.apply(params, images, self._activation_fn)
        loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))
        return loss, {"mse": jnp.mean((jax.nn.sigmoid(logits) - targets) ** 2)}


class ImageVAETask(_ImageModelTask):
    """A variational autoencoder of the images of a dataset (labels are ignored).

    Encoder: flatten, a dense layer per entry of ``hidden_sizes`` with
    ``activation``, then a dense layer to the mean and log-variance of a diagonal
    Gaussian over ``latent_size`` dims; a sample ``z`` is drawn by
    reparameterization with noise from the loss's ``key``. Decoder: the mirrored
    layers (``hidden_sizes`` reversed), then a logit per pixel (a Bernoulli
    decoder). Prior: standard normal. Loss: the negative ELBO, i.e.
    reconstruction cross-entropy summed over pixels plus ``KL(q(z|x) || p(z))``,
    averaged over the batch and divided by the number of pixels (nats per
    pixel); extras: ``reconstruction`` and ``kl``, per pixel likewise.
    Normalizer: ``loss / log(2)`` (bits per pixel), clipped to [0, 1.5].
    """

    def __init__(
        self,
        dataset: str | Datasets = "digits",
        image_size: tuple[int, int] = (8, 8),
        hidden_sizes: Sequence[int] = (32,),
        latent_size: int = 8,
        activation: str = "relu",
        batch_size: int = 128,
        data_dir: str | None = None,
    ):
        self.hidden_sizes = positive_int_tuple(hidden_sizes, "hidden_sizes")
        self.latent_size = positive_int(latent_size, "latent_size")
        self.activation = activation
        self._activation_fn = activation_fn(activation)
        super().__init__(dataset, image_size, batch_size, data_dir)
        self.module = MLPVAE(self.hidden_sizes, self.latent_size, self.num_pixels)
        self._args = (
            ("dataset", dataset),
            ("image_size", self.image_size),
            ("hidden_sizes", self.hidden_sizes),
            ("latent_size", self.latent_size),
            ("activation", activation),
            ("batch_size", self.batch_size),
            ("data_dir", data_dir),
        )
        act = "" if activation == "relu" else f"_{ACTIVATION_TAGS[activation]}"
        sizes = [*self.hidden_sizes, *self.hidden_sizes[::-1], self.latent_size]
        self.name = f"ImageMLPVAE_{self.dataset_tag}_{'x'.join(map(str, sizes))}{act}"

    def init(self, key: jax.Array) -> Any:
        """Flax's default initialization (lecun-normal kernels, zero biases)."""
        images = jnp.zeros((1, *self.image_shape))
        noise = jnp.zeros((1, self.latent_size))
        return self.module.init(key, images, noise, self._activation_fn)

    def loss_and_aux(
        self, params: Any, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Negative ELBO per pixel (one latent sample per image, noise drawn from ``key``)."""
        images = batch["image"]
        targets = images.reshape((images.shape[0], -1))
        noise = jax.random.normal(key, (images.shape[0], self.latent_size), images.dtype)
        logits, mean, log_var = self.module.apply(params, images, noise, self._activation_fn)
        reconstruction = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)
        kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
        per_pixel = 1.0 / self.num_pixels
        aux = {
            "reconstruction": jnp.mean(reconstruction) * per_pixel,
            "kl": jnp.mean(kl) * per_pixel,
        }
        return jnp.mean(reconstruction + kl) * per_pixel, aux


# (name, dataset, image size, hidden sizes)
_AE_PRESETS: tuple[tuple[str, str, tuple[int, int], tuple[int, ...]], ...] = (
    ("ImageMLPAE_Digits8_32x8x32", "digits", (8, 8), (32, 8, 32)),
    ("ImageMLPAE_Mnist_128x32x128", "mnist", (28, 28), (128, 32, 128)),
    ("ImageMLPAE_FashionMnist_128x32x128", "fashion_mnist", (28, 28), (128, 32, 128)),
)
# (name, dataset, image size, encoder hidden sizes, latent size)
_VAE_PRESETS: tuple[tuple[str, str, tuple[int, int], tuple[int, ...], int], ...] = (
    ("ImageMLPVAE_Digits8_32x32x8", "digits", (8, 8), (32,), 8),
    ("ImageMLPVAE_Mnist_128x128x32", "mnist", (28, 28), (128,), 32),
    ("ImageMLPVAE_FashionMnist_128x128x32", "fashion_mnist", (28, 28), (128,), 32),
)

PRESETS: dict[str, type[Task]] = {}
for _name, _dataset, _size, _hidden in _AE_PRESETS:
    PRESETS[_name] = preset(
        _name,
        ImageAutoencoderTask,
        f"MLP autoencoder with hidden layers {_hidden} (relu) on {_dataset} at "
        f"{_size[0]}x{_size[1]}; normalized loss = cross-entropy per pixel / log(2), "
        "clipped to [0, 1.5].",
        dataset=_dataset,
        image_size=_size,
        hidden_sizes=_hidden,
        activation="relu",
    )
for _name, _dataset, _size, _hidden, _latent in _VAE_PRESETS:
    PRESETS[_name] = preset(
        _name,
        ImageVAETask,
        f"VAE with encoder {_hidden}, a {_latent}-dim latent and the mirrored decoder (relu) "
        f"on {_dataset} at {_size[0]}x{_size[1]}; normalized loss = negative ELBO per pixel / "
        "log(2), clipped to [0, 1.5].",
        dataset=_dataset,
        image_size=_size,
        hidden_sizes=_hidden,
        latent_size=_latent,
        activation="relu",
    )
# Module attributes, so that presets import and pickle by name.
globals().update(PRESETS)
