"""``lopt train``: meta-train a learned optimizer from gin config files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lopt_core.commands import add_gin_arguments

DEFAULT_CONFIG = "quickstart.gin"
DEFAULT_OUTPUT_ROOT = "runs"


def default_config() -> Path:
    """``gin/quickstart.gin`` in the current directory, else in lopt's source tree."""
    here = Path("gin") / DEFAULT_CONFIG
    if here.is_file():
        return here
    return Path(__file__).resolve().parents[2] / "gin" / DEFAULT_CONFIG


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``lopt train CONFIG.gin [--gin-param B ...] [--output-dir DIR] [--resume]``."""
    parser = subparsers.add_parser(
        "train",
        help="Meta-train a learned optimizer (default config: gin/quickstart.gin).",
        description=(
            "Meta-train a learned optimizer as the gin config describes (its `meta_train` "
            "bindings). Writes metrics.jsonl, checkpoints/ and operative_config.gin to the "
            "output directory; Ctrl-C saves a checkpoint, and --resume continues from it."
        ),
    )
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
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Parse the config, run ``meta_train``, and report where the results are."""
    from lopt_core.gin_config import meta_train, parse_config

    configs = [Path(c) for c in args.config] or [default_config()]
    output_dir = Path(args.output_dir or Path(DEFAULT_OUTPUT_ROOT) / configs[-1].stem)
    parse_config(configs, args.gin_param)
    result = meta_train(output_dir=output_dir, resume=args.resume, progress=not args.no_progress)
    last = result.last_metrics
    summary = f"meta-loss {last['meta_loss']:.4g} at step {last['step']}" if last else "no steps"
    print(f"{summary}; run saved in {output_dir}", file=sys.stderr)
    return 130 if result.interrupted else 0
