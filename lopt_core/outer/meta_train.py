"""``meta_train``: the outer loop behind ``lopt train``.

It builds the truncated step, estimators and learner, then runs outer steps
with a progress bar, writes metrics as JSON lines, and checkpoints atomically
every ``checkpoint_every`` steps, at the end, and on Ctrl-C. A resumed run
reproduces the uninterrupted one: PRNG keys derive from (seed, step), and the
data iterators are fast-forwarded past the batches already consumed.

Where the meta-gradients are estimated is the executor's business
(``lopt_core.outer.learner``): in this process, fused with the update (the
default), in a pool of in-process workers (``workers=N``), or in Ray actors
(``ray=True``, see ``lopt_core.distributed`` and docs/distributed.md).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import optax
from flax import serialization, struct

from lopt_core.learned.base import LearnedOptimizer
from lopt_core.outer.checkpoints import _check_shapes, load_checkpoint, save_checkpoint
from lopt_core.outer.gradient_estimators import GradientEstimator, TruncatedPES
from lopt_core.outer.learner import (
    MODES,
    Executor,
    GradientLearner,
    GradientWorker,
    InProcessWorkers,
    LearnerState,
    LocalExecutor,
    PoolExecutor,
    WorkersFailed,
)
from lopt_core.outer.truncated_step import VectorizedLOptTruncatedStep
from lopt_core.outer.truncation_schedules import ConstantTruncationSchedule, TruncationSchedule
from lopt_core.tasks import TaskFamily

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.msgpack"
BEST = "best.msgpack"
METRICS_FILE = "metrics.jsonl"
VALIDATION_FILE = "validation.jsonl"
OPERATIVE_CONFIG_FILE = "operative_config.gin"


@struct.dataclass
class MetaTrainResult:
    """The final learner state, where the run's files are, and the last step's metrics."""

    state: LearnerState
    output_dir: str = struct.field(pytree_node=False)
    last_metrics: dict = struct.field(pytree_node=False, default_factory=dict)
    interrupted: bool = struct.field(pytree_node=False, default=False)


def build_learner(
    task_family: TaskFamily,
    learned_optimizer: LearnedOptimizer,
    gradient_estimator: Callable[[VectorizedLOptTruncatedStep], GradientEstimator] = TruncatedPES,
    truncation_schedule: TruncationSchedule | None = None,
    num_tasks: int = 8,
    random_initial_iteration_offset: int = 0,
    meta_loss_split: str = "outer_valid",
    num_estimators: int = 1,
    outer_learning_rate: float = 1e-3,
    max_grad_norm: float | None = 3.0,
) -> GradientLearner:
    """A ``GradientLearner`` over ``num_estimators`` estimators, each with its own tasks."""
    if truncation_schedule is None:
        truncation_schedule = ConstantTruncationSchedule(200)
    if not isinstance(num_estimators, int) or num_estimators < 1:
        raise ValueError(f"num_estimators must be a positive integer, got {num_estimators!r}.")
    if not outer_learning_rate > 0:
        raise ValueError(f"outer_learning_rate must be positive, got {outer_learning_rate!r}.")
    estimators = []
    for _ in range(num_estimators):
        truncated_step = VectorizedLOptTruncatedStep(
            task_family,
            learned_optimizer,
            truncation_schedule,
            num_tasks,
            random_initial_iteration_offset=random_initial_iteration_offset,
            meta_loss_split=meta_loss_split,
        )
        estimator = gradient_estimator(truncated_step)
        if not isinstance(estimator, GradientEstimator):
            raise TypeError(
                f"gradient_estimator must build a GradientEstimator from a truncated step, "
                f"got {type(estimator).__name__} from {gradient_estimator!r}."
            )
        estimators.append(estimator)
    return GradientLearner(
        learned_optimizer, estimators, optax.adam(outer_learning_rate), max_grad_norm
    )


def _check_output_dir(output_dir: Path, resume: bool) -> Path:
    latest = output_dir / CHECKPOINT_DIR / LATEST
    if resume and not latest.is_file():
        raise FileNotFoundError(
            f"--resume: there is no checkpoint at {latest}. Start the run without --resume, "
            "or point --output-dir at the folder of the run to continue."
        )
    if not resume and latest.is_file():
        raise FileExistsError(
            f"{output_dir} already holds a run (checkpoint {latest}). Pass --resume to continue "
            "it, or choose another --output-dir."
        )
    return latest


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines of steps after ``last_step`` (they were lost with the crash)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= last_step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def _write_operative_config(output_dir: Path) -> None:
    """Record the gin config in force (if the run was configured through gin)."""
    import gin

    if gin.operative_config_str().strip():
        from lopt_core.gin_config import write_operative_config

        write_operative_config(output_dir, filename=OPERATIVE_CONFIG_FILE)


BUILD_ARGS = (
    "task_family",
    "learned_optimizer",
    "gradient_estimator",
    "truncation_schedule",
    "num_tasks",
    "random_initial_iteration_offset",
    "meta_loss_split",
    "outer_learning_rate",
    "max_grad_norm",
)


def meta_train(
    output_dir: str | os.PathLike,
    task_family: TaskFamily,
    learned_optimizer: LearnedOptimizer,
    gradient_estimator: Callable[[VectorizedLOptTruncatedStep], GradientEstimator] = TruncatedPES,
    truncation_schedule: TruncationSchedule | None = None,
    num_tasks: int = 8,
    random_initial_iteration_offset: int = 0,
    meta_loss_split: str = "outer_valid",
    num_estimators: int = 1,
    outer_learning_rate: float = 1e-3,
    max_grad_norm: float | None = 3.0,
    num_steps: int = 1000,
    checkpoint_every: int = 100,
    validate_every: int = 0,
    validation_tasks: int = 4,
    validation_steps: int | None = None,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    workers: int = 0,
    worker_mode: str = "sync",
    max_staleness: int = 1,
    ray: bool = False,
    ray_address: str | None = None,
    worker_options: dict[str, Any] | None = None,
    recipe: Callable[[], dict[str, Any]] | None = None,
) -> MetaTrainResult:
    """Meta-train ``learned_optimizer`` on ``task_family`` for ``num_steps`` outer steps.

    ``gradient_estimator`` is called with each truncated step to build an
    estimator (a class such as ``TruncatedPES``, or a gin-configured one).
    Every ``validate_every`` steps (0: never) the current theta trains
    ``validation_tasks`` held-out tasks of the family for ``validation_steps``
    steps (default: the truncation schedule's length) and is scored by the
    mean final inner_valid loss; the best-scoring theta is kept in
    ``checkpoints/best.msgpack``. Files written in ``output_dir``:
    ``metrics.jsonl`` (one JSON object per step), ``validation.jsonl``,
    ``checkpoints/latest.msgpack``, and ``operative_config.gin`` when the run
    was configured through gin.

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
    ``{"num_gpus": 1}``); ``recipe`` is a picklable function returning this
    function's build arguments (``BUILD_ARGS``), called in every Ray actor to
    build its own tasks and data (default: the objects given here, pickled).
    """
    for what, value, low in (
        ("num_steps", num_steps, 1),
        ("checkpoint_every", checkpoint_every, 1),
        ("validate_every", validate_every, 0),
        ("validation_tasks", validation_tasks, 1),
        ("workers", workers, 1 if ray else 0),
        ("max_staleness", max_staleness, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            hint = " (ray=True needs at least one worker)" if what == "workers" and ray else ""
            raise ValueError(f"{what} must be an integer >= {low}, got {value!r}{hint}.")
    if worker_mode not in MODES:
        raise ValueError(f"worker_mode must be one of {MODES}, got {worker_mode!r}.")
    output_dir = Path(output_dir)
    latest = _check_output_dir(output_dir, resume)
    output_dir.mkdir(parents=True, exist_ok=True)
    build_args = dict(
        task_family=task_family, learned_optimizer=learned_optimizer,
        gradient_estimator=gradient_estimator, truncation_schedule=truncation_schedule,
        num_tasks=num_tasks, random_initial_iteration_offset=random_initial_iteration_offset,
        meta_loss_split=meta_loss_split, outer_learning_rate=outer_learning_rate,
        max_grad_norm=max_grad_norm,
    )  # fmt: skip
    run_args = dict(
        validate_every=validate_every, validation_tasks=validation_tasks,
        validation_steps=validation_steps, seed=seed, num_steps=num_steps,
        checkpoint_every=checkpoint_every,
    )  # fmt: skip
    if ray:
        from lopt_core.distributed import ray_meta_train

        return ray_meta_train(
            output_dir, recipe or objects_recipe(build_args), workers=workers,
            num_estimators=num_estimators, mode=worker_mode, max_staleness=max_staleness,
            address=ray_address, worker_options=worker_options, resume=resume,
            progress=progress, on_ready=lambda: _write_operative_config(output_dir), **run_args,
        )  # fmt: skip
    if recipe is not None or ray_address is not None or worker_options is not None:
        raise ValueError(
            "recipe, ray_address and worker_options are for Ray actors; pass ray=True too."
        )
    base_key = jax.random.PRNGKey(seed)
    if workers == 0:
        learner = build_learner(**build_args, num_estimators=num_estimators)
        executor: Executor = LocalExecutor(learner, base_key)
    else:
        learner = build_learner(**build_args)
        # The workers share this process's task family (so its data streams) and their
        # estimators (which hold no state: the workers do), so they compile once.
        estimators = build_learner(**build_args, num_estimators=num_estimators).estimators
        pool = InProcessWorkers([GradientWorker(estimators, w) for w in range(workers)])
        executor = PoolExecutor(learner, pool, base_key, num_estimators, worker_mode, max_staleness)
    try:
        run = _Run(executor, output_dir, **run_args)
        state = run.start(latest if resume else None)
        _write_operative_config(output_dir)
        return run.loop(state, progress=progress)
    finally:
        executor.close()


class _ObjectsRecipe:
    """A recipe that returns the very objects it was made with (after pickling: copies)."""

    def __init__(self, build_args: dict[str, Any]):
        self.build_args = build_args

    def __call__(self) -> dict[str, Any]:
        return dict(self.build_args)


def objects_recipe(build_args: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """A recipe returning ``build_args`` themselves: each Ray actor gets a pickled copy."""
    return _ObjectsRecipe(build_args)


def _default_validation_steps(learner: GradientLearner) -> int:
    sched = learner.estimators[0].truncated_step.trunc_sched
    if isinstance(sched, ConstantTruncationSchedule):
        return sched.length
    raise ValueError(
        f"validate_every needs validation_steps when the truncation schedule ({sched!r}) has "
        "no fixed length; set meta_train.validation_steps."
    )


def _load_without_worker_states(path: Path, template: LearnerState) -> LearnerState:
    """A checkpoint's learner state, leaving out the worker states it holds."""
    raw = serialization.msgpack_restore(path.read_bytes())
    raw["state"]["worker_states"] = {}
    try:
        state = serialization.from_state_dict(template, raw["state"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"The checkpoint {path} does not match this run's configuration ({e}). Resume with "
            "the config the run was started with (its operative_config.gin)."
        ) from e
    _check_shapes(path, template, state)
    return state


def _read_header(path: Path) -> dict[str, Any]:
    return json.loads(serialization.msgpack_restore(path.read_bytes())["metadata"])


class _Run:
    """One meta-training run's files, validation and checkpoints, around an executor."""

    def __init__(
        self,
        executor: Executor,
        output_dir: Path,
        seed: int,
        validate_every: int,
        validation_tasks: int,
        validation_steps: int | None,
        num_steps: int,
        checkpoint_every: int,
    ):
        self.executor = executor
        self.learner = executor.learner
        self.output_dir = output_dir
        self.seed = seed
        self.base_key = jax.random.PRNGKey(seed)
        self.validate_every = validate_every
        self.validation_tasks = validation_tasks
        if validate_every and validation_steps is None:
            validation_steps = _default_validation_steps(self.learner)
        self.validation_steps = validation_steps
        self.num_steps = num_steps
        self.checkpoint_every = checkpoint_every
        self.best_score = math.inf
        self.checkpoint_dir = output_dir / CHECKPOINT_DIR
        self.metrics_path = output_dir / METRICS_FILE
        self.validation_path = output_dir / VALIDATION_FILE
        self.family = self.learner.estimators[0].truncated_step.task_family

    def start(self, latest: Path | None) -> LearnerState:
        """The initial state, or the state of the checkpoint ``latest`` when resuming."""
        state = self.executor.init(jax.random.fold_in(self.base_key, -1 % 2**31))
        return state if latest is None else self.restore(latest, state)

    def restore(self, latest: Path, template: LearnerState) -> LearnerState:
        # Checkpoints of worker pools hold no worker states (the workers keep them);
        # either kind of run continues either kind of checkpoint, rebuilding them.
        header = _read_header(latest)
        if header.get("worker_states", True) and not template.worker_states:
            state = _load_without_worker_states(latest, template)
        else:
            if not header.get("worker_states", True):
                template = template.replace(worker_states=())
            state, header = load_checkpoint(latest, template)
        if header["seed"] != self.seed:
            raise ValueError(
                f"The run in {self.output_dir} was started with seed {header['seed']}, not "
                f"{self.seed}; resume it with the same seed (its operative_config.gin has it)."
            )
        state = self.executor.restore(state, header)
        self.best_score = header.get("best_validation", math.inf)
        step = int(state.step)
        _truncate_metrics(self.metrics_path, step)
        _truncate_metrics(self.validation_path, step)
        return state

    def checkpoint(self, state: LearnerState, name: str = LATEST, **extra: Any) -> None:
        header = {
            "step": int(state.step),
            "seed": self.seed,
            **self.executor.header(),
            "worker_states": self.executor.keeps_worker_states,
            "best_validation": self.best_score,
            "learned_optimizer": self.learner.learned_opt.name,
            **extra,
        }
        save_checkpoint(self.checkpoint_dir / name, state, header)

    def validate(self, state: LearnerState) -> dict[str, Any]:
        """Score theta on held-out tasks; keep it as ``best`` when it is the best so far."""
        from lopt_core.evaluation import multi_task_training_curves

        # The same held-out tasks every time (a key meta-training never uses), so
        # scores are comparable across steps.
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), 2**31 - 2)
        with self.executor.host_draws():
            curves = multi_task_training_curves(
                self.family, self.learner.learned_opt, key, self.validation_tasks,
                self.validation_steps, num_eval_batches=4, eval_splits=("inner_valid",),
                theta=state.theta,
            )  # fmt: skip
        final = curves.inner_valid_loss[:, -1]
        score = float(final.mean()) if all(map(math.isfinite, final)) else math.inf
        row = {"step": int(state.step), "inner_valid_loss": score, "best": False}
        if score < self.best_score:
            self.best_score = score
            row["best"] = True
            self.checkpoint(state, BEST, validation_score=score)
        with open(self.validation_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        return row

    def loop(
        self,
        state: LearnerState,
        progress: bool = True,
        should_stop: Callable[[], bool] | None = None,
        on_row: Callable[[dict[str, Any]], None] | None = None,
    ) -> MetaTrainResult:
        """Run the outer steps left; ``should_stop()`` true acts like Ctrl-C, ``on_row`` sees
        each metrics row as it is written."""
        from tqdm.auto import tqdm

        num_steps, checkpoint_every = self.num_steps, self.checkpoint_every
        start_step = int(state.step)
        bar = tqdm(
            total=num_steps, initial=start_step, desc="meta-train", unit="step",
            disable=not progress,
        )  # fmt: skip
        last: dict[str, Any] = {}
        pending = None  # (step, device metrics): read one step late so the host never waits
        t_start = time.perf_counter()
        interrupted = False

        def flush(metrics_file) -> dict[str, Any]:
            step, device_metrics = pending
            metrics = jax.device_get(device_metrics)
            row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
            row["wall_s"] = round(time.perf_counter() - t_start, 4)
            metrics_file.write(json.dumps(row) + "\n")
            bar.set_postfix(meta_loss=f"{row['meta_loss']:.4g}", refresh=False)
            bar.update(1)
            if not math.isfinite(row["meta_loss"]):
                bar.write(f"step {step}: non-finite meta-loss; the update was skipped")
            if on_row is not None:
                on_row(row)
            return row

        # Line-buffered: each row is on disk as soon as it is written (`tail -f` shows
        # progress; a crash loses no row that was reported).
        with open(self.metrics_path, "a", buffering=1) as metrics_file:
            try:
                for step in range(start_step, num_steps):
                    if should_stop is not None and should_stop():
                        raise KeyboardInterrupt
                    state, metrics = self.executor.step(state, step)
                    if pending is not None:
                        last = flush(metrics_file)
                    pending = (step + 1, metrics)
                    done = step + 1
                    if self.validate_every and done % self.validate_every == 0:
                        row = self.validate(state)
                        mark = " (best so far)" if row["best"] else ""
                        bar.write(
                            f"step {done}: validation inner_valid loss "
                            f"{row['inner_valid_loss']:.4g}{mark}"
                        )
                    if done % checkpoint_every == 0 and done < num_steps:
                        last = flush(metrics_file)
                        pending = None
                        metrics_file.flush()
                        self.checkpoint(state)
            except KeyboardInterrupt:
                interrupted = True
                bar.write(
                    f"Interrupted: saving a checkpoint at step {int(state.step)} in "
                    f"{self.output_dir}"
                )
            except WorkersFailed:
                # The state is the last consistent one: keep it for --resume, then report.
                if pending is not None and pending[0] == int(state.step):
                    last = flush(metrics_file)
                    pending = None
                metrics_file.flush()
                self.checkpoint(state)
                raise
            finally:
                # The metrics of the step the state holds go out before the checkpoint does.
                if pending is not None and pending[0] == int(state.step):
                    last = flush(metrics_file)
                bar.close()
        self.checkpoint(state)
        return MetaTrainResult(state, str(self.output_dir), last, interrupted)
