"""Distributions built from others: a mixture of distributions, and augmented draws.

- ``DistributionMixture``: each draw comes from one of ``distributions``
  (picked with ``probabilities``); the meta-gradient weight of a family is the
  one its distribution gives, times ``weights[i]``;
- ``AugmentedDistribution``: each draw of ``distribution`` is wrapped by
  ``augmentation`` (a task augmentation such as ``ReparamWeights``, given as
  the class or a gin reference without parentheses) with ``probability``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import jax
import numpy as np

from lopt_core import TaskFamily
from lopt_core.task_distributions import TaskDistribution, host_rng


def _distributions(values: Sequence[TaskDistribution], what: str) -> tuple[TaskDistribution, ...]:
    if isinstance(values, TaskDistribution) or not isinstance(values, (list, tuple)):
        raise TypeError(f"{what} must be a list of TaskDistributions, got {values!r}.")
    if not values:
        raise ValueError(f"{what} must list at least one TaskDistribution, got none.")
    for i, value in enumerate(values):
        if not isinstance(value, TaskDistribution):
            raise TypeError(
                f"{what}[{i}] must be a TaskDistribution, got {type(value).__name__}: {value!r}."
            )
    return tuple(values)


def _probabilities(values: Sequence[float] | None, n: int, what: str) -> np.ndarray:
    if values is None:
        return np.full(n, 1.0 / n)
    array = np.asarray(values, np.float64)
    if (
        array.shape != (n,)
        or not np.all(np.isfinite(array))
        or np.any(array < 0)
        or not array.sum()
    ):
        raise ValueError(
            f"{what} must be {n} finite non-negative numbers, not all zero; got {values!r}."
        )
    return array / array.sum()


class DistributionMixture(TaskDistribution):
    """Draws from one of ``distributions``, picked with ``probabilities`` (default uniform)."""

    def __init__(
        self,
        distributions: Sequence[TaskDistribution],
        probabilities: Sequence[float] | None = None,
        weights: Sequence[float] | None = None,
        name: str | None = None,
    ):
        self.distributions = _distributions(distributions, "distributions")
        n = len(self.distributions)
        self.probabilities = _probabilities(probabilities, n, "probabilities")
        self.weights = np.ones(n) if weights is None else _probabilities(weights, n, "weights") * n
        self.name = name or "Mixture(" + ", ".join(d.name for d in self.distributions) + ")"
        # family -> index of the distribution it was drawn from (for its weight)
        self._origin: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def sample(self, key: jax.Array) -> TaskFamily:
        index = int(host_rng(key).choice(len(self.distributions), p=self.probabilities))
        family = self.distributions[index].sample(jax.random.fold_in(key, 1))
        self._origin[family] = index
        return family

    def weight(self, family: TaskFamily) -> float:
        index = self._origin.get(family)
        if index is None:
            return 1.0
        return float(self.weights[index]) * self.distributions[index].weight(family)


class AugmentedDistribution(TaskDistribution):
    """Draws of ``distribution``, each wrapped by ``augmentation(family=...)`` with ``probability``.

    ``augmentation`` is a callable taking ``family=`` (a task augmentation class,
    or in gin a reference without parentheses, ``@ReparamWeights``, whose own
    bindings then apply).
    """

    def __init__(
        self,
        distribution: TaskDistribution,
        augmentation: Callable[..., TaskFamily],
        probability: float = 1.0,
        name: str | None = None,
    ):
        (self.distribution,) = _distributions([distribution], "distribution")
        if not callable(augmentation):
            raise TypeError(
                f"augmentation must be a task augmentation (a class, or @Name in gin without "
                f"parentheses), got {augmentation!r}."
            )
        if not 0.0 <= float(probability) <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability!r}.")
        self.augmentation = augmentation
        self.probability = float(probability)
        label = getattr(augmentation, "__name__", type(augmentation).__name__)
        self.name = name or f"{label}({self.distribution.name})"

    def sample(self, key: jax.Array) -> TaskFamily:
        family = self.distribution.sample(jax.random.fold_in(key, 1))
        if host_rng(key).uniform() < self.probability:
            family = self.augmentation(family=family)
            if not isinstance(family, TaskFamily):
                raise TypeError(
                    f"augmentation {self.augmentation!r} returned {type(family).__name__}, "
                    "not a TaskFamily."
                )
        return family

    def weight(self, family: TaskFamily) -> float:
        return self.distribution.weight(getattr(family, "family", family))
