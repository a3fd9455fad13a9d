"""The registry's messages: why a name is unknown, what is installed, where a plugin failed."""

from __future__ import annotations

import difflib
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

from lopt_core.registry.records import (
    ENV_DISABLE_AUTOLOAD,
    ENV_PLUGINS,
    ENV_STRICT,
    KINDS,
    NAME_RE,
    Entry,
    RegistrationError,
)

if TYPE_CHECKING:
    from lopt_core.registry.registry import Registry

_PACKAGE = "lopt_core.registry"  # warnings point at the first frame outside it


def outside_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside the registry."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def error_location(error: BaseException) -> str:
    """' (at file:line)' of the innermost traceback frame, to find the bug quickly."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {frame.filename}:{frame.lineno})"


def unknown_entry(registry: Registry, kind: str, name: str) -> str:
    """Why ``name`` of ``kind`` is unknown: close matches, other kinds, what is installed."""
    lines = [f"No {kind} named {name!r} is registered."]
    close = registry.close_matches(name, kind)
    if close:
        lines.append("Close matches: " + ", ".join(short(e) for e in close) + ".")
    elsewhere = [e for e in registry.entries() if e.name == name and e.kind != kind]
    if elsewhere:
        lines.append(f"{name!r} is registered as: " + ", ".join(e.kind for e in elsewhere) + ".")
    registered = registry.names(kind)
    if registered and not close:
        shown = ", ".join(registered[:20]) + (" ..." if len(registered) > 20 else "")
        lines.append(f"Registered {kind} names: {shown}.")
    lines.append(plugins_summary(registry))
    return "\n".join(lines)


def plugins_summary(registry: Registry) -> str:
    """A few lines: the installed plugins by distribution, the failed ones, the conflicts."""
    by_dist: dict[str, list[str]] = {}
    for p in registry.plugins:
        dist = f"{p.distribution} {p.version or '?'}" if p.distribution else "loaded by hand"
        by_dist.setdefault(dist, []).append(p.name)
    loaded = "; ".join(f"{d} ({', '.join(names)})" for d, names in by_dist.items())
    lines = [f"Installed lopt plugins: {loaded or 'none'}."]
    if not registry.autoload and registry.allow is None:
        lines.append(f"Entry points were not loaded: {ENV_DISABLE_AUTOLOAD} is set.")
    elif registry.allow is not None:
        lines.append(f"Only {ENV_PLUGINS}={','.join(registry.allow)} were loaded.")
    if registry.failures:
        failed = "; ".join(
            f"{f.plugin.describe()}: {type(f.cause).__name__ if f.cause else 'error'}"
            for f in registry.failures
        )
        lines.append(f"Plugins that failed to load (the name may come from one): {failed}.")
    if registry.conflicts:
        conflicts = "; ".join(
            f"{c.kind} '{c.name}' ("
            + ", ".join(e.distribution or e.plugin.name for e in c.entries)
            + ")"
            for c in registry.conflicts
        )
        lines.append(f"Unusable, registered by several plugins: {conflicts}.")
    lines.append("Run `lopt plugins` for the full list.")
    return "\n".join(lines)


def short(entry: Entry) -> str:
    source = f", {entry.distribution}" if entry.distribution else ""
    return f"{entry.name} ({entry.kind}{source})"


def caller_module() -> str:
    """The module that called ``Registry.register`` by hand, to name it in messages."""
    frame = sys._getframe(2)
    return frame.f_globals.get("__name__", "<unknown>")


def check_hooks(pm: pluggy.PluginManager, plugin: object) -> None:
    """Catch the usual plugin bugs: a misspelt hook, or a forgotten ``@hookimpl``.

    Raises ``RegistrationError`` saying which, and how to fix it.
    """
    try:
        pm.check_pending()  # pluggy's own check: hook implementations without a spec
    except pluggy.PluginValidationError as e:
        unknown = [c.name for c in pm.get_hookcallers(plugin) or [] if not c.has_spec()]
        name = unknown[0] if unknown else "?"
        close = difflib.get_close_matches(name, ["lopt_register"], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise RegistrationError(f"it implements unknown hook {name!r}.{hint}") from e
    if not pm.get_hookcallers(plugin):
        if callable(getattr(plugin, "lopt_register", None)):
            raise RegistrationError(
                "its lopt_register is not marked as a hook: decorate it with @lopt_core.hookimpl."
            )
        raise RegistrationError(
            "it defines no hook implementation: add a function "
            "`@lopt_core.hookimpl def lopt_register(registry): ...`."
        )


def plugin_error(info: Any, what: str, error: Exception) -> str:
    """``lopt plugin 'x' (dist) <what>: <error> (at file:line).``"""
    # Our own validation errors need no traceback location; a plugin's do.
    where = "" if isinstance(error, RegistrationError) else error_location(error)
    return f"lopt plugin {info.describe()} {what}: {type(error).__name__}: {error}{where}."


def failure_advice(strict: bool, raise_now: bool, stage: str) -> str:
    """What to do about a plugin that failed to load, appended to its message."""
    if strict and not raise_now:
        return (
            f" Strict mode ({ENV_STRICT} or --strict-plugins) makes this fatal: fix or "
            f"uninstall the plugin, or load only the others with {ENV_PLUGINS}=..."
        )
    if not raise_now and stage != "select":  # one entry point of many: how to debug it
        return (
            f" The other plugins were loaded. Debug it with `{ENV_STRICT}=1 lopt plugins` "
            f"(full traceback), or skip it with {ENV_PLUGINS}=<the plugins to load>."
        )
    return ""


def registration_problem(where: str, kind: Any, name: Any, factory: Callable | Any) -> str:
    """Why ``registry.register(kind, name, factory)`` is refused ('' when it is fine)."""
    if kind not in KINDS:
        close = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return (
            f"{where} registered {name!r} under unknown kind {kind!r}.{hint} "
            f"The kinds are: {', '.join(KINDS)}."
        )
    if not isinstance(name, str) or not NAME_RE.match(name):
        return (
            f"{where} registered the {kind} name {name!r}, which is not a Python identifier; "
            "names become gin configurables, so use letters, digits and underscores only."
        )
    if not callable(factory):
        return (
            f"{where} registered {kind} {name!r} with a factory that is not callable: "
            f"{type(factory).__name__} {factory!r}. Register the class or function that builds it."
        )
    return ""
