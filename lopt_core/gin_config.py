"""gin wiring: registry entries and core entry points as configurables, and config parsing.

Every registry entry becomes the gin configurable ``lopt.<kind>.<name>``, so a
.gin file can say ``@Adam()`` or, to disambiguate, ``@lopt.optimizer.Adam()``;
plugin code needs no gin decorators. ``parse_config`` loads the registry,
registers the configurables, parses files and command-line bindings, and turns
gin's errors about unknown configurables and parameters into ``GinConfigError``
naming the file, the line and close matches from the registry.

The core's entry points ``train``, ``train_family`` and ``meta_train`` are exposed
here (gin names ``train``, ``meta_train``..., or ``lopt.meta_train``); the plain
functions know nothing of gin, so only calls through their gin wrappers see the
bindings: ``configured("meta_train")(output_dir=...)``. Another core function is
exposed with ``wrapped = configurable_core(fn, name="...")``. Once a run has built
its objects, ``write_operative_config(run_dir)`` records the config it used
(``lopt train`` passes it to ``meta_train`` as ``on_start``). ``gin_recipe()`` is
the config as a recipe that Ray actors rebuild the run from.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import gin

import lopt_core
from lopt_core import training
from lopt_core.files import write_atomic
from lopt_core.gin_errors import GinConfigError, translate
from lopt_core.outer import run
from lopt_core.outer.settings import RECIPE_FIELDS
from lopt_core.registry import Registry, get_registry

F = TypeVar("F", bound=Callable[..., Any])

CORE_MODULE = "lopt"
OPERATIVE_CONFIG_FILENAME = "operative_config.gin"


def entry_module(kind: str) -> str:
    """The gin module of registry entries of ``kind``: ``lopt.<kind>``."""
    return f"{CORE_MODULE}.{kind}"


# ---------------------------------------------------------------- configurables

# selector -> (original function, gin wrapper) of core entry points.
_CORE: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {}
# selector -> factory of the registry entries currently exposed to gin.
_SYNCED: dict[str, Callable[..., Any]] = {}


def _gin_registry():
    # gin has no public way to remove a configurable; the registry of a plugin
    # that was uninstalled (or a rebuilt registry) must not leave stale ones behind.
    return gin.config._REGISTRY


def configurable_core(
    fn: F | None = None, *, name: str | None = None, module: str = CORE_MODULE
) -> F:
    """Expose a core function or class to gin as ``name`` (selector ``<module>.<name>``).

    Returns the gin wrapper: calls through it receive the bound parameters.
    Usable as ``configurable_core(fn, name=...)`` or as a decorator
    ``@configurable_core(name=...)``. Registering the same function again is a
    no-op returning the same wrapper (safe under module reloads).
    """
    if fn is None:
        return functools.partial(configurable_core, name=name, module=module)  # type: ignore[return-value]
    name = name or fn.__name__
    selector = f"{module}.{name}"
    for _original, wrapper in _CORE.values():
        if fn is wrapper:  # already configurable (e.g. decorated in its own module)
            return wrapper  # type: ignore[return-value]
    if selector in _CORE:
        original, wrapper = _CORE[selector]
        if original is fn:
            return wrapper  # type: ignore[return-value]
        _gin_registry().pop(selector)  # a reloaded module: replace the old function
    with gin.unlock_config():
        wrapper = gin.external_configurable(fn, name=name, module=module)
    _CORE[selector] = (fn, wrapper)
    return wrapper


def core_configurables() -> dict[str, Callable[..., Any]]:
    """The core entry points exposed to gin, by name, as their gin-configured wrappers."""
    return {selector.rsplit(".", 1)[1]: wrapper for selector, (_, wrapper) in _CORE.items()}


# The core's entry points, exposed to gin (their wrappers: ``configured(name)``).
configurable_core(training.train, name="train")
configurable_core(training.train_family, name="train_family")
configurable_core(run.meta_train, name="meta_train")


def configured(name: str) -> Callable[..., Any]:
    """The gin-configured wrapper of the core entry point ``name`` (e.g. ``"meta_train"``).

    Calls through it receive the parsed bindings (``meta_train.num_steps = ...``);
    the plain function (``lopt_core.meta_train``) ignores them.
    """
    entry_points = core_configurables()
    if name not in entry_points:
        close = difflib.get_close_matches(name, list(entry_points), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(
            f"{name!r} is not a core entry point exposed to gin.{hint} "
            f"They are: {', '.join(sorted(entry_points))}."
        )
    return entry_points[name]


class GinRecipe:
    """A recipe that parses gin config text and returns the bound ``meta_train`` arguments
    that make a ``LearnerSpec``.

    Each Ray actor that calls it gets its own freshly built objects, exactly as the
    driver's ``meta_train`` got them from the same config.
    """

    def __init__(self, config: str):
        self.config = config

    def __call__(self) -> dict[str, Any]:
        parse_config(bindings=self.config)
        bound = gin.get_bindings("meta_train")  # references are evaluated: objects built here
        return {name: value for name, value in bound.items() if name in RECIPE_FIELDS}


def gin_recipe(config: str | None = None) -> GinRecipe:
    """A ``GinRecipe`` of ``config`` (default: the whole gin config now parsed in this process)."""
    return GinRecipe(gin.config_str() if config is None else config)


def register_configurables(registry: Registry | None = None) -> list[str]:
    """Make every entry of ``registry`` the gin configurable ``lopt.<kind>.<name>``.

    Entries exposed by an earlier registry that are gone now are removed, and
    a name whose factory changed is re-registered, so rebuilding the registry
    is safe. Call with no bindings in force (``parse_config`` clears them
    first). Returns the selectors now exposed.
    """
    registry = get_registry() if registry is None else registry
    wanted = {f"{entry_module(e.kind)}.{e.name}": e for e in registry.entries()}
    gin_registry = _gin_registry()
    with gin.unlock_config():
        for selector in [
            s for s in _SYNCED if _SYNCED[s] is not getattr(wanted.get(s), "factory", None)
        ]:
            if selector in gin_registry:
                gin_registry.pop(selector)
            del _SYNCED[selector]
        for selector, entry in wanted.items():
            if selector in _SYNCED:
                continue
            try:
                gin.external_configurable(
                    entry.factory, name=entry.name, module=entry_module(entry.kind)
                )
            except Exception as e:
                raise GinConfigError(
                    f"Could not expose {entry.describe()} to gin as {selector!r}: "
                    f"{type(e).__name__}: {e}"
                ) from e
            _SYNCED[selector] = entry.factory
    return sorted(wanted)


# ---------------------------------------------------------------- parsing


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return list(value)


def parse_config(
    files: str | os.PathLike | Sequence[str | os.PathLike] = (),
    bindings: str | Sequence[str] = (),
    *,
    registry: Registry | None = None,
    finalize: bool = True,
) -> None:
    """Parse .gin ``files`` then ``bindings`` (which override them) into a fresh gin config.

    Loads the registry (``get_registry()`` unless given) and exposes it to gin
    first. ``include`` paths are looked up next to the top-level file, then in
    the current directory. Any existing gin bindings are cleared. Raises
    ``GinConfigError`` (file, line, close matches) on an unknown configurable
    or parameter, a syntax error or a missing file; the config is then left empty.
    """
    registry = get_registry() if registry is None else registry
    gin.clear_config()
    register_configurables(registry)
    prefixes = gin.config._LOCATION_PREFIXES  # gin's include search path (a module-level list)
    saved = list(prefixes)
    current: str | None = None
    try:
        for file in _as_list(files):
            path = Path(file)
            if not path.is_absolute() and path.exists():
                path = path.resolve()
            current = str(file)
            # Resolve `include 'x.gin'` next to the including file first.
            prefixes[:] = [str(path.parent)] + saved if path.is_absolute() else saved
            target = str(path) if path.is_absolute() else str(file)
            if not any(os.path.exists(os.path.join(p, target)) for p in prefixes):
                raise GinConfigError(
                    f"{file}: gin config file not found (looked in the current directory "
                    f"{os.getcwd()} and the gin search paths {saved}).",
                    file=str(file),
                )
            gin.parse_config_file(target)
            prefixes[:] = saved
        current = None
        binding_list = [b for b in _as_list(bindings) if b.strip()]
        if binding_list:
            gin.parse_config(binding_list)
        if finalize:
            gin.finalize()
    except GinConfigError:
        gin.clear_config()
        raise
    except Exception as e:
        gin.clear_config()
        raise translate(e, registry, current, core_configurables()) from e
    finally:
        prefixes[:] = saved


def write_operative_config(
    run_dir: str | os.PathLike,
    *,
    filename: str = OPERATIVE_CONFIG_FILENAME,
    registry: Registry | None = None,
) -> Path:
    """Write ``gin.operative_config_str()`` to ``run_dir/filename`` and return its path.

    The operative config holds every parameter used by configurables called so
    far (defaults included), so call it once the run has built its objects; a
    header records the lopt version and the plugin distributions installed.
    Parsing the file with ``parse_config`` reproduces the run's configuration.
    """
    registry = get_registry() if registry is None else registry
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dists = sorted({(p.distribution, p.version or "?") for p in registry.plugins if p.distribution})
    header = [
        "# Operative gin config of a lopt run: every parameter its configurables used.",
        f"# lopt {lopt_core.__version__}; plugin distributions: "
        + (", ".join(f"{d} {v}" for d, v in dists) or "none"),
        "",
    ]
    text = "\n".join(header) + "\n" + gin.operative_config_str() + "\n"
    # Written then renamed: a crash never leaves a half-written config behind.
    return write_atomic(run_dir / filename, text)
