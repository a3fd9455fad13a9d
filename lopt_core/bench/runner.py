"""``bench``: train an optimizer on every task of a suite and score it against the baselines."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optax

from lopt_core.bench.baselines import (
    BASELINES,
    Baseline,
    BaselineArchive,
    baseline_curves,
    held_out_key,
    run_options,
)
from lopt_core.bench.scores import iqm, normalized_score, speedup, stratified_bootstrap
from lopt_core.bench.suites import Suite, SuiteTask, get_suite
from lopt_core.evaluation import TrainingCurves, multi_task_training_curves
from lopt_core.learned.base import LearnedOptimizer
from lopt_core.optimizers import OptaxOptimizer, Optimizer


@dataclasses.dataclass
class Candidate:
    """What is benched: an ``Optimizer``, or a ``LearnedOptimizer`` with its ``theta``."""

    name: str
    optimizer: Optimizer | LearnedOptimizer
    theta: Any = None

    @classmethod
    def of(cls, optimizer: Any, theta: Any = None, name: str | None = None) -> Candidate:
        """A candidate from an lopt optimizer, a learned one with ``theta``, or an optax
        ``GradientTransformation``."""
        if isinstance(optimizer, optax.GradientTransformation) and not isinstance(
            optimizer, Optimizer
        ):
            optimizer = OptaxOptimizer(optimizer)
        if isinstance(optimizer, LearnedOptimizer):
            if theta is None:
                raise ValueError(f"benching the learned optimizer {optimizer.name} needs a theta.")
        elif not isinstance(optimizer, Optimizer):
            raise TypeError(
                "bench takes an lopt Optimizer, a LearnedOptimizer with theta, or an optax "
                f"GradientTransformation; got {type(optimizer).__name__}: {optimizer!r}."
            )
        return cls(name or optimizer.name, optimizer, theta)


@dataclasses.dataclass
class TaskResult:
    """One task's curves (the candidate's first, then each baseline's) and scores.

    Scores read ``split``: ``test`` for reports, ``inner_valid`` when choosing
    anything (e.g. the best checkpoint of a run). ``init``: mean loss at step 0;
    ``best``: lowest mean final loss of a tuned baseline, ``best_baseline`` its
    name. ``skipped`` says why a task could not run (e.g. its data is not on this
    machine); then all else is empty.
    """

    task: SuiteTask
    curves: dict[str, TrainingCurves] = dataclasses.field(default_factory=dict)
    records: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    init: float = math.nan
    best: float = math.nan
    best_baseline: str = ""
    skipped: str | None = None
    split: str = "test"

    def finals(self, name: str) -> np.ndarray:
        """Per-run final losses of optimizer ``name`` (inf where a run diverged)."""
        final = self.curves[name].losses(self.split)[:, -1]
        return np.where(np.isfinite(final), final, np.inf)

    def mean_curve(self, name: str, runs: np.ndarray | None = None) -> np.ndarray:
        """Mean curve of ``name`` over its runs (or over the given rows of them)."""
        losses = self.curves[name].losses(self.split) if runs is None else runs
        return np.mean(np.where(np.isfinite(losses), losses, np.inf), axis=0)

    def normalized(self, name: str, runs: np.ndarray | None = None) -> float:
        """``name``'s normalized score (of the given per-run finals, default all)."""
        finals = self.finals(name) if runs is None else runs
        return normalized_score(float(np.mean(finals)), self.init, self.best)

    def speedup(self, name: str, runs: np.ndarray | None = None) -> float:
        """``name``'s speedup over the best tuned baseline (of the given per-run curves)."""
        steps = self.curves[name].eval_steps
        best = self.curves[self.best_baseline]
        return speedup(
            steps, self.mean_curve(name, runs), best.eval_steps, self.mean_curve(self.best_baseline)
        )


def _task_result(
    task: SuiteTask, curves: dict, records: dict, tuned: Sequence[str], split: str
) -> TaskResult:
    result = TaskResult(task, curves, records, split=split)
    reference = curves[tuned[0]].losses(split)[:, 0]
    result.init = float(np.mean(reference))
    finals = {name: float(np.mean(result.finals(name))) for name in tuned}
    result.best_baseline = min(finals, key=finals.get)
    result.best = finals[result.best_baseline]
    return result


