"""Families of image MLP tasks over what ``learned_optimization`` varies.

- ``ImageMLPInitFamily``: the initialization's scale and distribution,
- ``ImageMLPDataFamily``: the data (a sampled subset of the classes, and label noise),
- ``ImageMLPActivationFamily``: the activation function.

Every sampled task has the same parameter shapes and the same computation
graph; what differs is held in the cfg, a dict of jax arrays, so that
``lopt_core.train_family`` vmaps over tasks. Discrete choices (distribution,
activation) use ``lax.switch``: under ``jax.vmap`` it becomes a select, which
computes *every* branch for every task and keeps the chosen one. That is
negligible for the initializer (run once) but multiplies the cost of the
activations by the number of choices (elementwise work, small next to the
matmuls for moderate widths); keep ``activations`` short if that matters.
All families share one ``Datasets`` (their ``datasets`` attribute), and their
tasks keep the normalizer of ``ImageMLPTask``: loss / log(num_classes),
clipped to [0, 1.5].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

from lopt_core import Datasets, Task, TaskFamily
from lopt_plugins.tasks._common import (
    ACTIVATIONS,
    ArgsEquality,
    activation_fn,
    classification_loss_and_aux,
)
from lopt_plugins.tasks.image_mlp import ImageMLPTask

Cfg = dict[str, jax.Array]

# One uniform draw v in (-1, 1) per weight, turned into each unit-variance distribution by
# its inverse CDF: lax.switch then picks among cheap transforms, and the task traces a
# single random draw per kernel (threefry is most of the compile time of an init).
_ERF_SQRT2 = math.erf(math.sqrt(2.0))  # P(|x| < 2) for x ~ N(0, 1)
_TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2]


def _normal(v: jax.Array) -> jax.Array:
    return math.sqrt(2.0) * jax.scipy.special.erfinv(v)


def _uniform(v: jax.Array) -> jax.Array:
    return math.sqrt(3.0) * v


def _truncated_normal(v: jax.Array) -> jax.Array:
    return math.sqrt(2.0) * jax.scipy.special.erfinv(_ERF_SQRT2 * v) / _TRUNCATED_NORMAL_STD


# Unit-variance distributions for the initializer, by name, in a fixed order (cfg indices).
INIT_DISTRIBUTIONS = {"normal": _normal, "uniform": _uniform, "truncated_normal": _truncated_normal}


def _choose(names: Sequence[str], known: dict[str, Any], what: str) -> tuple[str, ...]:
    names = tuple(names)
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise ValueError(
            f"{what} must be a non-empty sequence drawn from {', '.join(known)}; got {names!r}."
        )
    return names


class _ImageMLPFamily(ArgsEquality, TaskFamily):
    """Shared constructor: one ``ImageMLPTask`` that every sampled task modifies."""

    def __init__(self, dataset, image_size, hidden_sizes, activation, batch_size, data_dir):
        self.base_task = ImageMLPTask(
            dataset, image_size, hidden_sizes, activation, batch_size, data_dir
        )
        self.datasets = self.base_task.datasets
        self.num_classes = self.base_task.num_classes
        self._args = self.base_task._args
        self.name = f"{type(self).__name__}_{self.base_task.name.removeprefix('ImageMLP_')}"


class _SampledTask(Task):
    """A sampled task: the family's base task, with parts overridden by subclasses."""

    def __init__(self, family: _ImageMLPFamily, cfg: Cfg):
        self.base = family.base_task
        self.cfg = cfg
        self.datasets = self.base.datasets
        self.name = f"{family.name}/sample"

    def init(self, key: jax.Array) -> Any:
        return self.base.init(key)

    def loss_and_aux(self, params: Any, key: jax.Array, batch: Any):
        return self.base.loss_and_aux(params, key, batch)

    def normalizer(self, loss: jax.Array) -> jax.Array:
        return self.base.normalizer(loss)


