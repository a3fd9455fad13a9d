"""Models of tabular data: MLPs and linear models (logistic / linear regression), and presets.

A task reads ``{"x": float32 [B, F], "y": ...}`` batches (see
``lopt_plugins.datasets.tabular``) and is a classifier when ``y`` is an integer
label (cross-entropy, ``accuracy`` extra, normalized by ``log(num_classes)``)
or a regressor when ``y`` is a float (MSE on targets standardized with the
dataset's ``target_mean``/``target_std``, normalized by the variance of the
standardized targets, which is 1 on the train split). Preset names read
``TabularMLP_<Dataset>_<Act><hidden sizes>``, ``Logistic_<Dataset>`` and
``Linear_<Dataset>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lopt_core import Datasets, Task
from lopt_core.registry import UnknownEntryError, get_registry
from lopt_core.validation import positive_int, positive_int_tuple
from lopt_plugins.tasks._common import (
    ACTIVATION_TAGS,
    ArgsEquality,
    activation_fn,
    classification_loss_and_aux,
    classification_normalizer,
    clipped,
)
from lopt_plugins.tasks._data import UnknownDatasetError, display_name, given_datasets_tag
from lopt_plugins.tasks.quadratics import QUADRATIC_MAX

Batch = dict[str, jax.Array]

TABULAR_BATCH = "{'x': float32 [B, F], 'y': int32 [B] (classes) or float32 [B] (regression)}"
# A regressor may overshoot early and recover, as a quadratic may: the same max.
REGRESSION_MAX = QUADRATIC_MAX
# The variance of targets standardized with the train split's mean and std, on that split.
STANDARDIZED_TARGET_VARIANCE = 1.0


def tabular_datasets(dataset: str | Datasets, batch_size: int) -> tuple[Datasets, str]:
    """``(Datasets, tag for names)``: a registered dataset built with ``batch_size``, or
    a ``Datasets`` as is."""
    if isinstance(dataset, Datasets):
        return dataset, given_datasets_tag(dataset)
    if not isinstance(dataset, str):
        raise TypeError(
            "dataset must be the name of a registered dataset or a lopt_core.Datasets, "
            f"got {type(dataset).__name__}: {dataset!r}."
        )
    try:
        entry = get_registry().entry("dataset", dataset)
    except UnknownEntryError as e:
        raise UnknownDatasetError(
            f"Unknown tabular dataset {dataset!r}. {e}\n"
            f"Or pass a lopt_core.Datasets of {TABULAR_BATCH} batches."
        ) from e
    return entry.factory(batch_size=batch_size), display_name(dataset)


def _batch_spec(datasets: Datasets, what: str) -> tuple[int, bool]:
    """``(num_features, is_classification)`` from a dataset's abstract batch."""
    spec = datasets.abstract_batch
    try:
        x, y = spec["x"], spec["y"]
        ok = len(x.shape) == 2 and len(y.shape) == 1
    except (KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise ValueError(
            f"{what} needs batches {TABULAR_BATCH}; got abstract_batch={spec!r}. "
            "(Is it a tabular dataset?)"
        )
    return int(x.shape[1]), bool(np.issubdtype(y.dtype, np.integer))


class TabularMLP(nn.Module):
    """``hidden_sizes`` dense layers with ``activation``, then ``num_outputs`` outputs.

    With ``zero_readout`` the output layer starts at zero (the model first predicts 0).
    """

    hidden_sizes: Sequence[int]
    num_outputs: int
    zero_readout: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, activation: Callable[[jax.Array], jax.Array]) -> jax.Array:
        for i, size in enumerate(self.hidden_sizes):
            x = activation(nn.Dense(size, name=f"hidden_{i}")(x))
        init = nn.initializers.zeros if self.zero_readout else nn.initializers.lecun_normal()
        return nn.Dense(self.num_outputs, kernel_init=init, name="readout")(x)