def bench_task(
    candidate: Candidate | None,
    task: SuiteTask,
    archive: BaselineArchive,
    baselines: Sequence[Baseline] = BASELINES,
    progress: Callable[[int], None] | None = None,
    recompute: bool = False,
    split: str = "test",
) -> TaskResult:
    """Baselines (archived or trained) and the candidate (None: baselines only) on ``task``,
    scored on ``split``."""
    try:
        family = task.build()
    except (FileNotFoundError, OSError) as error:  # data the user must point at
        if progress:
            progress(sum(b.num_runs for b in baselines) + (candidate is not None))
        return TaskResult(task, skipped=str(error).splitlines()[0])
    by_name = baseline_curves(task, archive, baselines, progress, recompute)
    curves = {name: c for name, (c, _) in by_name.items()}
    records = {name: r for name, (_, r) in by_name.items()}
    if candidate is not None:
        own = multi_task_training_curves(
            family,
            candidate.optimizer,
            held_out_key(task),
            task.seeds,
            task.steps,
            theta=candidate.theta,
            name=candidate.name,
            **run_options(task),
        )
        if progress:
            progress(1)
        curves = {candidate.name: own, **curves}
    tuned = [b.name for b in baselines if b.tuned]
    if not tuned:
        raise ValueError("bench needs at least one tuned baseline to normalize scores.")
    return _task_result(task, curves, records, tuned, split)


def bench(
    candidate: Candidate | None,
    suite: str | Suite,
    archive: BaselineArchive | None = None,
    baselines: Sequence[Baseline] = BASELINES,
    progress: bool = True,
    recompute: bool = False,
    split: str = "test",
) -> list[TaskResult]:
    """Run ``candidate`` (None: only the baselines) on every task of ``suite``, scored on
    ``split`` (``inner_valid`` to choose between optimizers without reading test).

    Baselines come from the suite's shipped archive or ``archive`` (default:
    the user cache); missing ones are trained and archived.
    """
    from tqdm.auto import tqdm

    if split not in ("test", "inner_valid"):
        raise ValueError(f"bench scores the test or inner_valid split, got {split!r}.")
    suite = get_suite(suite)
    if archive is None:
        archive = BaselineArchive(shipped=[suite.baselines] if suite.baselines else [])
    elif suite.baselines and suite.baselines not in archive.shipped:
        archive.shipped.append(suite.baselines)
    per_task = sum(b.num_runs for b in baselines) + (candidate is not None)
    bar = tqdm(
        total=per_task * len(suite.tasks),
        desc=f"lopt bench {suite.name}",
        unit="run",
        disable=not progress,
    )
    results = []
    try:
        for task in suite.tasks:
            bar.set_postfix_str(task.label[:40])
            results.append(
                bench_task(candidate, task, archive, baselines, bar.update, recompute, split)
            )
    finally:
        bar.close()
    return results


def aggregate(
    results: Sequence[TaskResult], names: Sequence[str], replicates: int = 2000
) -> dict[str, dict[str, Any]]:
    """Per optimizer: IQM of normalized score and of speedup over tasks, each with a 95%
    stratified bootstrap interval, and the fraction of tasks on which it beats each other
    optimizer (lower mean final loss), all on the split the results were scored on.
    Skipped tasks are left out."""
    done = [r for r in results if r.skipped is None]
    out = {}
    for name in names:
        finals = [r.finals(name) for r in done]
        curves = [r.curves[name].losses(r.split) for r in done]
        norm = [r.normalized(name) for r in done]
        fast = [r.speedup(name) for r in done]
        norm_ci = stratified_bootstrap(
            finals, lambda i, x, name=name: done[i].normalized(name, x), replicates=replicates
        )
        fast_ci = stratified_bootstrap(
            curves, lambda i, x, name=name: done[i].speedup(name, x), replicates=replicates
        )
        mean_final = lambda r, n: float(np.mean(r.finals(n)))
        beats = {
            other: float(np.mean([mean_final(r, name) < mean_final(r, other) for r in done]))
            for other in names
            if other != name
        }
        out[name] = {
            "tasks": len(done),
            "normalized_iqm": iqm(norm),
            "normalized_ci95": list(norm_ci),
            "speedup_iqm": iqm(fast),
            "speedup_ci95": list(fast_ci),
            "beats": beats,
        }
    return out
