"""Small tabular datasets bundled with scikit-learn: wine, breast_cancer, iris, diabetes.

Batches are ``{"x": float32 [B, F], "y": int32 [B]}`` for the classification
datasets and ``{"x": float32 [B, F], "y": float32 [B]}`` for ``diabetes``
(regression, targets in their original units). Features are standardized with
the mean and standard deviation of the *train* split, so no statistic leaks
from the held-out splits. The data ships inside the scikit-learn wheel: nothing
is ever downloaded, and scikit-learn is imported only when a dataset is built.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lopt_core.datasets import SPLITS, Datasets, dataset_lru_cache
from lopt_core.validation import positive_int
from lopt_plugins.datasets._common import make_datasets, permuted_splits, split_sizes

# Fractions of the rows for inner_valid, outer_valid and test; train gets the rest (60%),
# as for digits.
TABULAR_FRACTIONS = (0.1, 0.1, 0.2)
# The seed of the permutation that carves the splits (the same for every dataset).
SPLIT_SEED = 0

# name -> (scikit-learn loader, task kind): what each builder reads.
_SOURCES: dict[str, tuple[str, str]] = {
    "wine": ("load_wine", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "iris": ("load_iris", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}


def _load(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features ``[N, F]`` (float64), targets ``[N]`` and feature names of one dataset."""
    import sklearn.datasets  # heavy import, only when a dataset is built

    loader = getattr(sklearn.datasets, _SOURCES[name][0])
    bunch = loader(scaled=False) if name == "diabetes" else loader()
    names = tuple(str(n) for n in bunch.feature_names)
    return np.asarray(bunch.data, np.float64), np.asarray(bunch.target), names


def _xy_batch(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"x": data["x"], "y": data["y"]}


def standardize(x: np.ndarray, train_ids: np.ndarray) -> tuple[np.ndarray, dict]:
    """``x`` standardized with the mean/std of rows ``train_ids`` (a constant column keeps
    std 1), as float32, and those statistics."""
    mean = x[train_ids].mean(axis=0)
    std = x[train_ids].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    stats = {"feature_mean": mean.astype(np.float32), "feature_std": std.astype(np.float32)}
    return ((x - mean) / std).astype(np.float32), stats


def build_tabular(name: str, batch_size: int) -> Datasets:
    """The ``Datasets`` of the bundled dataset ``name`` (one of ``_SOURCES``), uncached."""
    x, target, feature_names = _load(name)
    kind = _SOURCES[name][1]
    sizes = split_sizes(len(x), TABULAR_FRACTIONS, name)
    split_ids = dict(zip(SPLITS, permuted_splits(len(x), sizes, SPLIT_SEED), strict=True))
    x, stats = standardize(x, split_ids["train"])
    info = {"task": kind, "num_features": x.shape[1], "feature_names": feature_names, **stats}
    if kind == "classification":
        y = target.astype(np.int32)
        info["num_classes"] = int(y.max()) + 1
    else:
        y = target.astype(np.float32)
        train_y = target[split_ids["train"]].astype(np.float64)
        info["target_mean"] = float(train_y.mean())
        info["target_std"] = float(train_y.std())
    split_data = {s: {"x": x[ids], "y": y[ids]} for s, ids in split_ids.items()}
    return make_datasets(name, split_data, split_ids, batch_size, _xy_batch, info)


_DOC = """{title} from scikit-learn's bundled copy: {rows} rows, {features} features, {what}.

    No download. Splits: a fixed-seed permutation of the rows, ~60/10/10/20:
    train {sizes[0]}, inner_valid {sizes[1]}, outer_valid {sizes[2]}, test
    {sizes[3]}; ``example_ids`` index ``sklearn.datasets.{loader}()``. Batches:
    ``{{"x": float32 [B, {features}], "y": {ydtype} [B]}}``, features
    standardized with the train split's mean and std; a split smaller than
    ``batch_size`` repeats rows inside a batch. ``extra_info``: ``task``,
    ``num_features``, ``feature_names``, ``feature_mean``, ``feature_std``{extra}.
"""

# name -> (title, rows, features, what, extra_info entries beyond the common ones)
_FACTS: dict[str, tuple[str, int, int, str, str]] = {
    "wine": ("Wine recognition", 178, 13, "3 classes", ", ``num_classes=3``"),
    "breast_cancer": (
        "Breast cancer Wisconsin (diagnostic)",
        569,
        30,
        "2 classes",
        ", ``num_classes=2``",
    ),
    "iris": ("Iris", 150, 4, "3 classes", ", ``num_classes=3``"),
    "diabetes": (
        "Diabetes (raw, unscaled features)",
        442,
        10,
        "a real-valued target (disease progression, 25..346)",
        ", ``target_mean`` and ``target_std`` (of the train split's targets)",
    ),
}


def _builder(name: str) -> Callable[..., Datasets]:
    """The public, cached builder of one bundled dataset."""

    def load(batch_size: int) -> Datasets:
        return build_tabular(name, batch_size)

    load.__qualname__ = load.__name__ = f"_{name}"
    cached = dataset_lru_cache(load)

    def builder(batch_size: int = 32) -> Datasets:
        return cached(positive_int(batch_size, "batch_size"))

    title, rows, features, what, extra = _FACTS[name]
    kind = _SOURCES[name][1]
    # Named like a module-level function, so that it pickles and reads as one.
    builder.__qualname__ = builder.__name__ = name
    builder.__doc__ = _DOC.format(
        title=title,
        rows=rows,
        features=features,
        what=what,
        sizes=split_sizes(rows, TABULAR_FRACTIONS, name),
        loader=_SOURCES[name][0],
        ydtype="int32" if kind == "classification" else "float32",
        extra=extra,
    )
    builder.cache_clear = cached.cache_clear
    return builder


wine = _builder("wine")
breast_cancer = _builder("breast_cancer")
iris = _builder("iris")
diabetes = _builder("diabetes")
