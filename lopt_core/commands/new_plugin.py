"""``lopt new-plugin NAME [--dir DIR]``: write a complete lopt plugin package to start from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lopt_core.commands import add_command

HELP = "Write a new plugin package (a task family, a gin recipe, a test) to start from."
DESCRIPTION = (
    "Write the package NAME (e.g. lopt-tasks-foo) into DIR/NAME: pyproject.toml with the "
    "`lopt` entry point, a module registering a task, a task family and a dataset through "
    "the lopt_register hook, a gin recipe that meta-trains on the family, a README and a "
    "pytest test. `pip install -e DIR/NAME` and it shows in `lopt plugins` (docs/plugins.md)."
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``lopt new-plugin NAME [--dir DIR]``."""
    parser = add_command(subparsers, "new-plugin", run, HELP, DESCRIPTION)
    parser.add_argument("name", metavar="NAME", help="the package's name, e.g. lopt-tasks-foo")
    parser.add_argument(
        "--dir",
        default=".",
        metavar="DIR",
        help="the folder to write the package's folder NAME into (default: the current one)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the package and say what to do next."""
    from lopt_core.plugin_template import plugin_names, write_plugin

    names = plugin_names(args.name)
    folder = Path(args.dir) / args.name
    written = write_plugin(args.name, folder)
    for path in written:
        print(path)
    print(
        f"\nwrote the plugin {names.dist} in {folder}. Next:\n"
        f"  pip install -e {folder}\n"
        f"  lopt plugins --kind task_family        # {names.camel}Family, from {names.dist}\n"
        f"  cd {folder} && pytest                  # its own test\n"
        f"  lopt train {folder / names.module / 'meta_train.gin'} -o runs/{names.snake}",
        file=sys.stderr,
    )
    return 0
