"""The ``lopt`` command line."""

from __future__ import annotations

import argparse
import sys

import lopt_core


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lopt``; each subcommand adds a subparser."""
    parser = argparse.ArgumentParser(
        prog="lopt",
        description="lopt: meta-train learned optimizers over plugin tasks, configured by gin.",
    )
    parser.add_argument("--version", action="version", version=f"lopt {lopt_core.__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lopt`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
