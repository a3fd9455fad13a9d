"""Vision transformers on image datasets: a parametric builder and named presets.

Names: ``ViT_<Dataset><size>_P<patch>_D<depth>_W<width>_H<heads>``, e.g.
``ViT_Digits8_P2_D2_W32_H2`` (2x2 patches of 8x8 digits, 16 tokens and a class
token, two pre-LN blocks of width 32 with 2 heads); an MLP ratio other than 2
adds ``_R<ratio>``, mean pooling ``_MeanPool``, an activation other than gelu
its name (``_Relu``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lopt_core import Datasets
from lopt_core.validation import one_of, positive_int
from lopt_plugins.tasks._common import ACTIVATION_TAGS
from lopt_plugins.tasks._image import ImageClassificationTask, preset

POOLINGS = ("cls", "mean")
# The initialization of the position embeddings (and nothing else), as in the ViT paper.
POSITION_EMBEDDING_STD = 0.02


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, (H/p)(W/p), p*p*C]``: non-overlapping patches, row by row."""
    b, h, w, c = images.shape
    p = patch_size
    x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def check_patch_size(patch_size: Any, image_size: tuple[int, int], owner: str) -> int:
    """``patch_size`` as a positive int that divides both sides of the image."""
    patch_size = positive_int(patch_size, "patch_size")
    if any(side % patch_size for side in image_size):
        raise ValueError(
            f"{owner}: patch_size={patch_size} must divide the image size {image_size}."
        )
    return patch_size


def head_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """Zeros: the classifier head starts at uniform predictions, as in the ViT and Mixer papers."""
    return jnp.zeros(shape, dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention: one dense layer to queries, keys and values, one out."""

    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, width = x.shape
        head_dim = width // self.num_heads
        qkv = nn.Dense(3 * width, name="qkv")(x).reshape(b, n, 3, self.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim))
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, width)
        return nn.Dense(width, name="out")(out)


class MLPBlock(nn.Module):
    """Dense to ``hidden``, activation, dense back to the input's last dimension."""

    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array, activation: Callable[[jax.Array], jax.Array]) -> jax.Array:
        y = activation(nn.Dense(self.hidden, name="dense_0")(x))
        return nn.Dense(x.shape[-1], name="dense_1")(y)


class ViT(nn.Module):
    """Patch embedding (dense), position embeddings, pre-LN transformer blocks, final layer
    norm, class token or mean pooling, and a zero-initialized dense head."""

    patch_size: int
    depth: int
    width: int
    num_heads: int
    mlp_dim: int
    num_classes: int
    pooling: str = "cls"

    @nn.compact
    def __call__(self, images: jax.Array, activation: Callable[[jax.Array], jax.Array]):
        x = nn.Dense(self.width, name="embed")(patchify(images, self.patch_size))
        if self.pooling == "cls":
            cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.width))
            x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.width)), x], axis=1)
        init = nn.initializers.normal(POSITION_EMBEDDING_STD)
        x = x + self.param("pos_embedding", init, (1, x.shape[1], self.width))
        for i in range(self.depth):
            x = x + SelfAttention(self.num_heads, name=f"attn_{i}")(
                nn.LayerNorm(name=f"ln_{i}_0")(x)
            )
            y = nn.LayerNorm(name=f"ln_{i}_1")(x)
            x = x + MLPBlock(self.mlp_dim, name=f"mlp_{i}")(y, activation)
        x = nn.LayerNorm(name="ln_final")(x)
        x = x[:, 0] if self.pooling == "cls" else jnp.mean(x, axis=1)
        return nn.Dense(self.num_classes, kernel_init=head_init, name="head")(x)


