"""Subcommands of the ``lopt`` command line, one module each.

A subcommand is a module in this package (its name not starting with ``_``)
with a function ``add_parser(subparsers) -> argparse.ArgumentParser`` that adds
its parser and sets ``func`` (``func(args) -> int``, the exit status) with
``parser.set_defaults(func=...)``. ``lopt_core.cli`` finds the modules itself:
adding ``lopt train`` means adding ``lopt_core/commands/train.py``, e.g.::

    from lopt_core.commands import add_command, add_gin_arguments, parse_gin_arguments

    def add_parser(subparsers):
        parser = add_command(subparsers, "train", run, "Meta-train...", "Longer text.")
        add_gin_arguments(parser)
        return parser

    def run(args) -> int:
        parse_gin_arguments(args)   # raises GinConfigError, which `lopt` prints
        ...
        return 0
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_command(
    subparsers, name: str, run: Callable[[argparse.Namespace], int], help: str, description: str
) -> argparse.ArgumentParser:
    """Add the subcommand ``name``, run by ``run(args) -> exit status``; returns its parser."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(func=run)
    return parser


def add_gin_arguments(parser: argparse.ArgumentParser, *, config_required: bool = True) -> None:
    """Add ``CONFIG.gin ...`` (positional) and ``--gin-param BINDING`` (repeatable)."""
    parser.add_argument(
        "config",
        nargs="+" if config_required else "*",
        metavar="CONFIG.gin",
        help="gin config files, parsed in order (they may `include` others).",
    )
    parser.add_argument(
        "--gin-param",
        "-p",
        action="append",
        default=[],
        metavar="BINDING",
        help="a gin binding overriding the files, e.g. 'Adam.learning_rate = 3e-4'; repeatable.",
    )


def parse_gin_arguments(args: argparse.Namespace) -> None:
    """Parse the config files and bindings added by ``add_gin_arguments`` into gin."""
    from lopt_core.gin_config import parse_config

    parse_config(args.config, args.gin_param)


def add_log_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--log WRITER`` (repeatable): metric writers besides the JSON-lines files."""
    parser.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="WRITER",
        help="also log to this metric writer: tensorboard, wandb, or any installed "
        "`metric_writer` plugin (`lopt plugins --kind metric_writer`); repeatable. "
        "jsonl (metrics.jsonl) is always on.",
    )


ALWAYS_ON_WRITER = "jsonl"


def named_metric_writers(names: list[str], *, gin_configured: bool) -> list:
    """Factories of the metric writers named by ``--log`` (``jsonl``, always on, adds none).

    ``gin_configured``: the gin-configured factories (``tensorboard.log_dir = ...``
    in the run's config applies), else the registry's plain ones.
    """
    import difflib

    from lopt_core.registry import get_registry

    registry = get_registry()
    known = registry.names("metric_writer")
    factories = []
    for name in dict.fromkeys(names):
        if name == ALWAYS_ON_WRITER:
            continue
        if name not in known:
            close = difflib.get_close_matches(name, [ALWAYS_ON_WRITER, *known], n=2)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(
                f"--log {name}: there is no metric writer named {name!r}.{hint} Installed: "
                f"{', '.join([ALWAYS_ON_WRITER, *known])} (`lopt plugins --kind metric_writer`)."
            )
        if gin_configured:
            import gin

            from lopt_core.gin_config import entry_module

            factories.append(gin.get_configurable(f"{entry_module('metric_writer')}.{name}"))
        else:
            factories.append(registry.get("metric_writer", name))
    return factories
