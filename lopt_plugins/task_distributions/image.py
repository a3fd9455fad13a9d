"""Sampled image classifiers: MLPs and conv nets of drawn depth, width, data and batch size.

- ``ImageMLPDistribution``: ``ImageMLPTask`` with 1-4 hidden layers of 16-256
  units (each width drawn log-uniformly), a drawn activation, dataset, image
  size and batch size;
- ``ConvNetDistribution``: ``ImageConvTask`` with 1-3 stride-2 conv layers of
  8-64 channels, kernel 3 or 5, mean or max pooling;
- ``ImageTaskDistribution``: either of the two, half the time each.

Every draw stays within ``max_params`` and ``max_step_mflops`` (the estimated
cost of one training step of one task; see ``_sampling``). Datasets are
registered names (``digits`` is bundled; ``mnist``, ``fashion_mnist``,
``kmnist`` and ``cifar10`` need their files, found through ``data_dir`` or
``LOPT_DATA_DIR``); list only those you have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lopt_core import Task
from lopt_plugins.task_distributions._sampling import (
    FLOPS_PER_MAC,
    BoundedDistribution,
    Cost,
    checked_first_draw,
    int_options,
    int_range,
    log_uniform_int,
    options,
    pick,
)
from lopt_plugins.task_distributions.mixture import DistributionMixture
from lopt_plugins.tasks._common import ACTIVATIONS
from lopt_plugins.tasks.conv import POOLINGS, ImageConvTask
from lopt_plugins.tasks.image_mlp import ImageMLPTask

DEFAULT_ACTIVATIONS = ("relu", "tanh", "gelu", "silu")


class _ImageDistribution(BoundedDistribution):
    """What the image distributions share: data, activations, batch sizes, cost bound."""

    def __init__(
        self,
        datasets,
        image_sizes,
        activations,
        batch_sizes,
        data_dir,
        max_params,
        max_step_mflops,
        powers_of_two,
    ):
        super().__init__(max_params, max_step_mflops)
        self.datasets = options(datasets, "datasets")
        self.image_sizes = options(image_sizes, "image_sizes")
        if not all(isinstance(s, tuple) and len(s) == 2 for s in self.image_sizes):
            raise ValueError(
                f"image_sizes must be a list of (height, width) pairs, got {image_sizes!r}."
            )
        self.activations = options(activations, "activations", tuple(ACTIVATIONS))
        self.batch_sizes = int_options(batch_sizes, "batch_sizes")
        self.data_dir = data_dir
        self.powers_of_two = bool(powers_of_two)

    def _data(self, rng: np.random.Generator) -> dict[str, Any]:
        return {
            "dataset": pick(rng, self.datasets),
            "image_size": pick(rng, self.image_sizes),
            "activation": pick(rng, self.activations),
            "batch_size": pick(rng, self.batch_sizes),
            "data_dir": self.data_dir,
        }


class ImageMLPDistribution(_ImageDistribution):
    """MLP classifiers of ``depth`` hidden layers, each ``widths`` wide (log-uniform; with
    ``powers_of_two``, a power of two: fewer distinct graphs, fewer compiles)."""

    def __init__(
        self,
        depth: tuple[int, int] = (1, 4),
        widths: tuple[int, int] = (16, 256),
        activations: Sequence[str] = DEFAULT_ACTIVATIONS,
        datasets: Sequence[str] = ("digits",),
        image_sizes: Sequence[tuple[int, int]] = ((8, 8),),
        batch_sizes: Sequence[int] = (32, 64, 128),
        data_dir: str | None = None,
        max_params: int = 50_000,
        max_step_mflops: float = 20.0,
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
        self.depth = int_range(depth, "depth")
        self.widths = int_range(widths, "widths")
        checked_first_draw(self)

    def draw(self, rng: np.random.Generator) -> Task:
        depth = int(rng.integers(self.depth[0], self.depth[1] + 1))
        hidden = tuple(log_uniform_int(rng, self.widths, self.powers_of_two) for _ in range(depth))
        return ImageMLPTask(hidden_sizes=hidden, **self._data(rng))

    def cost(self, task: Task) -> Cost:
        sizes = [math.prod(task.image_shape), *task.hidden_sizes, task.num_classes]
        macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        params = macs + sum(sizes[1:])
        return Cost(params, FLOPS_PER_MAC * macs * task.batch_size / 1e6)


class ConvNetDistribution(_ImageDistribution):
    """Conv nets of ``depth`` stride-2 layers of ``channels`` (log-uniform), drawn kernel and
    pooling."""

    def __init__(
        self,
        depth: tuple[int, int] = (1, 3),
        channels: tuple[int, int] = (8, 64),
        kernel_sizes: Sequence[int] = (3, 5),
        poolings: Sequence[str] = ("mean", "max"),
        activations: Sequence[str] = DEFAULT_ACTIVATIONS,
        datasets: Sequence[str] = ("digits",),
        image_sizes: Sequence[tuple[int, int]] = ((8, 8),),
        batch_sizes: Sequence[int] = (32, 64, 128),
        data_dir: str | None = None,
        max_params: int = 50_000,
        max_step_mflops: float = 20.0,
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
        self.depth = int_range(depth, "depth")
        self.channels = int_range(channels, "channels")
        self.kernel_sizes = int_options(kernel_sizes, "kernel_sizes")
        self.poolings = options(poolings, "poolings", tuple(POOLINGS))
        checked_first_draw(self)

    def draw(self, rng: np.random.Generator) -> Task:
        depth = int(rng.integers(self.depth[0], self.depth[1] + 1))
        channels = tuple(
            log_uniform_int(rng, self.channels, self.powers_of_two) for _ in range(depth)
        )
        return ImageConvTask(
            channels=channels,
            kernel_size=pick(rng, self.kernel_sizes),
            pooling=pick(rng, self.poolings),
            **self._data(rng),
        )

    def cost(self, task: Task) -> Cost:
        height, width, c_in = task.image_shape
        k2 = task.kernel_size**2
        macs = params = 0
        for c_out in task.channels:
            height, width = math.ceil(height / 2), math.ceil(width / 2)  # stride 2, SAME
            macs += height * width * k2 * c_in * c_out
            params += k2 * c_in * c_out + c_out
            c_in = c_out
        macs += c_in * task.num_classes
        params += c_in * task.num_classes + task.num_classes
        return Cost(params, FLOPS_PER_MAC * macs * task.batch_size / 1e6)


class ImageTaskDistribution(DistributionMixture):
    """An ``ImageMLPDistribution`` or a ``ConvNetDistribution`` draw, half the time each.

    ``mlp`` and ``conv`` are the two distributions (default: their defaults).
    """

    def __init__(
        self,
        mlp: ImageMLPDistribution | None = None,
        conv: ConvNetDistribution | None = None,
    ):
        super().__init__(
            (mlp or ImageMLPDistribution(), conv or ConvNetDistribution()),
            name="ImageTaskDistribution",
        )
