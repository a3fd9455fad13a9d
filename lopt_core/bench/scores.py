"""Scores of ``lopt bench``: normalized final loss, speedup, IQM and bootstrap intervals.

Per task, with ``init`` the test loss at step 0 and ``best`` the lowest final
test loss among the tuned baselines (means over runs):

- ``normalized = (init - final) / (init - best)``: 0 is no progress, 1 is the
  best tuned baseline, above 1 beats it. (Not "Adam@1e-3 is 0": when a tuned
  baseline barely beats Adam@1e-3, that scale divides by almost nothing.)
- ``speedup``: if the optimizer's mean test curve first reaches ``best`` at
  step ``s``, ``b / s``, where ``b`` is the step at which the best baseline's
  curve first reaches it (``b <= budget``; the best baseline scores 1);
  otherwise ``s' / budget`` (< 1), where ``s'`` is the step at which the best
  baseline's curve reaches the optimizer's final loss (0 when even its initial
  loss is lower: the optimizer made things worse). Steps are interpolated
  linearly between evaluations.

Over tasks: the interquartile mean (mean of the middle half, as rliable's
``trim_mean(x, 0.25)``), with a 95% stratified bootstrap interval: each
replicate resamples the runs of every task with replacement (tasks are the
strata) and recomputes the aggregate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def normalized_score(final: float, init: float, best: float) -> float:
    """``(init - final) / (init - best)``; ``-inf`` for a non-finite ``final``."""
    if not math.isfinite(final):
        return -math.inf
    scale = init - best
    if not scale > 0:
        raise ValueError(
            f"no tuned baseline lowered the loss (init {init:.4g}, best {best:.4g}): the task "
            "cannot normalize scores; check its budget and learning-rate grid."
        )
    return (init - final) / scale


def first_step_at_or_below(steps: np.ndarray, curve: np.ndarray, target: float) -> float | None:
    """The (linearly interpolated) step where ``curve`` first reaches ``target``; None if never."""
    curve = np.where(np.isfinite(curve), curve, np.inf)
    hits = np.flatnonzero(curve <= target)
    if not len(hits):
        return None
    i = int(hits[0])
    if i == 0:
        return float(steps[0])
    x0, x1, y0, y1 = steps[i - 1], steps[i], curve[i - 1], curve[i]
    if not (math.isfinite(y0) and y0 > y1):  # after a diverged evaluation: no slope to follow
        return float(x1)
    return float(x0 + (x1 - x0) * (y0 - target) / (y0 - y1))


def speedup(
    steps: np.ndarray, curve: np.ndarray, best_steps: np.ndarray, best_curve: np.ndarray
) -> float:
    """Speedup of ``curve`` over the best baseline's ``best_curve`` (see the module doc)."""
    budget = float(steps[-1])
    floor = float(steps[1]) / 2 if len(steps) > 1 else 1.0  # reached at step 0: cap the ratio
    target = float(best_curve[-1])
    reached = first_step_at_or_below(steps, curve, target)
    if reached is not None:
        baseline = first_step_at_or_below(best_steps, best_curve, target)
        return max(baseline, floor) / max(reached, floor)
    final = float(curve[-1])
    if not math.isfinite(final):
        return 0.0
    behind = first_step_at_or_below(best_steps, best_curve, final)
    return 0.0 if behind is None else behind / budget


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle half (``scipy.stats.trim_mean(x, 0.25)``)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    cut = int(0.25 * len(x))
    middle = x[cut : len(x) - cut]
    return float(np.mean(middle)) if len(middle) else math.nan


def stratified_bootstrap(
    runs: Sequence[np.ndarray],
    score: callable,
    aggregate: callable = iqm,
    replicates: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% interval of ``aggregate([score(i, runs_i) ...])`` with runs resampled per task.

    ``runs[i]`` holds task ``i``'s per-run values (e.g. final losses, or curves
    as rows); ``score(i, resampled_runs_i)`` turns them into the task's score.
    """
    rng = np.random.default_rng(seed)
    stats = np.empty(replicates)
    for r in range(replicates):
        per_task = []
        for i, x in enumerate(runs):
            pick = rng.integers(0, len(x), len(x))
            per_task.append(score(i, np.asarray(x)[pick]))
        stats[r] = aggregate(per_task)
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)
