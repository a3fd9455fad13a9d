"""``lopt config FILE.gin [--gin-param B ...]``: parse and print the resolved config."""

from __future__ import annotations

import argparse

from lopt_core.commands import add_gin_arguments, parse_gin_arguments


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``config`` subcommand."""
    parser = subparsers.add_parser(
        "config",
        help="Parse gin config files and print the resolved config.",
        description=(
            "Parse the gin files (with their includes) and bindings against the installed "
            "plugins, and print every binding in force, or the error with its file and line."
        ),
    )
    add_gin_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print ``gin.config_str()`` of the parsed config."""
    import gin

    parse_gin_arguments(args)
    print(gin.config_str(), end="")
    return 0
