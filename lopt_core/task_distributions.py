"""The ``TaskDistribution`` protocol: a distribution over task families of different graphs.

A ``TaskFamily`` varies tasks inside one computation graph (so ``jax.vmap``
trains many at once); a ``TaskDistribution`` varies the graph itself:
architecture, width, depth, dataset, batch size. It is sampled on the host:
``sample(key)`` returns a ``TaskFamily``, and meta-training compiles one
program per *distinct* family it meets. Two draws that should share a
compiled program must return families that are equal (``==`` and ``hash``),
which the built-in families are when built from equal arguments.

``FamilyMixture`` is the distribution of a fixed list of families, with
sampling probabilities and meta-gradient weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from lopt_core.tasks import Named, Task, TaskFamily, as_family


def host_rng(key: jax.Array) -> np.random.Generator:
    """A numpy generator seeded by ``key``: for host-side draws of static configs.

    The same key gives the same generator, so draws made from a run's keys are
    reproducible (resume, Ray workers) without any device computation in the draw.
    """
    data = np.asarray(jax.random.key_data(key) if _is_typed(key) else key, dtype=np.uint32)
    return np.random.default_rng([int(x) for x in data.ravel()])


def _is_typed(key: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key)


class TaskDistribution(Named):
    """A distribution over task families (each draw may have another graph).

    Subclasses implement ``sample(key) -> TaskFamily`` (host side: draw static
    Python values with ``host_rng(key)`` and build the family they describe).
    ``weight(family)`` is the weight of a slot holding ``family`` when the
    slots' meta-gradients are averaged (1 by default).
    """

    def sample(self, key: jax.Array) -> TaskFamily:
        """Draw one task family."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement sample(key) -> TaskFamily."
        )

    def weight(self, family: TaskFamily) -> float:
        """The meta-gradient weight of a slot that holds ``family``."""
        return 1.0

    def __repr__(self) -> str:
        return f"<TaskDistribution {self.name}>"


class FamilyMixture(TaskDistribution):
    """The distribution of a fixed list of ``families`` (``Task``s count as families).

    ``sample`` picks family ``i`` with probability ``probabilities[i]``
    (default: uniform); ``weights[i]`` is its meta-gradient weight (default 1).
    """

    def __init__(
        self,
        families: Sequence[TaskFamily | Task],
        weights: Sequence[float] | None = None,
        probabilities: Sequence[float] | None = None,
        name: str | None = None,
    ):
        if isinstance(families, (TaskFamily, Task)) or not isinstance(families, Sequence):
            raise TypeError(
                "families must be a list of TaskFamily or Task objects, got "
                f"{type(families).__name__}: {families!r}."
            )
        if not families:
            raise ValueError("families must list at least one TaskFamily, got an empty list.")
        self.families = tuple(as_family(f, f"families[{i}]") for i, f in enumerate(families))
        n = len(self.families)
        self.weights = _non_negative(weights, n, "weights")
        self.probabilities = _non_negative(probabilities, n, "probabilities")
        self.probabilities = self.probabilities / self.probabilities.sum()
        self.name = name or "Mixture(" + ", ".join(f.name for f in self.families) + ")"

    def sample(self, key: jax.Array) -> TaskFamily:
        """One of the families, drawn with ``probabilities``."""
        index = host_rng(key).choice(len(self.families), p=self.probabilities)
        return self.families[int(index)]

    def weight(self, family: TaskFamily) -> float:
        """``weights[i]`` of the family's index in ``families``."""
        for member, w in zip(self.families, self.weights, strict=True):
            if member is family or member == family:
                return float(w)
        return 1.0


def _non_negative(values: Sequence[float] | None, n: int, what: str) -> np.ndarray:
    if values is None:
        return np.ones(n)
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"{what} must have one entry per family ({n}), got {list(values)!r}.")
    if not np.all(np.isfinite(array)) or np.any(array < 0) or array.sum() <= 0:
        raise ValueError(
            f"{what} must be finite, non-negative and not all zero, got {list(values)!r}."
        )
    return array
