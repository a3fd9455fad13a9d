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

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from flax import struct
from tqdm.auto import tqdm

from lopt_core import keys as key_tags
from lopt_core.evaluation import multi_task_training_curves
from lopt_core.outer.checkpoints import load_checkpoint, read_header, save_checkpoint
from lopt_core.outer.executors import Executor
from lopt_core.outer.learner import GradientLearner, LearnerState
from lopt_core.outer.run_dir import (
    BEST,
    CHECKPOINT_DIR,
    LATEST,
    METRICS_FILE,
    VALIDATION_FILE,
    truncate_rows,
)
from lopt_core.outer.settings import RunSettings
from lopt_core.outer.workers import WorkersFailed


@struct.dataclass
class MetaTrainResult:
    """The final learner state, where the run's files are, and the last step's metrics."""

    state: LearnerState
    output_dir: str = struct.field(pytree_node=False)
    last_metrics: dict = struct.field(pytree_node=False, default_factory=dict)
    interrupted: bool = struct.field(pytree_node=False, default=False)


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
        self.checkpoint_dir = output_dir / CHECKPOINT_DIR
        self.metrics_path = output_dir / METRICS_FILE
        self.validation_path = output_dir / VALIDATION_FILE

    def start(self, latest: Path | None) -> LearnerState:
        """The initial state, or the state of the checkpoint ``latest`` when resuming."""
        state = self.executor.init(key_tags.tagged(self.base_key, key_tags.INIT))
        return state if latest is None else self.restore(latest, state)

    def restore(self, latest: Path, template: LearnerState) -> LearnerState:
        # Checkpoints of worker pools hold no worker states (the workers keep them);
        # either kind of run continues either kind of checkpoint, rebuilding them.
        header = read_header(latest)
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
        step = int(state.step)
        truncate_rows(self.metrics_path, step)
        truncate_rows(self.validation_path, step)
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
        # The same held-out tasks every time (a key meta-training never uses), so
        # scores are comparable across steps.
        key = key_tags.tagged(self.base_key, key_tags.VALIDATION)
        with self.executor.host_draws():
            curves = multi_task_training_curves(
                self.learner.task_family,
                self.learner.learned_opt,
                key,
                self.settings.validation_tasks,
                self.validation_steps,
                num_eval_batches=4,
                eval_splits=("inner_valid",),
                theta=state.theta,
            )
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
        num_steps, checkpoint_every = self.settings.num_steps, self.settings.checkpoint_every
        start_step = int(state.step)
        bar = tqdm(
            total=num_steps,
            initial=start_step,
            desc="meta-train",
            unit="step",
            disable=not progress,
        )
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
                    every = self.settings.validate_every
                    if every and done % every == 0:
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
