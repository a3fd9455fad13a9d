"""MLP-Mixers on image datasets: a parametric builder and named presets.

Names: ``Mixer_<Dataset><size>_P<patch>_D<depth>_W<width>_T<token MLP>_C<channel MLP>``,
e.g. ``Mixer_Digits8_P2_D2_W32_T32_C64`` (2x2 patches of 8x8 digits, 16 tokens,
two mixer blocks of width 32 whose token-mixing MLPs have 32 hidden units and
channel-mixing MLPs 64); an activation other than gelu adds its name.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lopt_core import Datasets
from lopt_core.validation import positive_int
from lopt_plugins.tasks._common import ACTIVATION_TAGS
from lopt_plugins.tasks._image import ImageClassificationTask, preset
from lopt_plugins.tasks.vit import MLPBlock, check_patch_size, head_init, patchify


class MixerBlock(nn.Module):
    """``x + TokenMLP(LN(x)^T)^T`` (mixing across patches), then ``x + ChannelMLP(LN(x))``."""

    token_mlp_dim: int
    channel_mlp_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, activation: Callable[[jax.Array], jax.Array]) -> jax.Array:
        y = jnp.swapaxes(nn.LayerNorm(name="ln_token")(x), 1, 2)  # [B, width, tokens]
        x = x + jnp.swapaxes(MLPBlock(self.token_mlp_dim, name="token_mlp")(y, activation), 1, 2)
        y = nn.LayerNorm(name="ln_channel")(x)
        return x + MLPBlock(self.channel_mlp_dim, name="channel_mlp")(y, activation)


class Mixer(nn.Module):
    """Patch embedding (dense), ``depth`` mixer blocks, final layer norm, mean over patches,
    zero-initialized dense head."""

    patch_size: int
    depth: int
    width: int
    token_mlp_dim: int
    channel_mlp_dim: int
    num_classes: int

    @nn.compact
    def __call__(self, images: jax.Array, activation: Callable[[jax.Array], jax.Array]):
        x = nn.Dense(self.width, name="embed")(patchify(images, self.patch_size))
        for i in range(self.depth):
            block = MixerBlock(self.token_mlp_dim, self.channel_mlp_dim, name=f"block_{i}")
            x = block(x, activation)
        x = jnp.mean(nn.LayerNorm(name="ln_final")(x), axis=1)
        return nn.Dense(self.num_classes, kernel_init=head_init, name="head")(x)


class MixerTask(ImageClassificationTask):
    """An MLP-Mixer classifier on an image dataset.

    The image is cut into ``patch_size`` x ``patch_size`` patches (which must
    divide it), each embedded by a dense layer to ``width``; then ``depth``
    mixer blocks, each a token-mixing MLP (across patches, ``token_mlp_dim``
    hidden units) and a channel-mixing MLP (``channel_mlp_dim``), both pre-LN
    and residual, with ``activation``; a final layer norm, the mean over
    patches and a dense head, zero-initialized (the loss at init is exactly
    ``log(num_classes)``). Loss, extras and normalizer as for ``ImageMLPTask``;
    ``dataset``, ``image_size``, ``batch_size`` and ``data_dir`` too.
    """

    def __init__(
        self,
        dataset: str | Datasets = "digits",
        image_size: tuple[int, int] = (8, 8),
        patch_size: int = 2,
        depth: int = 2,
        width: int = 32,
        token_mlp_dim: int = 32,
        channel_mlp_dim: int = 64,
        activation: str = "gelu",
        batch_size: int = 128,
        data_dir: str | None = None,
    ):
        self.depth = positive_int(depth, "depth")
        self.width = positive_int(width, "width")
        self.token_mlp_dim = positive_int(token_mlp_dim, "token_mlp_dim")
        self.channel_mlp_dim = positive_int(channel_mlp_dim, "channel_mlp_dim")
        super().__init__(dataset, image_size, batch_size, data_dir, activation)
        self.patch_size = check_patch_size(patch_size, self.image_size, "MixerTask")
        self.num_patches = (self.image_size[0] // self.patch_size) * (
            self.image_size[1] // self.patch_size
        )
        self.module = Mixer(
            self.patch_size,
            self.depth,
            self.width,
            self.token_mlp_dim,
            self.channel_mlp_dim,
            self.num_classes,
        )
        self._args = (
            ("dataset", dataset),
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("depth", self.depth),
            ("width", self.width),
            ("token_mlp_dim", self.token_mlp_dim),
            ("channel_mlp_dim", self.channel_mlp_dim),
            ("activation", activation),
            ("batch_size", self.batch_size),
            ("data_dir", data_dir),
        )
        arch = (
            f"P{self.patch_size}_D{self.depth}_W{self.width}"
            f"_T{self.token_mlp_dim}_C{self.channel_mlp_dim}"
        )
        act = "" if activation == "gelu" else f"_{ACTIVATION_TAGS[activation]}"
        self.name = f"Mixer_{self.dataset_tag}_{arch}{act}"


# (name, dataset, image size, patch size, depth, width, token MLP, channel MLP)
_PRESETS: tuple[tuple[str, str, tuple[int, int], int, int, int, int, int], ...] = (
    ("Mixer_Digits8_P2_D2_W32_T32_C64", "digits", (8, 8), 2, 2, 32, 32, 64),
    ("Mixer_Digits16_P4_D2_W32_T32_C64", "digits", (16, 16), 4, 2, 32, 32, 64),
    ("Mixer_Mnist_P4_D4_W64_T64_C128", "mnist", (28, 28), 4, 4, 64, 64, 128),
    ("Mixer_Cifar10_P4_D4_W64_T64_C128", "cifar10", (32, 32), 4, 4, 64, 64, 128),
)

PRESETS: dict[str, type[MixerTask]] = {}
for _name, _dataset, _size, _patch, _depth, _width, _tokens, _channels in _PRESETS:
    PRESETS[_name] = preset(
        _name,
        MixerTask,
        f"MLP-Mixer with {_patch}x{_patch} patches, {_depth} blocks of width {_width}, token "
        f"MLP {_tokens}, channel MLP {_channels} (gelu) on {_dataset} at "
        f"{_size[0]}x{_size[1]}; normalized loss = cross-entropy / log(num_classes), "
        "clipped to [0, 1.5].",
        dataset=_dataset,
        image_size=_size,
        patch_size=_patch,
        depth=_depth,
        width=_width,
        token_mlp_dim=_tokens,
        channel_mlp_dim=_channels,
    )
# Module attributes, so that presets import and pickle by name.
globals().update(PRESETS)
