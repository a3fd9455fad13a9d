"""``lopt train``: meta-train a learned optimizer from gin config files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lopt_core.commands import (
    add_command,
    add_gin_arguments,
    add_log_argument,
    named_metric_writers,
)
from lopt_core.commands.recipes import find_recipe

DEFAULT_RECIPE = "quickstart"
DEFAULT_OUTPUT_ROOT = "runs"
DEFAULT_RAY_WORKERS = 2


HELP = "Meta-train a learned optimizer (default: the quickstart recipe; `lopt recipes`)."
DESCRIPTION = (
    "Meta-train a learned optimizer as the gin config describes (its `meta_train` "
    "bindings). Writes metrics.jsonl, checkpoints/ and operative_config.gin to the "
    "output directory; Ctrl-C saves a checkpoint, and --resume continues from it."
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``lopt train CONFIG.gin [-p B ...] [-o DIR] [--resume] [--log WRITER ...] [--ray]
    [--ray-address A] [--workers N]``."""
    parser = add_command(subparsers, "train", run, HELP, DESCRIPTION)
    add_gin_arguments(parser, config_required=False)
    parser.add_argument(
        "--output-dir",
        "-o",
        metavar="DIR",
        help=f"where the run's files go (default: {DEFAULT_OUTPUT_ROOT}/<config name>)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --output-dir from its checkpoint"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_argument(parser)
    ray = parser.add_argument_group(
        "distributed", "gradient workers on Ray (pip install 'lopt[ray]'; docs/distributed.md)"
    )
    ray.add_argument(
        "--ray",
        action="store_true",
        help="meta-train on Ray: a learner actor and --workers worker actors, on a new local "
        "Ray cluster unless --ray-address is given",
    )
    ray.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="join the running Ray cluster at ADDR (e.g. 10.0.0.1:6379, or 'auto' on one of "
        "its nodes); implies --ray",
    )
    ray.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"gradient workers, each with meta_train.num_estimators estimators (with --ray: "
        f"default meta_train.workers, else {DEFAULT_RAY_WORKERS}; without --ray: N workers in "
        "this process, a debugging aid)",
    )
    return parser


def _bound(selector: str) -> bool:
    import gin

    try:
        gin.query_parameter(selector)
    except ValueError:
        return False
    return True


def metric_writers_for(names: list[str]) -> list:
    """The writers bound in gin (``meta_train.metric_writers``), then those of ``--log``,
    built here with their gin parameters (objects, not gin's classes: Ray pickles them)."""
    import gin

    from lopt_core.metric_writers import MetricWriter

    bound = []
    if _bound("meta_train.metric_writers"):
        for item in gin.query_parameter("meta_train.metric_writers") or ():
            if isinstance(item, gin.config.ConfigurableReference):
                item = gin.get_configurable(item.selector)
            bound.append(item)
    named = [w for w in named_metric_writers(names, gin_configured=True) if w not in bound]
    return [w if isinstance(w, MetricWriter) else w() for w in bound + named]


def run(args: argparse.Namespace) -> int:
    """Parse the config, run ``meta_train``, and report where the results are."""
    from lopt_core.gin_config import configured, gin_recipe, parse_config, write_operative_config

    configs = [find_recipe(c) for c in args.config or [DEFAULT_RECIPE]]
    output_dir = Path(args.output_dir or Path(DEFAULT_OUTPUT_ROOT) / configs[-1].stem)
    parse_config(configs, args.gin_param)
    sources = ("task_family", "task_distribution", "task_families")
    missing = [] if any(_bound(f"meta_train.{p}") for p in sources) else ["task_family"]
    if not _bound("meta_train.learned_optimizer"):
        missing.append("learned_optimizer")
    if missing:
        unbound = " and no ".join(f"meta_train.{p}" for p in missing)
        raise ValueError(
            f"{', '.join(map(str, configs))} binds no {unbound}: `lopt train` meta-trains, so "
            "the config must say on what and what to train; e.g. "
            "meta_train.task_family = @FixedDimQuadraticFamily() (or a task_distribution, or "
            "task_families) and meta_train.learned_optimizer = @MLPLOpt() "
            "(gin/quickstart.gin is a complete recipe)."
        )
    options = {}
    if args.log:
        options["metric_writers"] = metric_writers_for(args.log)
    if args.workers is not None:
        options["workers"] = args.workers
    if args.ray or args.ray_address:
        # Every Ray actor rebuilds the run's objects from this config text.
        options.update(ray=True, recipe=gin_recipe())
        if args.ray_address:
            options["ray_address"] = args.ray_address
        if args.workers is None and not _bound("meta_train.workers"):
            options["workers"] = DEFAULT_RAY_WORKERS
    result = configured("meta_train")(
        output_dir=output_dir,
        resume=args.resume,
        progress=not args.no_progress,
        on_start=write_operative_config,
        **options,
    )
    return report(result, output_dir)


EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # the shell's 128 + signal number


def report(result, output_dir: Path) -> int:
    """Print the run's one-line summary (and what went wrong); return the exit status."""
    last = result.last_metrics
    if last:
        skipped = int(last.get("nonfinite_skipped", 0) or 0)
        summary = f"meta-loss {last['meta_loss']:.4g} at step {last['step']}"
        summary += f", {skipped} updates skipped (non-finite)" if skipped else ""
    else:
        summary = "no steps"
    print(f"{summary}; run saved in {output_dir}", file=sys.stderr)
    if result.stuck:
        print(
            "lopt: error: no outer step could update theta (every meta-loss or meta-gradient "
            "was non-finite): the learned optimizer did not learn. Check the task's loss and "
            "normalizer and the learned optimizer's initial step size.",
            file=sys.stderr,
        )
        return 1
    if result.stopped_by is not None:
        return EXIT_CODES.get(result.stopped_by, 130)
    return 0
