"""Drawing static configs on the host, and keeping each draw inside a cost bound.

Every sampled-architecture distribution draws plain Python values (ints,
strings, tuples) with a ``numpy`` generator seeded by the draw's key, builds the
task they describe and checks its cost: parameter count and the estimated
millions of floating-point operations of one inner training step of one task
(forward and backward, about 3x the forward pass's 2 flops per multiply-add).
A draw over either bound is redrawn, as the reference's ``timed_sample_*``
functions redraw configs that would take too long.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from lopt_core import Task, TaskFamily, single_task_to_family
from lopt_core.task_distributions import TaskDistribution, host_rng
from lopt_core.validation import positive_float, positive_int

# Redraws before a distribution gives up on its cost bound.
MAX_DRAWS = 200
# Flops of a training step per multiply-add of the forward pass: 2 forward, 4 backward.
FLOPS_PER_MAC = 6


@dataclasses.dataclass(frozen=True)
class Cost:
    """What one inner training step of one sampled task costs."""

    params: int
    step_mflops: float


def int_range(value: Any, what: str) -> tuple[int, int]:
    """``(low, high)`` positive ints with ``low <= high`` (an int ``n`` means ``(n, n)``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{what} must be (low, high) or one int, got {value!r}.")
    low, high = (positive_int(v, what) for v in value)
    if low > high:
        raise ValueError(f"{what} must have low <= high, got {value!r}.")
    return low, high


def options(value: Any, what: str, known: Sequence[Any] | None = None) -> tuple[Any, ...]:
    """A non-empty tuple of choices (a single string is one choice), each in ``known``."""
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        value = (value,)
    value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if not value:
        raise ValueError(f"{what} must list at least one choice, got an empty list.")
    if known is not None:
        unknown = [v for v in value if v not in known]
        if unknown:
            raise ValueError(
                f"{what}: unknown {unknown!r}; the choices are {', '.join(map(str, known))}."
            )
    return value


def int_options(value: Any, what: str) -> tuple[int, ...]:
    """A non-empty tuple of positive int choices (a single int is one choice)."""
    return tuple(positive_int(v, what) for v in options(value, what))


def log_uniform_int(
    rng: np.random.Generator, bounds: tuple[int, int], powers_of_two: bool = False
) -> int:
    """An int drawn log-uniformly in ``[low, high]``; with ``powers_of_two``, one of the
    powers of two in that range (fewer distinct sizes: more draws share a compiled program).
    """
    low, high = bounds
    if powers_of_two:
        exponents = range(math.ceil(math.log2(low)), math.floor(math.log2(high)) + 1)
        if exponents:
            return 2 ** int(rng.integers(exponents.start, exponents.stop))
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def pick(rng: np.random.Generator, choices: Sequence[Any]) -> Any:
    """One of ``choices``, uniformly (by index: the choices may be tuples)."""
    return choices[int(rng.integers(len(choices)))]


class BoundedDistribution(TaskDistribution):
    """A distribution of single-task families drawn within ``max_params`` and ``max_step_mflops``.

    Subclasses implement ``draw(rng) -> Task`` and ``cost(task) -> Cost``.
    A family is the sampled task's seeds (``single_task_to_family``); equal
    drawn configs build equal tasks, hence equal families that share compiled
    programs. The constructor draws once, so that a bound no config can meet,
    or data that is missing, fails when the distribution is made.
    """

    def __init__(self, max_params: int, max_step_mflops: float):
        self.max_params = positive_int(max_params, "max_params")
        self.max_step_mflops = positive_float(max_step_mflops, "max_step_mflops")

    def draw(self, rng: np.random.Generator) -> Task:
        """Build the task of one drawn config."""
        raise NotImplementedError

    def cost(self, task: Task) -> Cost:
        """The cost of one training step of ``task``."""
        raise NotImplementedError

    def within_bound(self, task: Task) -> bool:
        """Whether ``task`` costs no more than the bounds."""
        cost = self.cost(task)
        return cost.params <= self.max_params and cost.step_mflops <= self.max_step_mflops

    def sample(self, key: jax.Array) -> TaskFamily:
        """The family of a task drawn within the cost bound (redrawn up to ``MAX_DRAWS`` times)."""
        return single_task_to_family(self.sample_task(host_rng(key)))

    def sample_task(self, rng: np.random.Generator) -> Task:
        """A task drawn within the cost bound."""
        cheapest = None
        for _ in range(MAX_DRAWS):
            task = self.draw(rng)
            if self.within_bound(task):
                return task
            cost = self.cost(task)
            if cheapest is None or cost.params < cheapest[1].params:
                cheapest = (task, cost)
        task, cost = cheapest
        raise ValueError(
            f"{self.name}: no draw in {MAX_DRAWS} fits max_params={self.max_params} and "
            f"max_step_mflops={self.max_step_mflops}; the smallest drawn, {task.name}, has "
            f"{cost.params} parameters and {cost.step_mflops:.3g} MFLOP per step. Raise the "
            "bounds or narrow the ranges (widths, depth, batch sizes)."
        )


def checked_first_draw(distribution: BoundedDistribution) -> None:
    """Draw once now: a bound nothing meets, or missing data, fails at construction."""
    distribution.sample_task(np.random.default_rng(0))
