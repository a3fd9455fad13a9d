"""The plugin registry: named factories of each kind, provided by installed plugins.

A plugin is a module (or any object) with a ``@lopt_core.hookimpl`` function
``lopt_register(registry)`` that calls ``registry.register(kind, name, factory)``.
Plugins are found through the entry-point group ``lopt``; the built-in ones in
``lopt_plugins`` are declared there too, so the core never imports them.

``get_registry()`` loads every plugin on first use and caches the result.
A plugin that fails to import, or whose hook raises, is reported with a
``PluginLoadWarning`` naming its distribution and entry point, and every other
plugin still loads. Environment variables, named like pytest's:

- ``LOPT_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (plugins may still be
  added with ``Registry.load_module``), except those named in ``LOPT_PLUGINS``;
- ``LOPT_PLUGINS=name,...``: load only the entry points whose distribution name
  or entry-point name is listed;
- ``LOPT_STRICT_PLUGINS=1``: a failing or conflicting plugin is an error, not a warning.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import os
import re
import sys
import threading
import traceback
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pluggy

from lopt_core import hookspecs

KINDS: tuple[str, ...] = (
    "task",
    "task_family",
    "dataset",
    "optimizer",
    "learned_optimizer",
    "gradient_estimator",
    "truncation_schedule",
)

ENTRY_POINT_GROUP = "lopt"

ENV_DISABLE_AUTOLOAD = "LOPT_DISABLE_PLUGIN_AUTOLOAD"
ENV_PLUGINS = "LOPT_PLUGINS"
ENV_STRICT = "LOPT_STRICT_PLUGINS"

# Registered names become gin configurables, so they must be gin identifiers.
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class RegistryError(Exception):
    """Base class of the registry's errors."""


class RegistrationError(RegistryError, ValueError):
    """A plugin called ``registry.register`` with a bad kind, name or factory."""


class UnknownKindError(RegistryError, LookupError):
    """A kind that is not one of ``KINDS``."""

    def __str__(self) -> str:  # LookupError would otherwise quote the message like a KeyError
        return str(self.args[0]) if self.args else ""


class UnknownEntryError(RegistryError, LookupError):
    """No factory of that kind is registered under that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PluginConflictError(RegistryError):
    """Two plugins registered the same kind and name."""


class PluginLoadError(RegistryError):
    """A plugin failed to import or its hook raised (chained to the original error)."""


class PluginLoadWarning(UserWarning):
    """A plugin failed to load; the others were loaded."""


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _normalize_dist(name: str) -> str:
    """PEP 503 normalization, so ``My_Plugin`` and ``my-plugin`` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _describe_factory(factory: Callable) -> str:
    module = getattr(factory, "__module__", None) or "?"
    qualname = getattr(factory, "__qualname__", None) or type(factory).__qualname__
    return f"{module}:{qualname}"


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: its pluggy name and where it came from."""

    name: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None  # "name = module[:attr]" in group ``lopt``

    def describe(self) -> str:
        """``'name' (dist version, entry point 'ep')``, for messages."""
        parts = []
        if self.distribution:
            parts.append(f"{self.distribution} {self.version or '?'}")
        if self.entry_point:
            parts.append(f"entry point '{self.entry_point}'")
        return f"'{self.name}'" + (f" ({', '.join(parts)})" if parts else "")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered factory and the plugin it came from."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: PluginInfo

    @property
    def distribution(self) -> str | None:
        """Name of the distribution (pip package) that provides the entry, if known."""
        return self.plugin.distribution

    @property
    def version(self) -> str | None:
        """Version of that distribution, if known."""
        return self.plugin.version

    def describe(self) -> str:
        """``kind 'name' from plugin ...``, for messages."""
        return f"{self.kind} '{self.name}' from plugin {self.plugin.describe()}"


@dataclasses.dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, and why. ``error`` chains to the original exception."""

    plugin: PluginInfo
    stage: str  # "import", "register" or "select"
    error: PluginLoadError

    @property
    def cause(self) -> BaseException | None:
        """The original exception raised by the plugin (None for a selection problem)."""
        return self.error.__cause__

    @property
    def message(self) -> str:
        """The full, human-readable explanation."""
        return str(self.error)