class TabularMLPTask(ArgsEquality, Task):
    """An MLP on a tabular dataset: classification or regression, as the data says.

    ``dataset`` is a registered dataset name (``wine``, ``breast_cancer``,
    ``iris``, ``diabetes``, or a plugin's) built with ``batch_size``, or a
    ``lopt_core.Datasets`` of ``{"x", "y"}`` batches. Hidden layers get flax's
    default init (lecun-normal kernels, zero biases); the readout starts at
    zero, so the model first predicts uniform classes or the train mean, and
    the normalized loss starts at 1 (about 1 for regression). Classification
    (integer ``y``): mean cross-entropy, ``accuracy`` extra, normalizer
    ``loss / log(num_classes)`` clipped to [0, 1.5]. Regression (float ``y``):
    MSE on standardized targets ``(y - target_mean) / target_std``, normalizer
    ``loss / 1`` (the standardized train targets' variance), clipped to [0, 10];
    NaN/inf map to the max.
    """

    def __init__(
        self,
        dataset: str | Datasets = "wine",
        hidden_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        batch_size: int = 32,
    ):
        self.hidden_sizes = positive_int_tuple(hidden_sizes, "hidden_sizes")
        self._build(dataset, activation, batch_size)
        self._args = (
            ("dataset", dataset),
            ("hidden_sizes", self.hidden_sizes),
            ("activation", activation),
            ("batch_size", self.batch_size),
        )
        sizes = "x".join(str(s) for s in self.hidden_sizes) or "Linear"
        self.name = f"TabularMLP_{self.dataset_tag}_{ACTIVATION_TAGS[activation]}{sizes}"

    def _build(self, dataset: str | Datasets, activation: str, batch_size: int) -> None:
        """Resolve the data and build the module (shared with ``TabularLinearTask``)."""
        self.activation = activation
        self._activation_fn = activation_fn(activation)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.datasets, self.dataset_tag = tabular_datasets(dataset, self.batch_size)
        what = type(self).__name__
        self.num_features, self.classification = _batch_spec(self.datasets, what)
        info = self.datasets.extra_info
        if self.classification:
            if "num_classes" not in info:
                raise ValueError(
                    f"{what} needs Datasets.extra_info['num_classes'] for integer labels; "
                    f"extra_info has only {sorted(info)}."
                )
            self.num_classes = int(info["num_classes"])
        else:
            self.num_classes = None
            self.target_mean = float(info.get("target_mean", 0.0))
            self.target_std = float(info.get("target_std", 1.0))
        outputs = self.num_classes if self.classification else 1
        self.module = TabularMLP(self.hidden_sizes, outputs, zero_readout=True)

    def init(self, key: jax.Array) -> Any:
        """Flax's init of the module, with a zero readout."""
        return self.module.init(key, jnp.zeros((1, self.num_features)), self._activation_fn)

    def outputs(self, params: Any, x: jax.Array) -> jax.Array:
        """Logits ``[B, num_classes]``, or standardized predictions ``[B]`` for regression."""
        out = self.module.apply(params, x, self._activation_fn)
        return out if self.classification else out[..., 0]

    def loss_and_aux(
        self, params: Any, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Cross-entropy and ``accuracy``, or the MSE on standardized targets (no extras)."""
        out = self.outputs(params, batch["x"])
        if self.classification:
            return classification_loss_and_aux(out, batch["y"])
        target = (batch["y"] - self.target_mean) / self.target_std
        return jnp.mean(jnp.square(out - target)), {}

    def normalizer(self, loss: jax.Array) -> jax.Array:
        """Classification: ``loss / log(num_classes)`` in [0, 1.5]; regression:
        ``loss / 1`` (standardized target variance) in [0, 10]; NaN/inf map to the max."""
        if self.classification:
            return classification_normalizer(loss, self.num_classes)
        return clipped(loss / STANDARDIZED_TARGET_VARIANCE, REGRESSION_MAX)


class TabularLinearTask(TabularMLPTask):
    """A linear model on a tabular dataset: multinomial logistic regression for integer
    labels (named ``Logistic_<Dataset>``), least-squares linear regression for float
    targets (``Linear_<Dataset>``).

    Weights and bias start at zero (the classic start of a convex problem): the
    initial loss is exactly ``log(num_classes)``, or the mean squared
    standardized target (~1). Loss and normalizer: those of ``TabularMLPTask``.
    """

    def __init__(self, dataset: str | Datasets = "breast_cancer", batch_size: int = 32):
        self.hidden_sizes = ()
        self._build(dataset, "relu", batch_size)
        self._args = (("dataset", dataset), ("batch_size", self.batch_size))
        kind = "Logistic" if self.classification else "Linear"
        self.name = f"{kind}_{self.dataset_tag}"


def preset(name: str, base: type[TabularMLPTask], doc: str, **fixed: Any) -> type:
    """A subclass of ``base`` named ``name`` with everything but ``batch_size`` fixed."""

    def __init__(self, batch_size: int = 32):
        base.__init__(self, batch_size=batch_size, **fixed)
        self.name = name

    attrs = {"__init__": __init__, "__doc__": doc, "__module__": __name__, "__qualname__": name}
    return type(name, (base,), attrs)


# (name, dataset, hidden sizes, activation); hidden sizes () is a linear model.
_PRESETS: tuple[tuple[str, str, tuple[int, ...], str], ...] = (
    ("TabularMLP_Wine_Relu32", "wine", (32,), "relu"),
    ("TabularMLP_Iris_Relu16", "iris", (16,), "relu"),
    ("TabularMLP_BreastCancer_Relu64x32", "breast_cancer", (64, 32), "relu"),
    ("TabularMLP_Diabetes_Relu64", "diabetes", (64,), "relu"),
    ("Logistic_Wine", "wine", (), ""),
    ("Logistic_Iris", "iris", (), ""),
    ("Logistic_BreastCancer", "breast_cancer", (), ""),
    ("Linear_Diabetes", "diabetes", (), ""),
)

PRESETS: dict[str, type[TabularMLPTask]] = {}
for _name, _dataset, _hidden, _act in _PRESETS:
    if _hidden:
        PRESETS[_name] = preset(
            _name,
            TabularMLPTask,
            f"MLP with hidden layers {_hidden} ({_act}) on {_dataset}; see TabularMLPTask.",
            dataset=_dataset,
            hidden_sizes=_hidden,
            activation=_act,
        )
    else:
        PRESETS[_name] = preset(
            _name,
            TabularLinearTask,
            f"Linear model on {_dataset}; see TabularLinearTask.",
            dataset=_dataset,
        )
# Module attributes, so that presets import and pickle by name.
globals().update(PRESETS)