class _InitTask(_SampledTask):
    def __init__(self, family: ImageMLPInitFamily, cfg: Cfg):
        super().__init__(family, cfg)
        self.distributions = [INIT_DISTRIBUTIONS[d] for d in family.distributions]

    def init(self, key: jax.Array) -> Any:
        # Only the shapes of the default init are needed; eval_shape runs no computation.
        shapes = jax.eval_shape(self.base.init, key)
        paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
        keys = jax.random.split(key, len(paths_and_leaves))
        leaves = []
        for (path, leaf), leaf_key in zip(paths_and_leaves, keys, strict=True):
            if getattr(path[-1], "key", None) != "kernel":
                leaves.append(jnp.zeros(leaf.shape, leaf.dtype))
                continue
            fan_in = math.prod(leaf.shape[:-1])
            # Open interval: erfinv(+-1) would be infinite.
            low = float(np.nextafter(np.float32(-1.0), np.float32(0.0)))
            v = jax.random.uniform(leaf_key, leaf.shape, minval=low, maxval=1.0)
            unit = jax.lax.switch(self.cfg["init_distribution"], self.distributions, v)
            leaves.append((self.cfg["init_scale"] / math.sqrt(fan_in) * unit).astype(leaf.dtype))
        return jax.tree_util.tree_unflatten(treedef, leaves)


class ImageMLPInitFamily(_ImageMLPFamily):
    """Image MLPs whose weights are initialized with a sampled scale and distribution.

    Each kernel is ``init_scale / sqrt(fan_in) * u``, ``u`` drawn i.i.d. from a
    unit-variance distribution among ``distributions`` (normal, uniform,
    truncated normal), biases are zero; ``init_scale`` is log-uniform in
    ``[min_init_scale, max_init_scale]`` (1 is lecun initialization).
    cfg: ``{"init_scale": float32[], "init_distribution": int32[]}``.
    The network and data arguments are those of ``ImageMLPTask``.
    """

    def __init__(
        self,
        dataset: str | Datasets = "digits",
        image_size: tuple[int, int] = (8, 8),
        hidden_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        batch_size: int = 128,
        data_dir: str | None = None,
        min_init_scale: float = 0.1,
        max_init_scale: float = 10.0,
        distributions: Sequence[str] = tuple(INIT_DISTRIBUTIONS),
    ):
        if not (0 < min_init_scale <= max_init_scale < math.inf):
            raise ValueError(
                "Need 0 < min_init_scale <= max_init_scale < inf; got "
                f"{min_init_scale!r} and {max_init_scale!r}."
            )
        self.distributions = _choose(distributions, INIT_DISTRIBUTIONS, "distributions")
        super().__init__(dataset, image_size, hidden_sizes, activation, batch_size, data_dir)
        self.min_init_scale, self.max_init_scale = float(min_init_scale), float(max_init_scale)
        self._args += (
            ("min_init_scale", self.min_init_scale),
            ("max_init_scale", self.max_init_scale),
            ("distributions", self.distributions),
        )

    def sample(self, key: jax.Array) -> Cfg:
        """A log-uniform init scale and a uniformly chosen distribution index."""
        scale_key, dist_key = jax.random.split(key)
        log_scale = jax.random.uniform(
            scale_key,
            (),
            minval=math.log(self.min_init_scale),
            maxval=math.log(self.max_init_scale),
        )
        return {
            "init_scale": jnp.exp(log_scale),
            "init_distribution": jax.random.randint(dist_key, (), 0, len(self.distributions)),
        }

    def task_fn(self, cfg: Cfg) -> Task:
        """The base MLP with the initializer that ``cfg`` describes."""
        return _InitTask(self, cfg)


class _DataTask(_SampledTask):
    def __init__(self, family: ImageMLPDataFamily, cfg: Cfg, label_noise: bool):
        super().__init__(family, cfg)
        self.label_noise = label_noise

    def loss_and_aux(self, params: Any, key: jax.Array, batch: Any):
        class_mask = self.cfg["class_mask"]
        labels = batch["label"]
        # Examples of classes outside the subset get weight 0: shapes stay static.
        weights = class_mask[labels]
        if self.label_noise:
            # One random draw for both decisions (each random call adds compile time).
            u = jax.random.uniform(key, (2, *labels.shape))
            flip = u[0] < self.cfg["label_noise"]
            # A wrong label is uniform over the kept classes: the j-th kept class, j < count.
            count = jnp.sum(class_mask)
            j = jnp.minimum(jnp.floor(u[1] * count), count - 1)
            noisy = jnp.argmax(jnp.cumsum(class_mask) > j[..., None], axis=-1)
            labels = jnp.where(flip, noisy.astype(labels.dtype), labels)
        logits = self.base.logits(params, batch["image"])
        return classification_loss_and_aux(logits, labels, weights)