@dataclasses.dataclass(frozen=True)
class Conflict:
    """Two or more plugins registered the same kind and name; the name is unusable until fixed."""

    kind: str
    name: str
    entries: tuple[Entry, ...]

    @property
    def message(self) -> str:
        """Names every plugin and distribution involved and says how to resolve it."""
        who = "; ".join(
            e.plugin.describe() + f" -> {_describe_factory(e.factory)}" for e in self.entries
        )
        dists = sorted({e.distribution or e.plugin.name for e in self.entries})
        return (
            f"{self.kind} '{self.name}' is registered by more than one plugin: {who}. "
            f"Uninstall one of {', '.join(dists)}, or load only one of them with "
            f"{ENV_PLUGINS}=<distribution or entry-point name>,..."
        )


def _outside_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside this module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    return level


def _error_location(error: BaseException) -> str:
    """' (at file:line)' of the innermost traceback frame, to find the bug quickly."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {frame.filename}:{frame.lineno})"


class Registry:
    """Named factories of each kind (see ``KINDS``), filled by plugins through pluggy.

    Build one with ``Registry.from_entry_points()`` (what ``get_registry()`` does),
    or empty with ``Registry()`` and add plugins with ``load_module``. Plugins call
    ``register``; users call ``names``, ``get``, ``create`` and ``entry``.
    """

    def __init__(self, *, strict: bool = False):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.strict = strict
        self.autoload = True
        self.allow: list[str] | None = None
        self._entries: dict[tuple[str, str], Entry] = {}
        self._conflicts: dict[tuple[str, str], Conflict] = {}
        self._plugins: list[PluginInfo] = []
        self._failures: list[PluginFailure] = []
        # While a plugin's hook runs, its registrations are staged here and
        # committed only if the hook returns: a failing plugin leaves nothing behind.
        self._loading: PluginInfo | None = None
        self._staged: dict[tuple[str, str], Entry] | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------ construction

    @classmethod
    def from_entry_points(
        cls,
        group: str = ENTRY_POINT_GROUP,
        *,
        autoload: bool | None = None,
        allow: Sequence[str] | None = None,
        strict: bool | None = None,
    ) -> Registry:
        """Load every plugin of entry-point group ``group``.

        ``autoload``, ``allow`` and ``strict`` default to the environment
        (``LOPT_DISABLE_PLUGIN_AUTOLOAD``, ``LOPT_PLUGINS``, ``LOPT_STRICT_PLUGINS``).
        """
        registry = cls(strict=_env_flag(ENV_STRICT) if strict is None else strict)
        registry.autoload = not _env_flag(ENV_DISABLE_AUTOLOAD) if autoload is None else autoload
        registry.allow = _env_list(ENV_PLUGINS) if allow is None else list(allow)
        registry.load_entry_points(group)
        return registry

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Load the plugins of ``group``, honouring ``self.autoload`` and ``self.allow``."""
        if not self.autoload and self.allow is None:
            return
        found = importlib.metadata.entry_points(group=group)
        matched: set[str] = set()
        for ep in sorted(found, key=lambda e: (e.dist.name if e.dist else "", e.name)):
            dist = ep.dist.name if ep.dist else None
            if self.allow is not None:
                hits = {
                    a
                    for a in self.allow
                    if a == ep.name or (dist and _normalize_dist(a) == _normalize_dist(dist))
                }
                if not hits:
                    continue
                matched |= hits
            self._load_entry_point(ep, group)
        for missing in [a for a in self.allow or () if a not in matched]:
            available = sorted({f"{e.dist.name if e.dist else '?'}:{e.name}" for e in found})
            self._fail(
                PluginInfo(name=missing),
                "select",
                f"{ENV_PLUGINS} names {missing!r}, but no installed distribution or entry point "
                f"of group '{group}' has that name. Installed (distribution:entry point): "
                f"{', '.join(available) or 'none'}.",
            )

    def _load_entry_point(self, ep: importlib.metadata.EntryPoint, group: str) -> None:
        info = PluginInfo(
            name=ep.name,
            distribution=ep.dist.name if ep.dist else None,
            version=ep.dist.version if ep.dist else None,
            entry_point=f"{ep.name} = {ep.value}",
        )
        if self.pm.has_plugin(info.name):  # two distributions using one entry-point name
            info = dataclasses.replace(info, name=f"{info.distribution}:{ep.name}")
        try:
            plugin = ep.load()
        except Exception as e:
            self._fail(info, "import", self._wrap(info, "failed to import", e), cause=e)
            return
        self._register_plugin(plugin, info)

    def load_module(
        self,
        module: str | types.ModuleType | object,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> PluginInfo:
        """Add one plugin by hand: a module, an importable module name, or any object with hooks.

        Unlike entry points (whose failures are warnings), a failure here raises
        ``PluginLoadError`` at once: the caller asked for this plugin explicitly.
        """
        if isinstance(module, str):
            name = name or module
            try:
                module = importlib.import_module(module)
            except Exception as e:
                raise PluginLoadError(
                    f"lopt plugin module {name!r} failed to import: {type(e).__name__}: {e}"
                    f"{_error_location(e)}"
                ) from e
        if name is None:
            name = getattr(module, "__name__", None) or f"{type(module).__name__}@{id(module):x}"
        info = PluginInfo(name=name, distribution=distribution, version=version)
        failure = self._register_plugin(module, info, raise_on_failure=True)
        assert failure is None
        return info

    def _register_plugin(
        self, plugin: object, info: PluginInfo, raise_on_failure: bool = False
    ) -> PluginFailure | None:
        """pluggy-register ``plugin``, check its hooks, run its ``lopt_register`` and commit."""
        try:
            self.pm.register(plugin, name=info.name)
            self._check_hooks(plugin)
        except Exception as e:
            if self.pm.is_registered(plugin) and self.pm.get_name(plugin) == info.name:
                self.pm.unregister(plugin)
            return self._fail(
                info,
                "register",
                self._wrap(info, "is not a valid plugin", e),
                cause=e,
                raise_now=raise_on_failure,
            )
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        with self._lock:
            self._loading, self._staged = info, {}
            try:
                self.pm.subset_hook_caller("lopt_register", remove_plugins=others)(registry=self)
                staged = self._staged
            except Exception as e:
                self.pm.unregister(plugin)
                return self._fail(
                    info,
                    "register",
                    self._wrap(info, "raised in lopt_register", e),
                    cause=e,
                    raise_now=raise_on_failure,
                )
            finally:
                self._loading, self._staged = None, None
            self._plugins.append(info)
            for entry in staged.values():
                self._commit(entry)
        return None

    def _check_hooks(self, plugin: object) -> None:
        """Catch the usual plugin bugs: a misspelt hook, or a forgotten ``@hookimpl``."""
        for caller in self.pm.get_hookcallers(plugin) or []:
            if not caller.has_spec():
                close = difflib.get_close_matches(caller.name, ["lopt_register"], n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise RegistrationError(f"it implements unknown hook {caller.name!r}.{hint}")
        if not self.pm.get_hookcallers(plugin):
            if callable(getattr(plugin, "lopt_register", None)):
                raise RegistrationError(
                    "its lopt_register is not marked as a hook: "
                    "decorate it with @lopt_core.hookimpl."
                )
            raise RegistrationError(
                "it defines no hook implementation: add a function "
                "`@lopt_core.hookimpl def lopt_register(registry): ...`."
            )

    @staticmethod
    def _wrap(info: PluginInfo, what: str, error: Exception) -> str:
        # Our own validation errors need no traceback location; a plugin's do.
        where = "" if isinstance(error, RegistrationError) else _error_location(error)
        return f"lopt plugin {info.describe()} {what}: {type(error).__name__}: {error}{where}."

    def _fail(
        self,
        info: PluginInfo,
        stage: str,
        text: str,
        cause: BaseException | None = None,
        raise_now: bool = False,
    ) -> PluginFailure:
        """Record (and warn about) a failed plugin; raise instead when strict or asked to."""
        if self.strict and not raise_now:
            text += (
                f" Strict mode ({ENV_STRICT} or --strict-plugins) makes this fatal: fix or "
                f"uninstall the plugin, or load only the others with {ENV_PLUGINS}=..."
            )
        elif not raise_now and stage != "select":  # one entry point of many: how to debug it
            text += (
                f" The other plugins were loaded. Debug it with `{ENV_STRICT}=1 lopt plugins` "
                f"(full traceback), or skip it with {ENV_PLUGINS}=<the plugins to load>."
            )
        error = PluginLoadError(text)
        error.__cause__ = cause
        if raise_now or self.strict:
            raise error from cause
        failure = PluginFailure(plugin=info, stage=stage, error=error)
        self._failures.append(failure)
        warnings.warn(text, PluginLoadWarning, stacklevel=_outside_stacklevel())
        return failure

    def _commit(self, entry: Entry) -> None:
        key = (entry.kind, entry.name)
        if key in self._conflicts:
            conflict = self._conflicts[key]
            self._conflicts[key] = dataclasses.replace(
                conflict, entries=conflict.entries + (entry,)
            )
        elif key in self._entries:
            self._conflicts[key] = Conflict(entry.kind, entry.name, (self._entries.pop(key), entry))
        else:
            self._entries[key] = entry
            return
        message = self._conflicts[key].message
        if self.strict:
            raise PluginConflictError(message)
        warnings.warn(message, PluginLoadWarning, stacklevel=_outside_stacklevel())

    # ------------------------------------------------------------ plugin side

    def register(self, kind: str, name: str, factory: Callable[..., Any]) -> None:
        """Register ``factory`` (usually a class) as ``name`` of ``kind``. Called by plugins.

        Raises ``RegistrationError`` (naming the plugin) for an unknown kind, a
        name that is not an identifier, a factory that is not callable, or a
        name the same plugin already registered.
        """
        plugin = self._loading or PluginInfo(name=_caller_module())
        where = f"lopt plugin {plugin.describe()}"
        if kind not in KINDS:
            close = difflib.get_close_matches(str(kind), KINDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RegistrationError(
                f"{where} registered {name!r} under unknown kind {kind!r}.{hint} "
                f"The kinds are: {', '.join(KINDS)}."
            )
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise RegistrationError(
                f"{where} registered the {kind} name {name!r}, which is not a Python identifier; "
                "names become gin configurables, so use letters, digits and underscores only."
            )
        if not callable(factory):
            raise RegistrationError(
                f"{where} registered {kind} {name!r} with a factory that is not callable: "
                f"{type(factory).__name__} {factory!r}. "
                "Register the class or function that builds it."
            )
        entry = Entry(kind=kind, name=name, factory=factory, plugin=plugin)
        with self._lock:
            if self._staged is not None:
                if (kind, name) in self._staged:
                    raise RegistrationError(f"{where} registered {kind} {name!r} twice.")
                self._staged[(kind, name)] = entry
            else:  # registered by hand, outside any plugin's hook
                self._commit(entry)

    # ------------------------------------------------------------ user side

    @property
    def plugins(self) -> list[PluginInfo]:
        """The plugins that loaded, in load order."""
        return list(self._plugins)

    @property
    def failures(self) -> list[PluginFailure]:
        """The plugins that failed to load, with their errors."""
        return list(self._failures)

    @property
    def conflicts(self) -> list[Conflict]:
        """Names registered by more than one plugin (unusable until resolved)."""
        return list(self._conflicts.values())

    def raise_for_failures(self) -> None:
        """Raise the first failure or conflict, as strict mode would have (no-op if none)."""
        if self._failures:
            failure = self._failures[0]
            raise failure.error from failure.cause
        if self._conflicts:
            raise PluginConflictError(next(iter(self._conflicts.values())).message)

    def names(self, kind: str) -> list[str]:
        """The sorted names registered for ``kind`` (conflicting names excluded)."""
        self._check_kind(kind)
        return sorted(name for k, name in self._entries if k == kind)

    def entries(self, kind: str | None = None) -> list[Entry]:
        """All entries, or those of ``kind``, sorted by kind then name."""
        if kind is not None:
            self._check_kind(kind)
        chosen = (e for e in self._entries.values() if kind is None or e.kind == kind)
        return sorted(chosen, key=lambda e: (KINDS.index(e.kind), e.name))

    def has(self, kind: str, name: str) -> bool:
        """Whether ``name`` is registered (without conflict) for ``kind``."""
        self._check_kind(kind)
        return (kind, name) in self._entries

    def entry(self, kind: str, name: str) -> Entry:
        """The ``Entry`` for ``kind``/``name``: factory, plugin, distribution and version."""
        self._check_kind(kind)
        key = (kind, name)
        if key in self._entries:
            return self._entries[key]
        if key in self._conflicts:
            raise PluginConflictError(self._conflicts[key].message)
        raise UnknownEntryError(self._unknown_message(kind, name))

    def get(self, kind: str, name: str) -> Callable[..., Any]:
        """The factory registered as ``name`` of ``kind``."""
        return self.entry(kind, name).factory

    def create(self, kind: str, name: str, **kwargs: Any) -> Any:
        """Build ``name`` of ``kind``: ``get(kind, name)(**kwargs)``."""
        return self.get(kind, name)(**kwargs)

    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            close = difflib.get_close_matches(str(kind), KINDS, n=3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownKindError(
                f"Unknown kind {kind!r}.{hint} The kinds are: {', '.join(KINDS)}."
            )

    def close_matches(self, name: str, kind: str | None = None, n: int = 5) -> list[Entry]:
        """Entries whose names resemble ``name`` (difflib, then case-insensitive), best first."""
        pool = self.entries(kind)
        by_name: dict[str, list[Entry]] = {}
        for e in pool:
            by_name.setdefault(e.name, []).append(e)
        names = difflib.get_close_matches(name, list(by_name), n=n, cutoff=0.6)
        names += [k for k in by_name if k.lower() == name.lower() and k not in names]
        return [e for k in names for e in by_name[k]][:n]

    def _unknown_message(self, kind: str, name: str) -> str:
        lines = [f"No {kind} named {name!r} is registered."]
        close = self.close_matches(name, kind)
        if close:
            lines.append("Close matches: " + ", ".join(_short(e) for e in close) + ".")
        elsewhere = [e for e in self.entries() if e.name == name and e.kind != kind]
        if elsewhere:
            lines.append(
                f"{name!r} is registered as: " + ", ".join(e.kind for e in elsewhere) + "."
            )
        registered = self.names(kind)
        if registered and not close:
            shown = ", ".join(registered[:20]) + (" ..." if len(registered) > 20 else "")
            lines.append(f"Registered {kind} names: {shown}.")
        lines.append(self.plugins_summary())
        return "\n".join(lines)

    def plugins_summary(self) -> str:
        """A few lines: the installed plugins by distribution, the failed ones, the conflicts."""
        by_dist: dict[str, list[str]] = {}
        for p in self._plugins:
            dist = f"{p.distribution} {p.version or '?'}" if p.distribution else "loaded by hand"
            by_dist.setdefault(dist, []).append(p.name)
        loaded = "; ".join(f"{d} ({', '.join(names)})" for d, names in by_dist.items())
        lines = [f"Installed lopt plugins: {loaded or 'none'}."]
        if not self.autoload and self.allow is None:
            lines.append(f"Entry points were not loaded: {ENV_DISABLE_AUTOLOAD} is set.")
        elif self.allow is not None:
            lines.append(f"Only {ENV_PLUGINS}={','.join(self.allow)} were loaded.")
        if self._failures:
            failed = "; ".join(
                f"{f.plugin.describe()}: {type(f.cause).__name__ if f.cause else 'error'}"
                for f in self._failures
            )
            lines.append(f"Plugins that failed to load (the name may come from one): {failed}.")
        if self._conflicts:
            conflicts = "; ".join(
                f"{c.kind} '{c.name}' ("
                + ", ".join(e.distribution or e.plugin.name for e in c.entries)
                + ")"
                for c in self._conflicts.values()
            )
            lines.append(f"Unusable, registered by several plugins: {conflicts}.")
        lines.append("Run `lopt plugins` for the full list.")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<Registry {len(self._entries)} entries from {len(self._plugins)} plugins, "
            f"{len(self._failures)} failed, {len(self._conflicts)} conflicts>"
        )


def _short(entry: Entry) -> str:
    source = f", {entry.distribution}" if entry.distribution else ""
    return f"{entry.name} ({entry.kind}{source})"


def _caller_module() -> str:
    """The module that called ``Registry.register`` by hand, to name it in messages."""
    frame = sys._getframe(2)
    return frame.f_globals.get("__name__", "<unknown>")


_REGISTRY: Registry | None = None
_REGISTRY_LOCK = threading.Lock()


def get_registry(*, strict: bool | None = None) -> Registry:
    """The registry of all installed plugins, loaded on first call and then cached.

    With ``strict=True`` (or ``LOPT_STRICT_PLUGINS=1``) a plugin that failed to
    load, or a name two plugins registered, raises instead of warning, even if
    the registry was already loaded leniently.
    """
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            _REGISTRY = Registry.from_entry_points(strict=strict)
        registry = _REGISTRY
    if strict or (strict is None and _env_flag(ENV_STRICT)):
        registry.raise_for_failures()
    return registry


def reset_registry() -> None:
    """Forget the cached registry; the next ``get_registry()`` loads the plugins again."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        _REGISTRY = None


def set_registry(registry: Registry | None) -> None:
    """Make ``registry`` the one ``get_registry()`` returns (tests; embedding applications)."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        _REGISTRY = registry
