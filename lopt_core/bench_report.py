"""The report of ``lopt bench``: what is benched, the Markdown table, bench.json and plots.

(``lopt_core.bench`` runs and scores; this module turns command-line choices
into a ``Candidate`` (a run folder, a learned optimizer with a theta file, a
registered or gin-configured optimizer) and writes the results.)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from lopt_core.bench import Candidate, TaskResult, aggregate
from lopt_core.bench.plots import plot_aggregate, plot_task_grid
from lopt_core.bench.suites import Suite
from lopt_core.files import strict_json, write_atomic
from lopt_core.learned.base import LearnedOptimizer
from lopt_core.outer.checkpoints import load_theta
from lopt_core.run_report import load_run, query_built

BENCH_FILE = "bench.json"
TASKS_PLOT = "bench_tasks.png"
AGGREGATE_PLOT = "bench_aggregate.png"


def run_candidate(run_dir: str | os.PathLike, checkpoint: str = "best") -> Candidate:
    """The learned optimizer of a ``lopt train`` run folder, with its best or latest theta."""
    run = load_run(run_dir, checkpoint)
    name = f"{run['learned_optimizer'].name} ({Path(run_dir).name}, {run['checkpoint']})"
    return Candidate(name, run["learned_optimizer"], run["theta"])


def pretrained_candidate(name: str) -> Candidate:
    """The registered pretrained optimizer ``name`` (``lopt_core.load_pretrained``)."""
    from lopt_core.pretrained_optimizers import load_pretrained

    found = load_pretrained(name)
    return Candidate(name, found.learned_optimizer, found.theta())


def configured_candidate(
    name: str,
    configs: Sequence[str | os.PathLike] = (),
    bindings: Sequence[str] = (),
    theta_file: str | os.PathLike | None = None,
) -> Candidate:
    """A registered optimizer or learned optimizer ``name``, configured by gin files and
    bindings (e.g. ``Adam.learning_rate = 3e-3``); a learned one loads ``theta_file`` (a
    checkpoint written by ``lopt train``)."""
    from lopt_core.gin_config import parse_config
    from lopt_core.registry import get_registry

    registry = get_registry()
    kind = "learned_optimizer" if registry.has("learned_optimizer", name) else "optimizer"
    registry.entry(kind, name)  # an unknown name raises with close matches
    parse_config(list(configs), [*bindings, f"BENCH_OPTIMIZER = @{name}()"])
    optimizer = query_built("%BENCH_OPTIMIZER")
    if not isinstance(optimizer, LearnedOptimizer):
        if theta_file is not None:
            raise ValueError(f"--theta is for learned optimizers; {name} is a hand-designed one.")
        return Candidate.of(optimizer, name=repr(optimizer))
    if theta_file is None:
        raise ValueError(
            f"{name} is a learned optimizer: give its meta-parameters with --theta FILE (a "
            "checkpoint of `lopt train`, e.g. runs/quickstart/checkpoints/best.msgpack), or "
            "bench the run folder itself."
        )
    theta, _ = load_theta(theta_file, optimizer.init(jax.random.PRNGKey(0)))
    return Candidate(f"{optimizer.name} ({Path(theta_file).name})", optimizer, theta)


def _fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def report_dict(
    suite: Suite, results: Sequence[TaskResult], names: Sequence[str], aggregates: dict
) -> dict[str, Any]:
    """Everything ``bench.json`` holds: per task, per optimizer, and the aggregates."""
    tasks = []
    for r in results:
        row: dict[str, Any] = {"task": r.task.label, **r.task.key_fields()}
        if r.skipped is not None:
            tasks.append({**row, "skipped": r.skipped})
            continue
        row.update(init_loss=r.init, best_loss=r.best, best_baseline=r.best_baseline)
        row["optimizers"] = {
            name: {
                "final_test_loss_mean": float(r.finals(name).mean()),
                "final_test_loss_runs": r.finals(name).tolist(),
                "normalized": r.normalized(name),
                "speedup": r.speedup(name),
                "eval_steps": r.curves[name].eval_steps.tolist(),
                "test_loss_mean": r.mean_curve(name).tolist(),
                **({"chosen": r.records[name]["chosen"]} if name in r.records else {}),
            }
            for name in names
        }
        tasks.append(row)
    return {
        "suite": suite.name,
        "suite_version": suite.version,
        "optimizers": list(names),
        "aggregates": aggregates,
        "tasks": tasks,
    }


def format_bench_table(report: dict[str, Any]) -> str:
    """Markdown: the aggregate table, then normalized score per task and optimizer."""
    names, agg = report["optimizers"], report["aggregates"]
    first = names[0]
    lines = [
        f"### Suite `{report['suite']}` (v{report['suite_version']}), {agg[first]['tasks']} tasks",
        "",
        "| optimizer | normalized score, IQM [95% CI] | speedup, IQM [95% CI] | "
        f"{first} beats it on |",
        "|---|---|---|---|",
    ]
    for name in names:
        a = agg[name]
        lo, hi = a["normalized_ci95"]
        slo, shi = a["speedup_ci95"]
        beats = (
            "" if name == first else f"{1 - a['beats'][first] if first in a['beats'] else 0:.0%}"
        )
        lines.append(
            f"| {name} | {_fmt(a['normalized_iqm'])} [{_fmt(lo)}, {_fmt(hi)}] | "
            f"{_fmt(a['speedup_iqm'])} [{_fmt(slo)}, {_fmt(shi)}] | {beats} |"
        )
    lines += ["", "| task | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for task in report["tasks"]:
        if "skipped" in task:
            lines.append(f"| {task['task']} | skipped: {task['skipped'][:80]} |")
            continue
        cells = [_fmt(task["optimizers"][n]["normalized"], 3) for n in names]
        lines.append(f"| {task['task']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Normalized score: 0 = the loss at initialization, 1 = the best tuned baseline's final "
        "test loss (docs/bench.md).",
    ]
    return "\n".join(lines)


def write_bench(
    suite: Suite,
    results: Sequence[TaskResult],
    output_dir: str | os.PathLike,
    replicates: int = 2000,
) -> dict[str, Any]:
    """Aggregate, write ``bench.json`` and the two plots into ``output_dir``; the report."""
    done = [r for r in results if r.skipped is None]
    if not done:
        reasons = "; ".join(f"{r.task.label}: {r.skipped}" for r in results)
        raise ValueError(f"no task of suite {suite.name!r} could run ({reasons}).")
    names = list(done[0].curves)
    aggregates = aggregate(results, names, replicates)
    report = report_dict(suite, results, names, aggregates)
    output_dir = Path(output_dir)
    report["plots"] = [
        plot_task_grid(results, names, output_dir / TASKS_PLOT).name,
        plot_aggregate(aggregates, output_dir / AGGREGATE_PLOT).name,
    ]
    text = json.dumps(strict_json(report), indent=1, allow_nan=False)
    write_atomic(output_dir / BENCH_FILE, text + "\n")
    return report


def log_bench(report: dict[str, Any], writers: Any) -> None:
    """Send a bench report to metric writers: per optimizer its aggregates
    (``bench/<optimizer>/*``) and per task its score and mean test curve
    (``bench/<task>/<optimizer>/*``, the curve by inner step)."""
    for name, values in report["aggregates"].items():
        flat = {
            "normalized_iqm": values["normalized_iqm"],
            "speedup_iqm": values["speedup_iqm"],
            **{f"beats/{other}": v for other, v in values["beats"].items()},
        }
        writers.scalars(0, flat, prefix=f"bench/{name}/")
    for task in report["tasks"]:
        for name, scores in task.get("optimizers", {}).items():
            prefix = f"bench/{task['task']}/{name}/"
            writers.scalars(0, {k: scores[k] for k in ("normalized", "speedup")}, prefix=prefix)
            for step, loss in zip(scores["eval_steps"], scores["test_loss_mean"], strict=True):
                writers.scalars(int(step), {"test_loss": loss}, prefix=prefix)
