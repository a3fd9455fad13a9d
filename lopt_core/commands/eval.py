"""``lopt eval``: the learned optimizer of a run against tuned baselines."""

from __future__ import annotations

import argparse
import sys

from lopt_core.commands import add_command, add_log_argument, named_metric_writers

HELP = "Evaluate a run's learned optimizer against tuned Adam and SGDM."
DESCRIPTION = (
    "Load the run's checkpoint and operative config, train held-out tasks of its "
    "family (and any --task) with the learned optimizer, Adam at 1e-3, and Adam and "
    "SGDM tuned on inner_valid, for twice the horizon. Prints test losses at the "
    "horizon and at twice it; writes eval.json and eval_<target>.png into RUN_DIR."
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``lopt eval RUN_DIR [--task NAME ...] [--tasks-only] [--steps N] [--seeds K]
    [--checkpoint ...] [--log WRITER ...]``."""
    parser = add_command(subparsers, "eval", run, HELP, DESCRIPTION)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `lopt train`")
    parser.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="NAME",
        help="also evaluate on this registered task or task family; repeatable",
    )
    parser.add_argument(
        "--tasks-only",
        action="store_true",
        help="evaluate only on the --task targets, not on held-out tasks of the run's family",
    )
    parser.add_argument(
        "--steps", type=int, help="horizon to report at (default: the run's truncation length)"
    )
    parser.add_argument("--seeds", type=int, default=5, help="runs per optimizer (default 5)")
    parser.add_argument(
        "--checkpoint",
        choices=("best", "latest"),
        default="best",
        help="which theta (default best)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_argument(parser)
    return parser


def _named_target(name: str):
    from lopt_core.registry import get_registry

    registry = get_registry()
    kind = "task" if registry.has("task", name) else "task_family"
    return registry.create(kind, name)  # an unknown name raises with close matches


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the table."""
    from lopt_core.metric_writers import MetricWriters
    from lopt_core.run_report import evaluate_run, format_table

    if args.tasks_only and not args.task:
        raise ValueError("--tasks-only needs at least one --task NAME to evaluate on.")
    tasks = [_named_target(name) for name in args.task]
    factories = named_metric_writers(args.log, gin_configured=False)
    with MetricWriters(factories, args.run_dir) as writers:
        report = evaluate_run(
            args.run_dir,
            tasks,
            steps=args.steps,
            seeds=args.seeds,
            checkpoint=args.checkpoint,
            progress=not args.no_progress,
            held_out=not args.tasks_only,
            writers=writers,
        )
    print(
        f"{report['learned_optimizer']} from the {report['checkpoint']} checkpoint "
        f"(step {report['checkpoint_step']})\n"
    )
    print(format_table(report))
    print(f"wrote {args.run_dir}/eval.json and the plots", file=sys.stderr)
    return 0
