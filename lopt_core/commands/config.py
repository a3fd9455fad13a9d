"""``lopt config FILE.gin [--gin-param B ...]``: parse and print the resolved config."""

from __future__ import annotations

import argparse

from lopt_core.commands import add_command, add_gin_arguments, parse_gin_arguments

HELP = "Parse gin config files and print the resolved config."
DESCRIPTION = (
    "Parse the gin files (with their includes) and bindings against the installed "
    "plugins, and print every binding in force, or the error with its file and line."
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``config`` subcommand."""
    parser = add_command(subparsers, "config", run, HELP, DESCRIPTION)
    add_gin_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print ``gin.config_str()`` of the parsed config."""
    import gin

    parse_gin_arguments(args)
    print(gin.config_str(), end="")
    return 0
