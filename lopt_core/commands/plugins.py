"""``lopt plugins [--json] [--kind KIND]``: what is installed, and from which distribution."""

from __future__ import annotations

import argparse
import json
import warnings
from typing import Any

from lopt_core.commands import add_command
from lopt_core.registry import (
    KINDS,
    Entry,
    PluginInfo,
    PluginLoadWarning,
    Registry,
    get_registry,
)

HELP = "List registered tasks, datasets, optimizers, ... and the plugins that failed."
DESCRIPTION = (
    "List every registry entry with its kind, name, providing distribution and version, "
    "then any plugin that failed to load and any name registered twice."
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``plugins`` subcommand."""
    parser = add_command(subparsers, "plugins", run, HELP, DESCRIPTION)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--kind", choices=KINDS, help="only entries of this kind")
    return parser


def _plugin_json(info: PluginInfo) -> dict[str, Any]:
    return {
        "plugin": info.name,
        "distribution": info.distribution,
        "version": info.version,
        "entry_point": info.entry_point,
    }


def _entry_json(entry: Entry) -> dict[str, Any]:
    factory = entry.factory
    return {
        "kind": entry.kind,
        "name": entry.name,
        "factory": f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', '?')}",
        **_plugin_json(entry.plugin),
    }


def report(registry: Registry, kind: str | None = None) -> dict[str, Any]:
    """Everything ``lopt plugins --json`` prints, as a dict."""
    return {
        "entries": [_entry_json(e) for e in registry.entries(kind)],
        "plugins": [_plugin_json(p) for p in registry.plugins],
        "failures": [
            {
                **_plugin_json(f.plugin),
                "stage": f.stage,
                "error_type": type(f.cause).__name__ if f.cause else type(f.error).__name__,
                "error": str(f.cause) if f.cause else str(f.error),
                "message": f.message,
            }
            for f in registry.failures
        ],
        "conflicts": [
            {
                "kind": c.kind,
                "name": c.name,
                "providers": [_entry_json(e) for e in c.entries],
                "message": c.message,
            }
            for c in registry.conflicts
            if kind is None or c.kind == kind
        ],
        "autoload": registry.autoload,
        "allow": registry.allow,
    }


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_text(registry: Registry, kind: str | None = None) -> str:
    """The aligned table ``lopt plugins`` prints, then failures and conflicts."""
    out = []
    entries = registry.entries(kind)
    if entries:
        rows = [("KIND", "NAME", "DISTRIBUTION", "VERSION", "PLUGIN")]
        rows += [
            (e.kind, e.name, e.distribution or "-", e.version or "-", e.plugin.name)
            for e in entries
        ]
        out.append(_table(rows))
    else:
        out.append(f"No {kind or 'lopt'} entries are registered.")
    if not registry.autoload and registry.allow is None:
        out.append("\nEntry points were not loaded: LOPT_DISABLE_PLUGIN_AUTOLOAD is set.")
    elif registry.allow is not None:
        out.append(f"\nOnly these plugins were loaded (LOPT_PLUGINS): {', '.join(registry.allow)}.")
    conflicts = [c for c in registry.conflicts if kind is None or c.kind == kind]
    if conflicts:
        out.append(f"\nConflicts ({len(conflicts)}): these names are unusable until resolved.")
        out.extend(f"  {c.message}" for c in conflicts)
    if registry.failures:
        out.append(f"\nFailed plugins ({len(registry.failures)}):")
        for f in registry.failures:
            out.append(f"  {f.message}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON). Exit status 0 even with failures, unless strict."""
    with warnings.catch_warnings():
        # The report lists the failures itself; the warnings would say it twice.
        warnings.simplefilter("ignore", PluginLoadWarning)
        registry = get_registry()
    if args.json:
        print(json.dumps(report(registry, args.kind), indent=2))
    else:
        print(format_text(registry, args.kind))
    return 0
