"""``lopt bench``: score an optimizer on a suite against baselines tuned per task."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from lopt_core.commands import add_command, add_log_argument, named_metric_writers

HELP = "Score an optimizer on a suite of held-out tasks against tuned baselines."
DESCRIPTION = (
    "Train an optimizer (a `lopt train` run folder, a registered learned optimizer with "
    "--theta, or a registered or gin-configured optimizer) on every task of a suite, next "
    "to Adam at 1e-3 and Adam, AdamW with warmup and cosine decay, and SGDM tuned per task "
    "on inner_valid. Prints a Markdown table of normalized scores and speedups (IQM with "
    "95%% bootstrap intervals); writes bench.json, bench_tasks.png and bench_aggregate.png. "
    "Baselines are read from the suite's shipped archive or the user cache, else trained "
    "and cached. See docs/bench.md."
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``lopt bench [RUN_DIR] [--suite S] [--optimizer NAME [-p B]] [--theta F]
    [--pretrained NAME] ...``."""
    parser = add_command(subparsers, "bench", run, HELP, DESCRIPTION)
    parser.add_argument(
        "run_dir", nargs="?", metavar="RUN_DIR", help="a folder written by `lopt train`"
    )
    parser.add_argument("--suite", default="tiny", help="a registered suite (default tiny)")
    parser.add_argument(
        "--task", action="append", default=[], metavar="NAME",
        help="only this task of the suite; repeatable",
    )  # fmt: skip
    what = parser.add_argument_group("what to bench (instead of RUN_DIR)")
    what.add_argument(
        "--optimizer", metavar="NAME",
        help="a registered optimizer or learned optimizer, e.g. Adam or MLPLOpt",
    )  # fmt: skip
    what.add_argument(
        "--gin", action="append", default=[], metavar="CONFIG.gin",
        help="gin files configuring --optimizer; repeatable",
    )  # fmt: skip
    what.add_argument(
        "--gin-param", "-p", action="append", default=[], metavar="BINDING",
        help="a gin binding for --optimizer, e.g. 'Adam.learning_rate = 3e-3'; repeatable",
    )  # fmt: skip
    what.add_argument("--theta", metavar="FILE", help="a learned optimizer's checkpoint file")
    what.add_argument(
        "--pretrained", metavar="NAME",
        help="a registered pretrained optimizer (`lopt plugins`), e.g. normalized_mlp_v1",
    )  # fmt: skip
    what.add_argument(
        "--checkpoint", choices=("best", "latest"), default="best",
        help="which theta of RUN_DIR (default best)",
    )  # fmt: skip
    what.add_argument(
        "--baselines-only", action="store_true",
        help="no optimizer: compute (or check) the suite's baselines and report them",
    )  # fmt: skip
    parser.add_argument(
        "--output-dir", "-o", metavar="DIR",
        help="where bench.json and the plots go (default: RUN_DIR/bench_<suite>, else "
        "bench/<optimizer>_<suite>)",
    )  # fmt: skip
    parser.add_argument(
        "--archive", metavar="DIR",
        help="baseline archive to read and write (default: $LOPT_BASELINE_ARCHIVE, else "
        "~/.cache/lopt/baselines)",
    )  # fmt: skip
    parser.add_argument(
        "--recompute", action="store_true",
        help="retrain the baselines even when archived (and overwrite the archive's copy)",
    )  # fmt: skip
    parser.add_argument(
        "--replicates", type=int, default=2000, help="bootstrap replicates (default 2000)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_argument(parser)
    return parser


def _candidate(args: argparse.Namespace):
    from lopt_core.bench_report import configured_candidate, pretrained_candidate, run_candidate

    given = (args.run_dir, args.optimizer, args.pretrained, args.baselines_only or None)
    chosen = [x for x in given if x]
    if len(chosen) != 1:
        raise ValueError(
            "give exactly one of RUN_DIR, --optimizer NAME, --pretrained NAME or --baselines-only "
            f"(got {len(chosen)}); e.g. `lopt bench runs/quickstart --suite tiny`."
        )
    if args.baselines_only:
        return None
    if args.run_dir:
        return run_candidate(args.run_dir, args.checkpoint)
    if args.pretrained:
        return pretrained_candidate(args.pretrained)
    return configured_candidate(args.optimizer, args.gin, args.gin_param, args.theta)


def run(args: argparse.Namespace) -> int:
    """Bench and print the table."""
    from lopt_core.bench import BaselineArchive, bench, get_suite
    from lopt_core.bench_report import format_bench_table, write_bench
    from lopt_core.validation import positive_int

    positive_int(args.replicates, "--replicates")
    candidate = _candidate(args)
    suite = get_suite(args.suite)
    if args.task:
        suite = suite.select(args.task)
    archive = BaselineArchive(args.archive)
    results = bench(
        candidate, suite, archive, progress=not args.no_progress, recompute=args.recompute
    )
    if args.output_dir:
        output_dir = Path(args.output_dir)
    elif args.run_dir:
        output_dir = Path(args.run_dir) / f"bench_{suite.name}"
    else:
        label = "baselines" if candidate is None else candidate.name
        output_dir = Path("bench") / (
            re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:60] + "_" + suite.name
        )
    report = write_bench(suite, results, output_dir, args.replicates)
    factories = named_metric_writers(args.log, gin_configured=False)
    if factories:
        from lopt_core.bench_report import log_bench
        from lopt_core.metric_writers import MetricWriters

        with MetricWriters(factories, output_dir) as writers:
            log_bench(report, writers)
    print(format_bench_table(report))
    print(f"wrote {output_dir}/bench.json and the plots", file=sys.stderr)
    return 0