class ImageMLPDataFamily(_ImageMLPFamily):
    """Image MLPs trained on a sampled subset of the classes, with sampled label noise.

    Each task keeps ``k ~ U{min_classes, ..., num_classes}`` random classes:
    examples of the others get weight 0 in the loss (the batch shape never
    changes, and a batch without kept classes has loss 0). Each kept example's
    label is replaced, with probability ``label_noise ~ U[0, max_label_noise]``,
    by a uniformly drawn kept class; the noise is redrawn at every step from
    the loss key. ``eval_task_fn`` gives the same class subset without label
    noise. cfg: ``{"class_mask": bool[num_classes], "label_noise": float32[]}``.
    The network and data arguments are those of ``ImageMLPTask``.
    """

    def __init__(
        self,
        dataset: str | Datasets = "digits",
        image_size: tuple[int, int] = (8, 8),
        hidden_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        batch_size: int = 128,
        data_dir: str | None = None,
        min_classes: int = 2,
        max_label_noise: float = 0.5,
    ):
        if not 0.0 <= max_label_noise <= 1.0:
            raise ValueError(f"max_label_noise must be in [0, 1], got {max_label_noise!r}.")
        super().__init__(dataset, image_size, hidden_sizes, activation, batch_size, data_dir)
        if not isinstance(min_classes, int) or not 1 <= min_classes <= self.num_classes:
            raise ValueError(
                f"min_classes must be an int in [1, {self.num_classes}] (the dataset's number of "
                f"classes), got {min_classes!r}."
            )
        self.min_classes, self.max_label_noise = min_classes, float(max_label_noise)
        self._args += (("min_classes", min_classes), ("max_label_noise", self.max_label_noise))

    def sample(self, key: jax.Array) -> Cfg:
        """A random subset of the classes and a label-noise probability."""
        count_key, perm_key, noise_key = jax.random.split(key, 3)
        n = self.num_classes
        count = jax.random.randint(count_key, (), self.min_classes, n + 1)
        order = jax.random.permutation(perm_key, n)
        # The classes at the first `count` positions of a random permutation are kept.
        class_mask = jnp.zeros(n, bool).at[order].set(jnp.arange(n) < count)
        return {
            "class_mask": class_mask,
            "label_noise": jax.random.uniform(noise_key, (), maxval=self.max_label_noise),
        }

    def task_fn(self, cfg: Cfg) -> Task:
        """The base MLP trained on ``cfg``'s class subset with its label noise."""
        return _DataTask(self, cfg, label_noise=True)

    def eval_task_fn(self, cfg: Cfg) -> Task:
        """The same class subset with clean labels."""
        return _DataTask(self, cfg, label_noise=False)


class _ActivationTask(_SampledTask):
    def __init__(self, family: ImageMLPActivationFamily, cfg: Cfg):
        super().__init__(family, cfg)
        self.fns = [activation_fn(a) for a in family.activations]

    def activation(self, x: jax.Array) -> jax.Array:
        return jax.lax.switch(self.cfg["activation"], self.fns, x)

    def loss_and_aux(self, params: Any, key: jax.Array, batch: Any):
        logits = self.base.logits(params, batch["image"], self.activation)
        return classification_loss_and_aux(logits, batch["label"])


class ImageMLPActivationFamily(_ImageMLPFamily):
    """Image MLPs whose activation is drawn uniformly from ``activations``.

    The choice is an index into ``activations`` applied with ``lax.switch``, so
    under vmap every activation is computed at every layer (see the module
    docstring). cfg: ``{"activation": int32[]}``. The other arguments are those
    of ``ImageMLPTask``.
    """

    def __init__(
        self,
        dataset: str | Datasets = "digits",
        image_size: tuple[int, int] = (8, 8),
        hidden_sizes: Sequence[int] = (32,),
        batch_size: int = 128,
        data_dir: str | None = None,
        activations: Sequence[str] = ("relu", "tanh", "gelu", "silu", "elu", "sigmoid"),
    ):
        self.activations = _choose(activations, ACTIVATIONS, "activations")
        super().__init__(
            dataset, image_size, hidden_sizes, self.activations[0], batch_size, data_dir
        )
        self._args += (("activations", self.activations),)
        sizes = "x".join(str(s) for s in self.base_task.hidden_sizes) or "Linear"
        self.name = f"ImageMLPActivationFamily_{self.base_task.dataset_tag}_{sizes}"

    def sample(self, key: jax.Array) -> Cfg:
        """A uniformly drawn index into ``activations``."""
        return {"activation": jax.random.randint(key, (), 0, len(self.activations))}

    def task_fn(self, cfg: Cfg) -> Task:
        """The base MLP with activation ``activations[cfg["activation"]]``."""
        return _ActivationTask(self, cfg)
