"""Small residual networks on image datasets, with batch norm (stateful) or layer norm.

Names: ``ResNet_<Dataset><size>_<BN|LN>_<channels per stage>``, e.g.
``ResNet_Digits8_BN_8x16`` (a stem and two stages of one residual block, of 8
and 16 channels, with batch norm); more blocks per stage add ``_B<n>``.

Batch norm makes the task stateful: ``init_with_state`` returns the parameters
and ``{"batch_stats": ...}``, the running means and variances, which
``loss_with_state_and_aux`` updates (momentum 0.9) at every call. Losses are
always computed in training mode, normalizing by the statistics of the batch
itself (evaluation batches too, as the training loops call the same method);
``logits(..., train=False)`` uses the running averages instead.

Convolutions are ``PatchConv``: flax's ``nn.Conv`` in parameters, initialization
and outputs, computed as matrix products, which run several times faster on CPU
inside lopt's vmapped training loops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lopt_core import Datasets
from lopt_core.validation import one_of, positive_int, positive_int_tuple
from lopt_plugins.tasks._common import ACTIVATION_TAGS, classification_loss_and_aux
from lopt_plugins.tasks._image import Batch, ImageClassificationTask, preset

NORMS = {"batch": "BN", "layer": "LN"}
BATCH_NORM_MOMENTUM = 0.9


def norm_layer(norm: str, train: bool, name: str) -> nn.Module:
    """Batch norm, or layer norm over each example's (H, W, C) with a scale and bias per channel."""
    if norm == "batch":
        return nn.BatchNorm(
            use_running_average=not train, momentum=BATCH_NORM_MOMENTUM, epsilon=1e-5, name=name
        )
    return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1, name=name)


