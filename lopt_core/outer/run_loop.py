"""The run loop of meta-training: outer steps, metrics, validation and checkpoints.

``RunLoop`` wraps an executor (which computes the outer steps, here or on
workers) and owns the run's folder: it starts or restores the learner state,
runs the steps left with a progress bar, writes one metrics row per step,
validates on held-out tasks (keeping the best theta), and checkpoints
atomically every ``checkpoint_every`` steps, at the end, and on Ctrl-C. A
resumed run reproduces the uninterrupted one: keys derive from (seed, step),
and the executors fast-forward the data past the batches already consumed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import struct

from lopt_core import keys as key_tags
from lopt_core.bench.runner import Candidate, bench
from lopt_core.bench.scores import iqm
from lopt_core.bench.suites import get_suite
from lopt_core.evaluation import multi_task_training_curves, normalized_losses
from lopt_core.metric_writers import MetricWriters
from lopt_core.outer.checkpoints import (
    UnreadableCheckpointError,
    load_checkpoint,
    read_header,
    save_checkpoint,
)
from lopt_core.outer.executors import Executor
from lopt_core.outer.learner import GradientLearner, LearnerState
from lopt_core.outer.metrics_log import MetricsLog
from lopt_core.outer.progress import RunProgress
from lopt_core.outer.run_dir import (
    BEST,
    CHECKPOINT_DIR,
    LATEST,
    METRICS_FILE,
    OPERATIVE_CONFIG_FILE,
    PREVIOUS,
    VALIDATION_FILE,
    dumps_row,
    truncate_rows,
)
from lopt_core.outer.settings import RunSettings
from lopt_core.outer.stop_requests import StopRequests
from lopt_core.outer.workers import WorkersFailed


@struct.dataclass
class MetaTrainResult:
    """The final learner state, where the run's files are, and the last step's metrics."""

    state: LearnerState
    output_dir: str = struct.field(pytree_node=False)
    last_metrics: dict = struct.field(pytree_node=False, default_factory=dict)
    # What stopped the run early: "SIGINT", "SIGTERM", "stop request"; None: it finished.
    stopped_by: str | None = struct.field(pytree_node=False, default=None)
    # Every update this process tried was skipped (non-finite): theta did not learn.
    stuck: bool = struct.field(pytree_node=False, default=False)

    @property
    def interrupted(self) -> bool:
        """Whether the run stopped before its last step (a signal or a stop request)."""
        return self.stopped_by is not None


# The validation score of a task distribution run: mean normalized final inner_valid loss.
NORMALIZED = "normalized_inner_valid_loss"
SUITE_SCORE = "suite_normalized_iqm"  # higher is better


def _finite_mean(values: np.ndarray) -> float:
    """The mean, or inf when any value is not finite (a diverged run scores worst)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if np.all(np.isfinite(values)) else math.inf


def step_of(state: LearnerState) -> int:
    """The state's outer step as a Python int, read explicitly (``jax.device_get``).

    The loop itself never reads the step from the device: it counts steps on the
    host, so that it prepares the next step while the device computes this one.
    """
    return int(jax.device_get(state.step))


def _default_validation_steps(learner: GradientLearner) -> int:
    schedule = learner.estimators[0].truncated_step.trunc_sched
    if schedule.fixed_length is not None:
        return schedule.fixed_length
    raise ValueError(
        f"validate_every needs validation_steps when the truncation schedule ({schedule!r}) has "
        "no fixed length; set meta_train.validation_steps."
    )