class ViTTask(ImageClassificationTask):
    """A vision transformer classifier on an image dataset.

    The image is cut into ``patch_size`` x ``patch_size`` patches (which must
    divide it), each flattened and embedded by a dense layer to ``width``; with
    ``pooling="cls"`` a learned class token (zeros at init) is prepended; learned
    position embeddings (normal, std 0.02) are added. Then ``depth`` pre-LN
    blocks, ``x + attention(LN(x))`` with ``num_heads`` heads and
    ``x + MLP(LN(x))`` (hidden ``mlp_ratio * width``, ``activation``), a final
    layer norm, the class token's output (or the mean over tokens with
    ``pooling="mean"``), and a dense head, zero-initialized (the loss at init
    is exactly ``log(num_classes)``). Loss, extras and normalizer as for
    ``ImageMLPTask``; ``dataset``, ``image_size``, ``batch_size`` and
    ``data_dir`` too.
    """

    def __init__(
        self,
        dataset: str | Datasets = "digits",
        image_size: tuple[int, int] = (8, 8),
        patch_size: int = 2,
        depth: int = 2,
        width: int = 32,
        num_heads: int = 2,
        mlp_ratio: int = 2,
        pooling: str = "cls",
        activation: str = "gelu",
        batch_size: int = 128,
        data_dir: str | None = None,
    ):
        self.depth = positive_int(depth, "depth")
        self.width = positive_int(width, "width")
        self.num_heads = positive_int(num_heads, "num_heads")
        if self.width % self.num_heads:
            raise ValueError(f"num_heads={num_heads} must divide width={width}.")
        self.mlp_ratio = positive_int(mlp_ratio, "mlp_ratio")
        self.pooling = one_of(pooling, "pooling", POOLINGS)
        super().__init__(dataset, image_size, batch_size, data_dir, activation)
        self.patch_size = check_patch_size(patch_size, self.image_size, "ViTTask")
        self.num_patches = (self.image_size[0] // self.patch_size) * (
            self.image_size[1] // self.patch_size
        )
        self.module = ViT(
            self.patch_size,
            self.depth,
            self.width,
            self.num_heads,
            self.mlp_ratio * self.width,
            self.num_classes,
            self.pooling,
        )
        self._args = (
            ("dataset", dataset),
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("depth", self.depth),
            ("width", self.width),
            ("num_heads", self.num_heads),
            ("mlp_ratio", self.mlp_ratio),
            ("pooling", self.pooling),
            ("activation", activation),
            ("batch_size", self.batch_size),
            ("data_dir", data_dir),
        )
        arch = f"P{self.patch_size}_D{self.depth}_W{self.width}_H{self.num_heads}"
        ratio = "" if self.mlp_ratio == 2 else f"_R{self.mlp_ratio}"
        pool = "" if self.pooling == "cls" else "_MeanPool"
        act = "" if activation == "gelu" else f"_{ACTIVATION_TAGS[activation]}"
        self.name = f"ViT_{self.dataset_tag}_{arch}{ratio}{pool}{act}"


# (name, dataset, image size, patch size, depth, width, heads)
_PRESETS: tuple[tuple[str, str, tuple[int, int], int, int, int, int], ...] = (
    ("ViT_Digits8_P2_D2_W32_H2", "digits", (8, 8), 2, 2, 32, 2),
    ("ViT_Digits16_P4_D2_W32_H2", "digits", (16, 16), 4, 2, 32, 2),
    ("ViT_Mnist_P4_D4_W64_H4", "mnist", (28, 28), 4, 4, 64, 4),
    ("ViT_Cifar10_P4_D4_W64_H4", "cifar10", (32, 32), 4, 4, 64, 4),
)

PRESETS: dict[str, type[ViTTask]] = {}
for _name, _dataset, _size, _patch, _depth, _width, _heads in _PRESETS:
    PRESETS[_name] = preset(
        _name,
        ViTTask,
        f"ViT with {_patch}x{_patch} patches, {_depth} blocks of width {_width}, {_heads} heads "
        f"(gelu, MLP ratio 2, class token) on {_dataset} at {_size[0]}x{_size[1]}; normalized "
        "loss = cross-entropy / log(num_classes), clipped to [0, 1.5].",
        dataset=_dataset,
        image_size=_size,
        patch_size=_patch,
        depth=_depth,
        width=_width,
        num_heads=_heads,
    )
# Module attributes, so that presets import and pickle by name.
globals().update(PRESETS)