class PatchConv(nn.Module):
    """A bias-free ``SAME`` convolution computed as image patches times a matrix.

    The parameters (``kernel [k, k, C_in, features]``), their initialization
    (lecun normal) and the outputs are those of ``nn.Conv(features, (k, k),
    strides=stride, padding="SAME", use_bias=False)``. Why not ``nn.Conv``: on
    XLA's CPU backend the convolutions of a vmapped training loop (and their
    gradients) run as slow generated loops, the matrix products through its matmul
    library. Training 8 seeds of ``ResNet_Digits8_BN_8x16`` for 100 steps with
    ``lopt_core.train_family`` ran (after compiling) 49 s with ``nn.Conv`` against 4.7 s (batch 128,
    lopt's default -O2), and 29.5 s against 1.5 s at batch 16 and -O0 (the tests).
    """

    features: int
    kernel_size: int = 3
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, c_in = self.kernel_size, self.stride, x.shape[-1]
        init = nn.initializers.lecun_normal()
        kernel = self.param("kernel", init, (k, k, c_in, self.features))
        h, w = x.shape[-3], x.shape[-2]
        out_h, out_w = -(-h // s), -(-w // s)
        pad_h, pad_w = max((out_h - 1) * s + k - h, 0), max((out_w - 1) * s + k - w, 0)
        pads = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
        x = jnp.pad(x, ((0, 0),) * (x.ndim - 3) + pads)
        rows, cols = (out_h - 1) * s + 1, (out_w - 1) * s + 1
        patches = jnp.concatenate(
            [x[..., i : i + rows : s, j : j + cols : s, :] for i in range(k) for j in range(k)],
            axis=-1,
        )
        return patches @ kernel.reshape(k * k * c_in, self.features)


class ResidualBlock(nn.Module):
    """conv3x3(stride)-norm-act-conv3x3-norm, plus the input (projected by a 1x1 conv and a
    norm when the shape changes), then the activation."""

    channels: int
    stride: int
    norm: str

    @nn.compact
    def __call__(
        self, x: jax.Array, activation: Callable[[jax.Array], jax.Array], train: bool
    ) -> jax.Array:
        y = PatchConv(self.channels, 3, self.stride, name="conv_0")(x)
        y = activation(norm_layer(self.norm, train, "norm_0")(y))
        y = PatchConv(self.channels, 3, name="conv_1")(y)
        y = norm_layer(self.norm, train, "norm_1")(y)
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = PatchConv(self.channels, 1, self.stride, name="shortcut")(x)
            x = norm_layer(self.norm, train, "shortcut_norm")(x)
        return activation(x + y)


class ResNet(nn.Module):
    """Stem conv3x3-norm-act of ``channels[0]``, then a stage of ``blocks_per_stage`` residual
    blocks per entry of ``channels`` (each stage after the first starts with stride 2),
    global mean pooling and a zero-initialized dense layer to the logits."""

    channels: Sequence[int]
    num_classes: int
    blocks_per_stage: int = 1
    norm: str = "batch"

    @nn.compact
    def __call__(
        self,
        images: jax.Array,
        activation: Callable[[jax.Array], jax.Array],
        train: bool = True,
    ) -> jax.Array:
        x = PatchConv(self.channels[0], 3, name="stem")(images)
        x = activation(norm_layer(self.norm, train, "stem_norm")(x))
        for stage, channels in enumerate(self.channels):
            for block in range(self.blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                x = ResidualBlock(channels, stride, self.norm, name=f"stage_{stage}_block_{block}")(
                    x, activation, train
                )
        pooled = jnp.mean(x, axis=(-3, -2))
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="logits")(pooled)


class ResNetTask(ImageClassificationTask):
    """A small ResNet classifier on an image dataset.

    A stem (3x3 conv of ``channels[0]``, norm, ``activation``), then one stage
    per entry of ``channels`` of ``blocks_per_stage`` basic residual blocks
    (two 3x3 convs, each followed by a norm; every stage after the first halves
    the image with a stride-2 first block, whose shortcut is a 1x1 conv and a
    norm), global mean pooling and a dense layer to the logits, zero-initialized
    (the loss at init is exactly ``log(num_classes)``). Convs have no bias (the
    norm has one) and are computed as patches times a matrix (``PatchConv``).
    ``norm="batch"``: batch norm, whose running statistics are the task's model
    state; ``norm="layer"``: layer norm over each example's (H, W, C) with a
    per-channel scale and bias, stateless.
    Loss: mean cross-entropy (extras: ``accuracy``); normalizer:
    ``loss / log(num_classes)`` clipped to [0, 1.5]. ``dataset``,
    ``image_size``, ``batch_size`` and ``data_dir`` are as for ``ImageMLPTask``.
    """

    def __init__(
        self,
        dataset: str | Datasets = "digits",
        image_size: tuple[int, int] = (8, 8),
        channels: Sequence[int] = (8, 16),
        activation: str = "relu",
        batch_size: int = 128,
        data_dir: str | None = None,
        norm: str = "batch",
        blocks_per_stage: int = 1,
    ):
        self.channels = positive_int_tuple(channels, "channels", allow_empty=False)
        self.norm = one_of(norm, "norm", NORMS)
        self.blocks_per_stage = positive_int(blocks_per_stage, "blocks_per_stage")
        super().__init__(dataset, image_size, batch_size, data_dir, activation)
        self.module = ResNet(self.channels, self.num_classes, self.blocks_per_stage, self.norm)
        self._set_args(dataset, ("channels", self.channels), data_dir)
        self._args += (("norm", self.norm), ("blocks_per_stage", self.blocks_per_stage))
        act = "" if activation == "relu" else f"_{ACTIVATION_TAGS[activation]}"
        blocks = "" if self.blocks_per_stage == 1 else f"_B{self.blocks_per_stage}"
        channels = "x".join(str(c) for c in self.channels)
        self.name = f"ResNet_{self.dataset_tag}_{NORMS[self.norm]}_{channels}{blocks}{act}"

    @property
    def stateful(self) -> bool:
        """Whether the task has model state (batch statistics)."""
        return self.norm == "batch"

    def init_with_state(self, key: jax.Array) -> tuple[Any, Any]:
        """``({"params": ...}, {"batch_stats": ...})``; the state is None with layer norm."""
        dummy = jnp.zeros((1, *self.image_shape), jnp.float32)
        variables = self.module.init(key, dummy, self._activation_fn, train=False)
        state = {"batch_stats": variables["batch_stats"]} if self.stateful else None
        return {"params": variables["params"]}, state

    def init(self, key: jax.Array) -> Any:
        """The parameters of ``init_with_state`` (flax's default initialization)."""
        return self.init_with_state(key)[0]

    def apply(
        self,
        params: Any,
        state: Any,
        images: jax.Array,
        train: bool = True,
        activation: Callable[[jax.Array], jax.Array] | None = None,
    ) -> tuple[jax.Array, Any]:
        """Logits and the updated model state (updated only by batch norm in training mode).

        ``activation`` overrides the task's own."""
        activation = activation or self._activation_fn
        if self.stateful and state is None:
            state = self._placeholder_state()
        variables = {**params, **(state or {})}
        if self.stateful and train:
            logits, updates = self.module.apply(
                variables, images, activation, train=True, mutable=["batch_stats"]
            )
            return logits, {"batch_stats": updates["batch_stats"]}
        return self.module.apply(variables, images, activation, train=train), state

    def _placeholder_state(self) -> Any:
        # Zeros shaped as the batch statistics: in training mode their values play no part.
        shapes = jax.eval_shape(self.init_with_state, jax.random.PRNGKey(0))[1]
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def logits(
        self,
        params: Any,
        images: jax.Array,
        activation: Callable[[jax.Array], jax.Array] | None = None,
        state: Any = None,
        train: bool = True,
    ) -> jax.Array:
        """Class logits. In training mode (the default) batch norm normalizes by the batch's
        statistics; with ``train=False``, by the running averages in ``state``."""
        if not train and self.stateful and state is None:
            raise ValueError(f"{self.name}: logits(train=False) needs the model state.")
        return self.apply(params, state, images, train, activation)[0]

    def loss_with_state_and_aux(
        self, params: Any, state: Any, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, Any, dict[str, jax.Array]]:
        """Mean cross-entropy with training-mode norms, the updated state, and ``accuracy``."""
        logits, state = self.apply(params, state, batch["image"], train=True)
        loss, aux = classification_loss_and_aux(logits, batch["label"])
        return loss, state, aux

    def loss_and_aux(
        self, params: Any, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The loss of ``loss_with_state_and_aux``: in training mode it does not depend on the
        running statistics, so it needs no state."""
        return classification_loss_and_aux(self.logits(params, batch["image"]), batch["label"])


# (name, dataset, image size, channels per stage, norm)
_PRESETS: tuple[tuple[str, str, tuple[int, int], tuple[int, ...], str], ...] = (
    ("ResNet_Digits8_BN_8x16", "digits", (8, 8), (8, 16), "batch"),
    ("ResNet_Digits8_LN_8x16", "digits", (8, 8), (8, 16), "layer"),
    ("ResNet_Digits16_BN_8x16x32", "digits", (16, 16), (8, 16, 32), "batch"),
    ("ResNet_Mnist_BN_16x32x64", "mnist", (28, 28), (16, 32, 64), "batch"),
    ("ResNet_Cifar10_BN_16x32x64", "cifar10", (32, 32), (16, 32, 64), "batch"),
    ("ResNet_Cifar10_LN_16x32x64", "cifar10", (32, 32), (16, 32, 64), "layer"),
)

PRESETS: dict[str, type[ResNetTask]] = {}
for _name, _dataset, _size, _channels, _norm in _PRESETS:
    PRESETS[_name] = preset(
        _name,
        ResNetTask,
        f"ResNet with stages of {_channels} channels ({_norm} norm, relu) on {_dataset} at "
        f"{_size[0]}x{_size[1]}; normalized loss = cross-entropy / log(num_classes), "
        "clipped to [0, 1.5].",
        dataset=_dataset,
        image_size=_size,
        channels=_channels,
        activation="relu",
        norm=_norm,
    )
# Module attributes, so that presets import and pickle by name.
globals().update(PRESETS)
