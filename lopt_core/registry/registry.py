"""The ``Registry``: named factories of each kind, filled by plugins through pluggy.

``get_registry()`` loads every plugin on first use and caches the result.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import threading
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pluggy

from lopt_core import hookspecs
from lopt_core.registry import messages
from lopt_core.registry.messages import caller_module, error_location, outside_stacklevel
from lopt_core.registry.records import (
    ENTRY_POINT_GROUP,
    ENV_DISABLE_AUTOLOAD,
    ENV_PLUGINS,
    ENV_STRICT,
    KINDS,
    Conflict,
    Entry,
    PluginConflictError,
    PluginFailure,
    PluginInfo,
    PluginLoadError,
    PluginLoadWarning,
    RegistrationError,
    UnknownEntryError,
    UnknownKindError,
    env_flag,
    env_list,
    normalize_dist,
)


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
        registry = cls(strict=env_flag(ENV_STRICT) if strict is None else strict)
        registry.autoload = not env_flag(ENV_DISABLE_AUTOLOAD) if autoload is None else autoload
        registry.allow = env_list(ENV_PLUGINS) if allow is None else list(allow)
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
                    if a == ep.name or (dist and normalize_dist(a) == normalize_dist(dist))
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
            self._fail(info, "import", messages.plugin_error(info, "failed to import", e), cause=e)
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
                    f"{error_location(e)}"
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

        def failed(what: str, error: Exception) -> PluginFailure:
            text = messages.plugin_error(info, what, error)
            return self._fail(info, "register", text, cause=error, raise_now=raise_on_failure)

        try:
            self.pm.register(plugin, name=info.name)
            messages.check_hooks(self.pm, plugin)
        except Exception as e:
            if self.pm.is_registered(plugin) and self.pm.get_name(plugin) == info.name:
                self.pm.unregister(plugin)
            return failed("is not a valid plugin", e)
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        with self._lock:
            self._loading, self._staged = info, {}
            try:
                self.pm.subset_hook_caller("lopt_register", remove_plugins=others)(registry=self)
                staged = self._staged
            except Exception as e:
                self.pm.unregister(plugin)
                return failed("raised in lopt_register", e)
            finally:
                self._loading, self._staged = None, None
            self._plugins.append(info)
            for entry in staged.values():
                self._commit(entry)
        return None

    def _fail(
        self,
        info: PluginInfo,
        stage: str,
        text: str,
        cause: BaseException | None = None,
        raise_now: bool = False,
    ) -> PluginFailure:
        """Record (and warn about) a failed plugin; raise instead when strict or asked to."""
        text += messages.failure_advice(self.strict, raise_now, stage)
        error = PluginLoadError(text)
        error.__cause__ = cause
        if raise_now or self.strict:
            raise error from cause
        failure = PluginFailure(plugin=info, stage=stage, error=error)
        self._failures.append(failure)
        warnings.warn(text, PluginLoadWarning, stacklevel=outside_stacklevel())
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
        warnings.warn(message, PluginLoadWarning, stacklevel=outside_stacklevel())

    # ------------------------------------------------------------ plugin side

    def register(self, kind: str, name: str, factory: Callable[..., Any]) -> None:
        """Register ``factory`` (usually a class) as ``name`` of ``kind``. Called by plugins.

        Raises ``RegistrationError`` (naming the plugin) for an unknown kind, a
        name that is not an identifier, a factory that is not callable, or a
        name the same plugin already registered.
        """
        plugin = self._loading or PluginInfo(name=caller_module())
        where = f"lopt plugin {plugin.describe()}"
        problem = messages.registration_problem(where, kind, name, factory)
        if problem:
            raise RegistrationError(problem)
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

    def create(self, kind: str, name: str, expect: type | None = None, **kwargs: Any) -> Any:
        """Build ``name`` of ``kind``: ``get(kind, name)(**kwargs)``; a TypeError if ``expect``
        is given and the plugin built something else."""
        built = self.get(kind, name)(**kwargs)
        if expect is not None and not isinstance(built, expect):
            raise TypeError(
                f"{kind} plugin {name!r} returned a {type(built).__name__}, not a "
                f"{expect.__module__}.{expect.__qualname__}."
            )
        return built

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
        return messages.unknown_entry(self, kind, name)

    def plugins_summary(self) -> str:
        """A few lines: the installed plugins by distribution, the failed ones, the conflicts."""
        return messages.plugins_summary(self)

    def __repr__(self) -> str:
        return (
            f"<Registry {len(self._entries)} entries from {len(self._plugins)} plugins, "
            f"{len(self._failures)} failed, {len(self._conflicts)} conflicts>"
        )


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
    if strict or (strict is None and env_flag(ENV_STRICT)):
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
