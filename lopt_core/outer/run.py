"""``meta_train``: the entry point of meta-training, behind ``lopt train``.

It gathers its parameters into a ``LearnerSpec``, ``RunSettings`` and
``WorkerSettings`` (``lopt_core.outer.settings``), picks the executor (this
process, in-process workers, or Ray actors through ``lopt_core.distributed``),
and hands the run to a ``RunLoop``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from lopt_core.distributed import ray_meta_train
from lopt_core.learned.base import LearnedOptimizer
from lopt_core.outer.executors import Executor, LocalExecutor, PoolExecutor
from lopt_core.outer.gradient_estimators import TruncatedPES
from lopt_core.outer.mixture_executor import MixtureExecutor
from lopt_core.outer.run_dir import check_output_dir
from lopt_core.outer.run_loop import MetaTrainResult, RunLoop
from lopt_core.outer.settings import (
    EstimatorFactory,
    LearnerSpec,
    Recipe,
    RunSettings,
    WorkerSettings,
    fields_of,
)
from lopt_core.outer.truncation_schedules import TruncationSchedule
from lopt_core.outer.workers import GradientWorker, InProcessWorkers
from lopt_core.task_distributions import TaskDistribution
from lopt_core.tasks import Task, TaskFamily

# Called with the output folder once the run has built (or restored) its state:
# `lopt train` writes the operative gin config there.
OnStart = Callable[[Path], Any]


def meta_train(
    output_dir: str | os.PathLike,
    task_family: TaskFamily | Task | None = None,
    learned_optimizer: LearnedOptimizer | None = None,
    gradient_estimator: EstimatorFactory = TruncatedPES,
    truncation_schedule: TruncationSchedule | None = None,
    num_tasks: int = 8,
    random_initial_iteration_offset: int = 0,
    meta_loss_split: str = "outer_valid",
    num_estimators: int = 1,
    outer_learning_rate: float = 1e-3,
    max_grad_norm: float | None = 3.0,
    task_distribution: TaskDistribution | None = None,
    task_families: Sequence[TaskFamily | Task] | None = None,
    family_weights: Sequence[float] | None = None,
    resample_every: int = 0,
    max_programs: int | None = None,
    validation_families: Sequence[TaskFamily | Task] | int | None = None,
    initial_theta: str | os.PathLike | None = None,
    frozen_theta: Sequence[str] = (),
    num_steps: int = 1000,
    checkpoint_every: int = 100,
    validate_every: int = 0,
    validation_tasks: int = 4,
    validation_steps: int | None = None,
    validation_suite: str | None = None,
    seed: int = 0,
    metric_writers: Sequence[Any] = (),
    resume: bool = False,
    progress: bool = True,
    workers: int = 0,
    worker_mode: str = "sync",
    max_staleness: int = 1,
    ray: bool = False,
    ray_address: str | None = None,
    worker_options: dict[str, Any] | None = None,
    worker_restart_timeout: float = 300.0,
    recipe: Recipe | None = None,
    on_start: OnStart | None = None,
) -> MetaTrainResult:
    """Meta-train ``learned_optimizer`` on ``task_family`` for ``num_steps`` outer steps.

    In place of one ``task_family``, a ``task_distribution`` (or a list of
    ``task_families``, with meta-gradient ``family_weights``) gives each of the
    ``num_estimators`` estimator slots its own family, redrawn every
    ``resample_every`` outer steps (0: never); at most ``max_programs`` distinct
    families' programs stay compiled; validation scores ``validation_families``
    (families, or a number of held-out draws) by normalized loss
    (docs/task_distributions.md).

    ``gradient_estimator`` is called with each truncated step to build an
    estimator (a class such as ``TruncatedPES``, or a gin-configured one).
    Every ``validate_every`` steps (0: never) the current theta trains
    ``validation_tasks`` held-out tasks of the family for ``validation_steps``
    steps (default: the truncation schedule's fixed length) and is scored by
    the mean final inner_valid loss; the best-scoring theta is kept in
    ``checkpoints/best.msgpack``. With ``validation_suite`` (e.g. ``"tiny"``),
    validation also trains every task of that suite (``lopt bench``) and the
    best theta is the one with the highest IQM of normalized inner_valid score
    (test is never read: it stays for ``lopt bench``). ``metric_writers``
    (``MetricWriter`` objects such as the ``tensorboard`` and ``wandb`` plugins,
    or factories of them) also get every row, the settings and the operative
    config (docs/meta_training.md). Files written in ``output_dir``:
    ``metrics.jsonl`` (one JSON object per step), ``validation.jsonl`` and
    ``checkpoints/latest.msgpack``; ``on_start(output_dir)`` runs once the
    state is built or restored (``lopt train`` writes ``operative_config.gin``).

    Workers (docs/distributed.md): with ``workers=0`` (the default) every
    estimator runs in this process, fused with the update in one jitted call.
    With ``workers=N`` there are N gradient workers, each with its own
    ``num_estimators`` estimators, in this process (a debugging aid) or, with
    ``ray=True``, in Ray actors (a local Ray cluster, or the one at
    ``ray_address``). ``worker_mode="sync"`` averages all N workers' estimates
    each step (equal to ``workers=0`` with ``N * num_estimators`` estimators);
    ``"async"`` applies each worker's estimate as it arrives and drops those
    computed from a theta more than ``max_staleness`` steps old.
    ``worker_options`` are Ray actor options for the workers (e.g.
    ``{"num_gpus": 1}``); a crashed Ray worker has ``worker_restart_timeout``
    seconds to come back before its job counts as lost; ``recipe`` is a picklable
    function returning the ``LearnerSpec`` fields, called in every Ray actor to
    build its own tasks and data (default: the objects given here, pickled).

    ``initial_theta`` (a checkpoint path) starts theta from another run's (or a
    shipped theta file); ``frozen_theta`` names parts of theta (``/``-separated
    key prefixes such as ``"mlp"``) that the outer steps leave as they are.

    The parameters are grouped and checked by ``LearnerSpec``, ``RunSettings``
    and ``WorkerSettings``; ``run_meta_training`` takes those objects directly.
    """
    # Every parameter above belongs to exactly one of the three settings objects.
    args = locals()
    spec, run, placement = (
        fields_of(cls, args) for cls in (LearnerSpec, RunSettings, WorkerSettings)
    )
    return run_meta_training(
        output_dir, spec, run, placement, resume=resume, progress=progress, on_start=on_start
    )


class _ObjectsRecipe:
    """A recipe that returns the very objects it was made with (after pickling: copies)."""

    def __init__(self, spec: LearnerSpec):
        self.args = spec.recipe_args()

    def __call__(self) -> dict[str, Any]:
        return dict(self.args)


def objects_recipe(spec: LearnerSpec) -> Recipe:
    """A recipe returning ``spec``'s objects themselves: each Ray actor gets a pickled copy."""
    return _ObjectsRecipe(spec)


