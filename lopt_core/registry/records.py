"""What the registry records: its kinds, errors, plugins, entries, failures and conflicts."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "ENTRY_POINT_GROUP",
    "ENV_DISABLE_AUTOLOAD",
    "ENV_PLUGINS",
    "ENV_STRICT",
    "KINDS",
    "Conflict",
    "Entry",
    "PluginConflictError",
    "PluginFailure",
    "PluginInfo",
    "PluginLoadError",
    "PluginLoadWarning",
    "RegistrationError",
    "RegistryError",
    "UnknownEntryError",
    "UnknownKindError",
]

KINDS: tuple[str, ...] = (
    "task",
    "task_family",
    "task_distribution",
    "task_augmentation",
    "dataset",
    "optimizer",
    "learned_optimizer",
    "pretrained",
    "gradient_estimator",
    "truncation_schedule",
    "suite",
    "metric_writer",
)

ENTRY_POINT_GROUP = "lopt"

ENV_DISABLE_AUTOLOAD = "LOPT_DISABLE_PLUGIN_AUTOLOAD"
ENV_PLUGINS = "LOPT_PLUGINS"
ENV_STRICT = "LOPT_STRICT_PLUGINS"

# Registered names become gin configurables, so they must be gin identifiers.
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


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


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def normalize_dist(name: str) -> str:
    """PEP 503 normalization, so ``My_Plugin`` and ``my-plugin`` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def describe_factory(factory: Callable) -> str:
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
            e.plugin.describe() + f" -> {describe_factory(e.factory)}" for e in self.entries
        )
        dists = sorted({e.distribution or e.plugin.name for e in self.entries})
        return (
            f"{self.kind} '{self.name}' is registered by more than one plugin: {who}. "
            f"Uninstall one of {', '.join(dists)}, or load only one of them with "
            f"{ENV_PLUGINS}=<distribution or entry-point name>,..."
        )
