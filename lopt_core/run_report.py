"""The report of ``lopt eval``: a run's learned optimizer against tuned baselines.

(``lopt_core.evaluation`` has the pieces: learning curves and tuning; this module
loads a run folder through its operative gin config and puts them together.)

For each target (held-out tasks of the training family, and any named task),
the learned optimizer, Adam at 1e-3, and Adam and SGDM with learning rates
tuned on inner_valid all train for twice the meta-training horizon; test
losses at the horizon and at twice it go into a table, ``eval.json`` and one
PNG plot per target. With metric writers (``lopt eval --log tensorboard``), each
optimizer's mean curves go to them too, as ``eval/<target>/<optimizer>/<split>_loss``
at inner-training steps.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lopt_core.evaluation import (
    TrainingCurves,
    as_family,
    best_setting,
    log_grid,
    multi_task_training_curves,
    sweep_curves,
)
from lopt_core.files import strict_json
from lopt_core.gin_config import parse_config
from lopt_core.keys import EVAL_HELD_OUT, EVAL_TUNING, tagged
from lopt_core.learned.base import LearnedOptimizer
from lopt_core.metric_writers import MetricWriters
from lopt_core.optimizers import SGDM, Adam
from lopt_core.outer.checkpoints import load_theta
from lopt_core.outer.run_dir import (
    BEST,
    CHECKPOINT_DIR,
    LATEST,
    OPERATIVE_CONFIG_FILE,
)
from lopt_core.outer.settings import DEFAULT_TRUNCATION_LENGTH
from lopt_core.outer.task_slots import TaskSlots
from lopt_core.outer.truncation_schedules import ConstantTruncationSchedule
from lopt_core.task_distributions import FamilyMixture, TaskDistribution
from lopt_core.tasks import Task, TaskFamily
from lopt_core.training import draw_family_batches
from lopt_core.validation import positive_int

DEFAULT_LR_GRID = tuple(log_grid(1e-4, 1.0, 9))
EVAL_FILE = "eval.json"


def query_built(selector: str) -> Any:
    """Build the object a gin binding like ``meta_train.task_family = @X()`` refers to."""
    import gin

    try:
        value = gin.query_parameter(selector)
    except ValueError:
        return None
    return _built(value)


def _built(value: Any) -> Any:
    """A queried gin value with its references built (also inside lists and tuples)."""
    import gin

    if isinstance(value, gin.config.ConfigurableReference):
        return value.scoped_configurable_fn() if value.evaluate else value.scoped_configurable_fn
    if isinstance(value, (list, tuple)):
        return type(value)(_built(v) for v in value)
    return value


def _training_families(seed: int) -> list[TaskFamily] | None:
    """The bound task family, or a task distribution's validation families (None: neither)."""
    family = query_built("meta_train.task_family")
    if family is not None:
        return [as_family(family)] if isinstance(family, (Task, TaskFamily)) else None
    distribution = query_built("meta_train.task_distribution")
    families = query_built("meta_train.task_families")
    if distribution is None and families is not None:
        distribution = FamilyMixture(families)
    if not isinstance(distribution, TaskDistribution):
        return None
    validation = query_built("meta_train.validation_families")
    slots = TaskSlots(distribution, jax.random.PRNGKey(seed), 1, validation)
    return slots.validation_families()


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best") -> dict[str, Any]:
    """The families, learned optimizer, theta, horizon and seed of the run in ``run_dir``.

    The families are the run's one family, or for a task distribution run the
    validation families it scored (named, or its held-out draws).

    ``checkpoint`` is ``best`` (falls back to ``latest`` when the run never
    validated) or ``latest``.
    """
    run_dir = Path(run_dir)
    config = run_dir / OPERATIVE_CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a lopt run folder: it has no {OPERATIVE_CONFIG_FILE} (written by "
            "`lopt train`). Point `lopt eval` at the --output-dir of a run."
        )
    if checkpoint not in ("best", "latest"):
        raise ValueError(f"checkpoint must be 'best' or 'latest', got {checkpoint!r}.")
    parse_config([config])
    learned_opt = query_built("meta_train.learned_optimizer")
    seed = query_built("meta_train.seed") or 0
    families = _training_families(int(seed))
    if families is None or not isinstance(learned_opt, LearnedOptimizer):
        raise ValueError(
            f"{config} does not bind meta_train.learned_optimizer and one of "
            "meta_train.task_family, task_distribution or task_families; was it written by "
            "`lopt train`?"
        )
    schedule = query_built("meta_train.truncation_schedule") or ConstantTruncationSchedule(
        DEFAULT_TRUNCATION_LENGTH
    )
    horizon = schedule.fixed_length
    path = run_dir / CHECKPOINT_DIR / (BEST if checkpoint == "best" else LATEST)
    used = checkpoint
    if checkpoint == "best" and not path.is_file():
        path, used = run_dir / CHECKPOINT_DIR / LATEST, "latest"
    theta, header = load_theta(path, learned_opt.init(jax.random.PRNGKey(0)))
    return {
        "families": families,
        "learned_optimizer": learned_opt,
        "theta": theta,
        "horizon": horizon,
        "seed": int(seed),
        "checkpoint": used,
        "checkpoint_step": header["step"],
    }