def run_meta_training(
    output_dir: str | os.PathLike,
    spec: LearnerSpec,
    run: RunSettings | None = None,
    placement: WorkerSettings | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    on_start: OnStart | None = None,
) -> MetaTrainResult:
    """``meta_train`` from its settings objects (see there; None: the defaults)."""
    run = RunSettings() if run is None else run
    placement = WorkerSettings() if placement is None else placement
    output_dir = Path(output_dir)
    on_ready = (lambda: None) if on_start is None else (lambda: on_start(output_dir))
    if spec.task_distribution is not None and (placement.ray or placement.workers):
        raise ValueError(
            "A task distribution (task_distribution or task_families) runs its slots in this "
            f"process for now; got workers={placement.workers}, ray={placement.ray}. Remove "
            "them, or meta-train one task_family per run on workers."
        )
    if placement.ray:  # ray_meta_train checks and makes the folder itself
        recipe = placement.recipe or objects_recipe(spec)
        return ray_meta_train(
            output_dir,
            recipe,
            run,
            placement,
            num_estimators=spec.num_estimators,
            resume=resume,
            progress=progress,
            on_ready=on_ready,
        )
    latest = check_output_dir(output_dir, resume)
    output_dir.mkdir(parents=True, exist_ok=True)
    base_key = jax.random.PRNGKey(run.seed)
    if spec.task_distribution is not None:
        executor: Executor = MixtureExecutor(spec, base_key)
    elif placement.workers == 0:
        executor = LocalExecutor(spec.build(), base_key)
    else:
        learner = spec.build(num_estimators=1)
        # The workers share this process's task family (so its data streams) and their
        # estimators (which hold no state: the workers do), so they compile once.
        estimators = spec.build().estimators
        pool = InProcessWorkers([GradientWorker(estimators, w) for w in range(placement.workers)])
        executor = PoolExecutor(
            learner,
            pool,
            base_key,
            spec.num_estimators,
            placement.worker_mode,
            placement.max_staleness,
        )
    try:
        loop = RunLoop(executor, output_dir, run)
        state = loop.start(latest if resume else None)
        on_ready()
        return loop.loop(state, progress=progress)
    finally:
        executor.close()
