"""The ``lopt`` command line.

Each subcommand is a module of ``lopt_core.commands`` with ``add_parser(subparsers)``;
they are found by listing that package, so ``lopt train`` and ``lopt eval``
slot in by adding ``commands/train.py`` and ``commands/eval.py``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
import traceback

import lopt_core
from lopt_core import commands
from lopt_core.compile_cache import enable_compilation_cache
from lopt_core.gin_config import GinConfigError
from lopt_core.registry import ENV_STRICT, PluginLoadError, RegistryError, get_registry
from lopt_core.registry.records import env_flag

ENV_DEBUG = "LOPT_DEBUG"


def _command_modules() -> list[str]:
    return sorted(
        f"{commands.__name__}.{m.name}"
        for m in pkgutil.iter_modules(commands.__path__)
        if not m.name.startswith("_")
    )


def _add_broken_command(subparsers, module_name: str, error: Exception) -> None:
    """A subcommand whose module fails to import still shows up, and says why when run."""
    name = module_name.rsplit(".", 1)[1]
    message = f"the `{name}` command is unavailable: {module_name} failed to import: "
    message += f"{type(error).__name__}: {error}"
    parser = subparsers.add_parser(name, help=f"(unavailable: {type(error).__name__})")
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args: argparse.Namespace) -> int:
        print(f"lopt: error: {message}", file=sys.stderr)
        return 1

    parser.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lopt``, with one subparser per module in ``lopt_core.commands``."""
    parser = argparse.ArgumentParser(
        prog="lopt",
        description="lopt: meta-train learned optimizers over plugin tasks, configured by gin.",
    )
    parser.add_argument("--version", action="version", version=f"lopt {lopt_core.__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help=f"on an error, show the full Python traceback (like {ENV_DEBUG}=1)",
    )
    parser.add_argument(
        "--strict-plugins",
        action="store_true",
        help=f"a plugin that fails to load is an error, not a warning (like {ENV_STRICT}=1)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _command_modules():
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # one broken command must not take the others down
            _add_broken_command(subparsers, module_name, e)
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lopt`` console script; returns the exit status.

    Every error ends as one ``lopt: error: ...`` message and exit status 1; the
    traceback is shown only with ``--traceback`` or ``LOPT_DEBUG=1``. JAX's
    persistent compilation cache is on (``lopt_core.compile_cache``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    debug = args.traceback or env_flag(ENV_DEBUG)
    enable_compilation_cache()  # warm starts: compiled programs are read back from disk
    try:
        if args.strict_plugins:
            get_registry(strict=True)
        return args.func(args)
    except BrokenPipeError:  # `lopt plugins | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("lopt: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            traceback.print_exc()
        elif isinstance(e, PluginLoadError) and e.__cause__ is not None:
            # Strict mode is the debugging path: show where the plugin failed.
            traceback.print_exception(e.__cause__, file=sys.stderr)
        print(f"lopt: error: {error_message(e)}", file=sys.stderr)
        if not debug and not isinstance(e, (RegistryError, GinConfigError)):
            print(
                f"  (the full traceback: lopt --traceback ..., or {ENV_DEBUG}=1)", file=sys.stderr
            )
        return 1


# gin appends where a configurable failed: "  In call to configurable 'meta_train' (<function...>)"
_GIN_CONTEXT = re.compile(r"\n\s+In call to configurable '(?P<name>[^']+)' \([^\n]*\)")


def error_message(error: BaseException) -> str:
    """What went wrong, for the user: the exception's message without gin's call context
    (named once, as a prefix) and with the exception type only when it says something."""
    text = str(error).strip() or type(error).__name__
    calls = _GIN_CONTEXT.findall(text)
    text = _GIN_CONTEXT.sub("", text).strip()
    if isinstance(error, (LookupError, FileNotFoundError)) and text.startswith(("'", '"')):
        text = text[1:-1] if text[-1:] == text[0] else text  # KeyError quotes its message
    if type(error) in (TypeError, AttributeError, IndexError) or isinstance(error, AssertionError):
        text = f"{type(error).__name__}: {text}"
    return f"in {calls[-1]}: {text}" if calls else text


if __name__ == "__main__":
    sys.exit(main())