class RunLoop:
    """A run's outer steps, files, validation and checkpoints, around an executor."""

    def __init__(
        self,
        executor: Executor,
        output_dir: Path,
        settings: RunSettings,
    ):
        self.executor = executor
        self.learner = executor.learner
        self.output_dir = output_dir
        self.settings = settings
        self.seed = settings.seed
        self.base_key = jax.random.PRNGKey(settings.seed)
        self.validation_steps = settings.validation_steps
        if settings.validate_every and self.validation_steps is None:
            self.validation_steps = _default_validation_steps(self.learner)
        self.best_score = math.inf
        self.checkpointed_step: int | None = None
        self.checkpoint_dir = output_dir / CHECKPOINT_DIR
        self.metrics_path = output_dir / METRICS_FILE
        self.validation_path = output_dir / VALIDATION_FILE
        if settings.validation_suite is not None:
            get_suite(settings.validation_suite)  # an unknown name fails now, not at step N
        self.writers = MetricWriters()  # the metric writers of `loop` (none outside it)

    def start(self, latest: Path | None) -> LearnerState:
        """The initial state, or the state of the checkpoint ``latest`` when resuming."""
        state = self.executor.init(key_tags.tagged(self.base_key, key_tags.INIT))
        if latest is not None:
            return self.restore(latest, state)
        # A run killed before its first periodic checkpoint can still be resumed, and a
        # new run can never be started over it by mistake.
        self.checkpoint(state)
        return state

    def restore(self, latest: Path, template: LearnerState) -> LearnerState:
        """The state of the checkpoint ``latest``, or of the previous one when it is damaged."""
        previous = latest.with_name(PREVIOUS)
        try:
            return self._restore(latest, template)
        except (UnreadableCheckpointError, FileNotFoundError) as e:
            if not previous.is_file():
                raise
            warnings.warn(
                f"{latest} cannot be used ({e}); resuming from the checkpoint before it, "
                f"{previous}.",
                stacklevel=2,
            )
            try:
                return self._restore(previous, template)
            except UnreadableCheckpointError as again:
                raise UnreadableCheckpointError(
                    f"{e} The previous checkpoint cannot be used either: {again} The run "
                    f"cannot be resumed; start it again in a new --output-dir."
                ) from again

    def _restore(self, latest: Path, template: LearnerState) -> LearnerState:
        # Checkpoints of worker pools hold no worker states (the workers keep them);
        # either kind of run continues either kind of checkpoint, rebuilding them.
        header = read_header(latest)
        template = self.executor.template_for(template, header)
        if header.get("worker_states", True):
            # A pool's template has no worker states (its workers keep them): skip the saved ones.
            ignore = () if template.worker_states else ("worker_states",)
        else:
            template, ignore = template.replace(worker_states=()), ()
        state, header = load_checkpoint(latest, template, ignore=ignore)
        if header["seed"] != self.seed:
            raise ValueError(
                f"The run in {self.output_dir} was started with seed {header['seed']}, not "
                f"{self.seed}; resume it with the same seed (its operative_config.gin has it)."
            )
        state = self.executor.restore(state, header)
        self.best_score = header.get("best_validation", math.inf)
        step = self.checkpointed_step = step_of(state)
        truncate_rows(self.metrics_path, step)
        truncate_rows(self.validation_path, step)
        return state

    def checkpoint(self, state: LearnerState, name: str = LATEST, **extra: Any) -> None:
        header = {
            "step": step_of(state),
            "seed": self.seed,
            **self.executor.header(),
            "worker_states": self.executor.keeps_worker_states,
            "best_validation": self.best_score,
            "learned_optimizer": self.learner.learned_opt.name,
            **extra,
        }
        previous = self.checkpoint_dir / PREVIOUS if name == LATEST else None
        save_checkpoint(self.checkpoint_dir / name, state, header, previous)
        if name == LATEST:
            self.checkpointed_step = header["step"]

    def validate(self, state: LearnerState) -> dict[str, Any]:
        """Score theta on held-out tasks; keep it as ``best`` when it is the best so far.

        One family: the mean final inner_valid loss. Several (a task distribution):
        the mean of each family's normalized one, each family's in its own column.
        """
        # The same held-out tasks every time (a key meta-training never uses), so
        # scores are comparable across steps.
        key = key_tags.tagged(self.base_key, key_tags.VALIDATION)
        families = self.executor.validation_families()
        normalized = self.executor.normalized_validation
        row: dict[str, Any] = {"step": step_of(state)}
        raw, scores = [], []
        with self.executor.host_draws():
            for index, family in enumerate(families):
                # Family 0 keeps the key of single-family runs.
                family_key = key if index == 0 else jax.random.fold_in(key, index)
                curves = multi_task_training_curves(
                    family,
                    self.learner.learned_opt,
                    family_key,
                    self.settings.validation_tasks,
                    self.validation_steps,
                    num_eval_batches=4,
                    eval_splits=("inner_valid",),
                    theta=state.theta,
                )
                final = curves.inner_valid_loss[:, -1]
                raw.append(_finite_mean(final))
                if normalized:
                    score = _finite_mean(
                        normalized_losses(family, family_key, self.settings.validation_tasks, final)
                    )
                    scores.append(score)
                    row[f"{NORMALIZED}/{family.name}"] = score
        row["inner_valid_loss"] = _finite_mean(np.asarray(raw))
        if normalized:
            row[NORMALIZED] = score = _finite_mean(np.asarray(scores))
        else:
            score = row["inner_valid_loss"]
        if self.settings.validation_suite is not None:
            row.update(self.suite_scores(state))
            score = -row[SUITE_SCORE]
        row["best"] = False
        if score < self.best_score:
            self.best_score = score
            row["best"] = True
            self.checkpoint(state, BEST, validation_score=score)
        with open(self.validation_path, "a") as f:
            f.write(dumps_row(row) + "\n")
        self.writers.row(row, prefix="validation/")
        return row

    def suite_scores(self, state: LearnerState) -> dict[str, float]:
        """IQM of the normalized inner_valid scores of theta on the validation suite, and
        each task's (``suite/<task>``); baselines come from the suite's archive."""
        learned = self.learner.learned_opt
        candidate = Candidate(learned.name, learned, state.theta)
        results = bench(
            candidate, self.settings.validation_suite, progress=False, split="inner_valid"
        )
        per_task = {
            f"suite/{r.task.label}": r.normalized(candidate.name)
            for r in results
            if r.skipped is None
        }
        return {SUITE_SCORE: iqm(list(per_task.values())), **per_task}

    def loop(
        self,
        state: LearnerState,
        progress: bool = True,
        should_stop: Callable[[], bool | str | None] | None = None,
        on_row: Callable[[dict[str, Any]], None] | None = None,
    ) -> MetaTrainResult:
        """Run the outer steps left; ``should_stop()`` true acts like Ctrl-C (a string is
        reported as what stopped the run), ``on_row`` sees each metrics row as it is written.

        SIGINT and SIGTERM stop the run after the current step, with every row
        written and a checkpoint. A ``KeyboardInterrupt`` mid-step (a second
        Ctrl-C) stops at once: the state is checkpointed only if the rows reach
        it, else the last checkpoint stands (and resuming recomputes the rest).
        """
        num_steps, checkpoint_every = self.settings.num_steps, self.settings.checkpoint_every
        bar = RunProgress(num_steps, step_of(state), progress)
        stopped_by = None
        # Line-buffered: each row is on disk as soon as it is written (`tail -f` shows
        # progress; a crash loses no row that was reported).
        with (
            StopRequests() as stop,
            open(self.metrics_path, "a", buffering=1) as file,
            self.open_writers(bar.write) as writers,
        ):
            log = MetricsLog(file, bar.write, writers.row_callback("outer/", on_row))
            try:
                for step in range(step_of(state), num_steps):
                    asked = should_stop() if should_stop is not None else None
                    if stop.requested or asked:
                        stopped_by = stop.requested or (
                            asked if isinstance(asked, str) else "stop request"
                        )
                        break
                    state, metrics = self.executor.step(state, step)
                    bar.start()  # the first step has compiled: the ETA starts now
                    if log.add(step + 1, metrics) is not None:
                        bar.update(log.postfix())
                    self._after_step(state, step + 1, log, bar, checkpoint_every)
            except KeyboardInterrupt:  # mid-step: a second Ctrl-C, or no handler installed
                stopped_by = "SIGINT"
                bar.close()
                self._stop_now(state, log)
            except WorkersFailed:
                # The state is the last consistent one: keep it for --resume, then report.
                self._finish(state, log, bar)
                raise
            else:
                self._finish(state, log, bar)
        if stopped_by is not None:
            bar.write(
                f"Stopped ({stopped_by}): checkpoint at step {self.checkpointed_step} in "
                f"{self.output_dir}; `lopt train --resume` continues it."
            )
        return MetaTrainResult(state, str(self.output_dir), log.last, stopped_by, log.stuck)

    def open_writers(self, say: Callable[[str], None]) -> MetricWriters:
        """Open the run's metric writers; they get the settings and the operative config now."""
        self.writers = MetricWriters(self.settings.metric_writers, self.output_dir, say)
        if self.writers:
            self.writers.hparams(self.hparams())
            config = self.output_dir / OPERATIVE_CONFIG_FILE
            if config.is_file():
                self.writers.text("operative_config", config.read_text())
        return self.writers

    def hparams(self) -> dict[str, Any]:
        """The run's settings as a flat dict, for metric writers."""
        settings = {
            name: value
            for name, value in vars(self.settings).items()
            if value is None or isinstance(value, (bool, int, float, str))
        }
        return {
            **settings,
            "learned_optimizer": self.learner.learned_opt.name,
            "num_estimators": len(self.learner.estimators),
            "output_dir": str(self.output_dir),
        }

    def _after_step(
        self, state: LearnerState, done: int, log: MetricsLog, bar: RunProgress, every: int
    ) -> None:
        # `done` is the step count as a Python int: reading state.step would make the host
        # wait for the device every step, instead of preparing the next step's data.
        validate_every = self.settings.validate_every
        if validate_every and done % validate_every == 0:
            row = self.validate(state)
            mark = " (best so far)" if row["best"] else ""
            what = NORMALIZED if NORMALIZED in row else "inner_valid_loss"
            text = f"step {done}: validation {what.replace('_', ' ')} {row[what]:.4g}"
            if SUITE_SCORE in row:  # it chooses the best checkpoint
                suite = self.settings.validation_suite
                text += f", suite {suite} normalized score (IQM) {row[SUITE_SCORE]:.4g}"
            bar.write(text + mark)
        if done % every == 0 and done < self.settings.num_steps:
            self._flush(log, bar)
            log.file.flush()
            self.checkpoint(state)

    def _flush(self, log: MetricsLog, bar: RunProgress) -> None:
        if log.flush() is not None:
            bar.update(log.postfix())

    def _finish(self, state: LearnerState, log: MetricsLog, bar: RunProgress) -> None:
        """Every row up to the state's step, then its checkpoint."""
        self._flush(log, bar)
        log.file.flush()
        bar.close()
        self.checkpoint(state)

    def _stop_now(self, state: LearnerState, log: MetricsLog) -> None:
        # Only a checkpoint the rows reach is kept: otherwise resuming would skip rows.
        if log.pending is not None and log.pending[0] == step_of(state):
            log.flush()
        log.file.flush()
        if log.last_step == step_of(state):
            self.checkpoint(state)
