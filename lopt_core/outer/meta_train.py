"""``meta_train``: the outer loop behind ``lopt train``.

It builds the truncated step, estimators and learner, then runs outer steps
with a progress bar, writes metrics as JSON lines, and checkpoints atomically
every ``checkpoint_every`` steps, at the end, and on Ctrl-C. A resumed run
reproduces the uninterrupted one: PRNG keys derive from (seed, step), and the
data iterators are fast-forwarded past the batches already consumed.
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
from flax import struct

from lopt_core.learned.base import LearnedOptimizer
from lopt_core.outer.checkpoints import load_checkpoint, save_checkpoint
from lopt_core.outer.gradient_estimators import GradientEstimator, TruncatedPES
from lopt_core.outer.learner import GradientLearner, LearnerState
from lopt_core.outer.truncated_step import VectorizedLOptTruncatedStep
from lopt_core.outer.truncation_schedules import ConstantTruncationSchedule, TruncationSchedule
from lopt_core.tasks import TaskFamily

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.msgpack"
METRICS_FILE = "metrics.jsonl"
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
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
) -> MetaTrainResult:
    """Meta-train ``learned_optimizer`` on ``task_family`` for ``num_steps`` outer steps.

    ``gradient_estimator`` is called with each truncated step to build an
    estimator (a class such as ``TruncatedPES``, or a gin-configured one).
    Files written in ``output_dir``: ``metrics.jsonl`` (one JSON object per
    step), ``checkpoints/latest.msgpack``, and ``operative_config.gin`` when the
    run was configured through gin.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}.")
    output_dir = Path(output_dir)
    latest = _check_output_dir(output_dir, resume)
    output_dir.mkdir(parents=True, exist_ok=True)
    learner = build_learner(
        task_family, learned_optimizer, gradient_estimator, truncation_schedule, num_tasks,
        random_initial_iteration_offset, meta_loss_split, num_estimators, outer_learning_rate,
        max_grad_norm,
    )  # fmt: skip
    base_key = jax.random.PRNGKey(seed)
    state = learner.init(jax.random.fold_in(base_key, -1 % 2**31))
    metrics_path = output_dir / METRICS_FILE
    if resume:
        state, header = load_checkpoint(latest, state)
        if header["seed"] != seed:
            raise ValueError(
                f"The run in {output_dir} was started with seed {header['seed']}, not {seed}; "
                "resume it with the same seed (its operative_config.gin has it)."
            )
        for est, drawn in zip(learner.estimators, header["batches_drawn"], strict=True):
            est.truncated_step.fast_forward(drawn)
        _truncate_metrics(metrics_path, int(state.step))
    _write_operative_config(output_dir)

    def checkpoint(state: LearnerState) -> None:
        header = {
            "step": int(state.step),
            "seed": seed,
            "batches_drawn": [dict(e.truncated_step.batches_drawn) for e in learner.estimators],
            "learned_optimizer": learned_optimizer.name,
        }
        save_checkpoint(latest, state, header)

    return _run_loop(
        learner, state, base_key, num_steps, checkpoint_every, checkpoint, metrics_path,
        output_dir, progress,
    )  # fmt: skip


def _run_loop(
    learner: GradientLearner,
    state: LearnerState,
    base_key: jax.Array,
    num_steps: int,
    checkpoint_every: int,
    checkpoint: Callable[[LearnerState], None],
    metrics_path: Path,
    output_dir: Path,
    progress: bool,
) -> MetaTrainResult:
    from tqdm.auto import tqdm

    start_step = int(state.step)
    bar = tqdm(
        total=num_steps, initial=start_step, desc="meta-train", unit="step", disable=not progress
    )
    last: dict[str, Any] = {}
    pending = None  # (step, device metrics): read one step late so the host never waits
    t_start = time.perf_counter()
    interrupted = False

    def flush(pending, metrics_file) -> dict[str, Any]:
        step, device_metrics = pending
        row = {"step": step, **{k: float(v) for k, v in jax.device_get(device_metrics).items()}}
        row["wall_s"] = round(time.perf_counter() - t_start, 4)
        metrics_file.write(json.dumps(row) + "\n")
        bar.set_postfix(meta_loss=f"{row['meta_loss']:.4g}", refresh=False)
        bar.update(1)
        if not math.isfinite(row["meta_loss"]):
            bar.write(f"step {step}: non-finite meta-loss; the update was skipped")
        return row

    with open(metrics_path, "a") as metrics_file:
        try:
            for step in range(start_step, num_steps):
                state, metrics = learner.update(state, jax.random.fold_in(base_key, step))
                if pending is not None:
                    last = flush(pending, metrics_file)
                pending = (step + 1, metrics)
                if (step + 1) % checkpoint_every == 0 and step + 1 < num_steps:
                    last = flush(pending, metrics_file)
                    pending = None
                    metrics_file.flush()
                    checkpoint(state)
        except KeyboardInterrupt:
            interrupted = True
            bar.write(f"Interrupted: saving a checkpoint at step {int(state.step)} in {output_dir}")
        finally:
            # The metrics of the step the state holds go out before the checkpoint does.
            if pending is not None and pending[0] == int(state.step):
                last = flush(pending, metrics_file)
            bar.close()
    checkpoint(state)
    return MetaTrainResult(state, str(output_dir), last, interrupted)