def _eval_every(horizon: int) -> int:
    """The largest divisor of ``horizon`` that is at most a tenth of it (>= 1)."""
    return max(d for d in range(1, max(1, horizon // 10) + 1) if horizon % d == 0)


def evaluate_target(
    target: TaskFamily,
    learned_opt: LearnedOptimizer,
    theta: Any,
    horizon: int,
    seeds: int,
    key: jax.Array,
    learning_rates: Sequence[float] = DEFAULT_LR_GRID,
    progress: Callable[[], None] | None = None,
) -> tuple[list[TrainingCurves], dict[str, float]]:
    """Curves of the learned optimizer and the baselines on ``target`` for ``2 * horizon`` steps.

    Baseline learning rates are tuned by inner_valid loss at the horizon, on
    runs of their own (another key: other tasks, inits and data than the
    reported runs); the chosen rates are returned too. Each baseline's sweep
    and its reported runs share one compiled program; every reported run
    (the learned optimizer's and the baselines') reads the same batches.
    """
    steps, every = 2 * horizon, _eval_every(horizon)
    held_out, tuning = tagged(key, EVAL_HELD_OUT), tagged(key, EVAL_TUNING)
    options = dict(num_runs=seeds, progress=progress, eval_every=every, num_eval_batches=4)
    reported = draw_family_batches(target, seeds, steps, every, 4)
    results = [
        multi_task_training_curves(
            target,
            learned_opt,
            held_out,
            seeds,
            steps,
            every,
            4,
            theta=theta,
            name=learned_opt.name,
            batches=reported,
        )
    ]
    if progress is not None:
        progress()
    chosen = {}
    for label, make in (("Adam", Adam), ("SGDM", SGDM)):
        sweep = sweep_curves(make, target, tuning, learning_rates, steps, **options)
        index, scores = best_setting(sweep, step=horizon)
        if not math.isfinite(scores[index]):
            raise ValueError(
                f"every learning rate in {list(learning_rates)} diverged for {label} on "
                f"{target.name}; try smaller ones."
            )
        best = chosen[label] = float(learning_rates[index])
        rates, names = [best], [f"{label} tuned lr={best:.3g}"]
        if label == "Adam":
            rates, names = [1e-3, best], ["Adam lr=1e-3", names[0]]
        results += sweep_curves(
            make, target, held_out, rates, steps, names=names, batches=reported, **options
        )
    return results, chosen


def _row(curves: TrainingCurves, horizon: int) -> dict[str, Any]:
    at_h, at_2h = curves.at_step("test", horizon), curves.at_step("test", 2 * horizon)
    finite = lambda x: [float(v) if math.isfinite(v) else None for v in x]
    return {
        "optimizer": curves.name,
        "test_loss_at_horizon": finite(at_h),
        "test_loss_at_2x_horizon": finite(at_2h),
        "summary": curves.summary("test"),
    }


def _mean_sd(values: Sequence[float | None]) -> str:
    xs = [v for v in values if v is not None]
    if not xs:
        return "diverged"
    mean = sum(xs) / len(xs)
    sd = (sum((x - mean) ** 2 for x in xs) / len(xs)) ** 0.5
    return f"{mean:.4f} ± {sd:.4f}" + ("" if len(xs) == len(values) else " (some diverged)")


def format_table(report: dict[str, Any]) -> str:
    """The report as Markdown tables, one per target."""
    lines = []
    for target in report["targets"]:
        h = target["horizon"]
        lines += [
            f"### {target['name']} ({target['seeds']} runs, test loss)",
            "",
            f"| optimizer | {h} steps | {2 * h} steps |",
            "|---|---|---|",
        ]
        for row in target["rows"]:
            at_h, at_2h = row["test_loss_at_horizon"], row["test_loss_at_2x_horizon"]
            lines.append(f"| {row['optimizer']} | {_mean_sd(at_h)} | {_mean_sd(at_2h)} |")
        lines.append("")
    return "\n".join(lines)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "target"


def log_curves(writers: MetricWriters, target: str, curves: Sequence[TrainingCurves]) -> None:
    """Each optimizer's mean curves (over its runs) to ``writers``, one row per inner step."""
    rows: dict[int, dict[str, float]] = {}
    for c in curves:
        base = f"eval/{_slug(target)}/{_slug(c.name)}"
        for step, loss in enumerate(np.mean(c.train_loss, axis=0)):
            rows.setdefault(step, {})[f"{base}/train_loss"] = loss
        for split in ("inner_valid", "test"):
            losses = getattr(c, f"{split}_loss")
            if losses is not None:
                for step, loss in zip(c.eval_steps, np.mean(losses, axis=0), strict=True):
                    rows.setdefault(int(step), {})[f"{base}/{split}_loss"] = loss
    for step in sorted(rows):
        writers.scalars(step, rows[step])


def evaluate_run(
    run_dir: str | os.PathLike,
    tasks: Sequence[Task | TaskFamily] = (),
    steps: int | None = None,
    seeds: int = 5,
    checkpoint: str = "best",
    learning_rates: Sequence[float] = DEFAULT_LR_GRID,
    progress: bool = True,
    held_out: bool = True,
    writers: MetricWriters | None = None,
) -> dict[str, Any]:
    """Evaluate the run in ``run_dir``; writes ``eval.json`` and ``eval_<target>.png`` there.

    Targets: new samples of the training family (unless ``held_out`` is
    False), then each of ``tasks`` (a Task is run from ``seeds`` seeds).
    ``steps`` is the horizon to report at (default: the run's truncation
    length); curves run to twice it. ``writers`` get every target's mean curves.
    """
    from tqdm.auto import tqdm

    from lopt_core.plotting import plot_curves

    seeds = positive_int(seeds, "seeds")
    run_dir = Path(run_dir)
    run = load_run(run_dir, checkpoint)
    if steps is not None:
        horizon = positive_int(steps, "--steps (the horizon to report at)")
    elif run["horizon"] is None:
        raise ValueError(
            "the run's truncation schedule has no fixed length: pass --steps N (the horizon to "
            "report at)."
        )
    else:
        horizon = run["horizon"]
    families = run["families"] if held_out else []
    targets = [(f"{family.name} (held-out tasks)", family) for family in families]
    targets += [(t.name, as_family(t)) for t in tasks]
    per_target = 1 + 2 * len(learning_rates) + 3
    bar = tqdm(total=per_target * len(targets), desc="lopt eval", unit="run", disable=not progress)
    key = jax.random.PRNGKey(run["seed"])
    report = {
        "run_dir": str(run_dir),
        "checkpoint": run["checkpoint"],
        "checkpoint_step": run["checkpoint_step"],
        "learned_optimizer": run["learned_optimizer"].name,
        "learning_rate_grid": list(learning_rates),
        "targets": [],
    }
    try:
        for name, family in targets:
            bar.set_postfix_str(name[:40])
            curves, chosen = evaluate_target(
                family,
                run["learned_optimizer"],
                run["theta"],
                horizon,
                seeds,
                key,
                learning_rates,
                bar.update,
            )
            plot = plot_curves(
                curves,
                run_dir / f"eval_{_slug(name)}.png",
                "test",
                title=f"{name}: test loss ({seeds} runs)",
                marker_steps=[horizon],
            )
            if writers is not None:
                log_curves(writers, name, curves)
            report["targets"].append(
                {
                    "name": name,
                    "horizon": horizon,
                    "seeds": seeds,
                    "tuned_learning_rates": chosen,
                    "plot": plot.name,
                    "rows": [_row(c, horizon) for c in curves],
                }
            )
    finally:
        bar.close()
    # Strict JSON: a diverged run's inf or NaN is written as null.
    (run_dir / EVAL_FILE).write_text(
        json.dumps(strict_json(report), indent=2, allow_nan=False) + "\n"
    )
    return report
