"""Compiling lopt's engines: XLA compile options, ``BackendJit``, and static arguments.

``BackendJit`` is ``jax.jit`` with lopt's compile options (on CPU a lower XLA
optimization level, which compiles the engines about twice as fast with equal
results). ``static_arg`` lets an unhashable object (a task, an optimizer) be a
static jit argument, compared by identity; ``unwrap_static`` gets it back.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax

# XLA's CPU backend spends most of a compile in LLVM, at optimization level 3 by
# default. lopt's engines are many tiny kernels (and matrix products that XLA hands to
# a library), so level 2 compiles a meta-training step about twice as fast (4.1 s ->
# 1.8 s for pes_quadratic; level 1 is no faster than 2) while run time and results
# (bitwise) do not change; benchmarks/README.md has the figures.
CPU_BACKEND_OPT_LEVEL_ENV = "LOPT_CPU_BACKEND_OPT_LEVEL"
_DEFAULT_CPU_BACKEND_OPT_LEVEL = 2


def compiler_options(backend: str | None = None) -> dict[str, Any] | None:
    """XLA compile options for lopt's jitted engines on ``backend`` (default: jax's default).

    On CPU: ``xla_backend_optimization_level`` 2 (XLA's default is 3), unless
    ``LOPT_CPU_BACKEND_OPT_LEVEL=<n>`` asks for another level (0-3) or ``=default``
    for XLA's own; a level given in ``XLA_FLAGS`` wins. Other backends: None.
    """
    backend = jax.default_backend() if backend is None else backend
    env = os.environ.get(CPU_BACKEND_OPT_LEVEL_ENV, "").strip()
    if backend != "cpu" or env == "default":
        return None
    if "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        return None
    if not env:
        return {"xla_backend_optimization_level": _DEFAULT_CPU_BACKEND_OPT_LEVEL}
    try:
        level = int(env)
    except ValueError:
        raise ValueError(
            f"{CPU_BACKEND_OPT_LEVEL_ENV} must be an integer level (0-3) or 'default', got {env!r}."
        ) from None
    return {"xla_backend_optimization_level": level}


def _tracing() -> bool:
    """Whether jax is tracing (inside jit, vmap, grad...), so a jitted call would be nested."""
    from jax._src import core  # no public equivalent; guarded so jax upgrades degrade safely

    try:
        return not core.trace_state_clean()
    except AttributeError:  # pragma: no cover - a jax without it: assume the safe answer
        return True


class BackendJit:
    """``jax.jit(fun, **kwargs)`` with ``compiler_options()``, created at its first use.

    The backend (and so the options) is only known once jax has initialized, which
    importing lopt must not force. jax accepts compile options only on a top-level
    jit, so a call made while tracing (the function used inside someone else's jit
    or vmap, where it is inlined anyway) goes through a plain ``jax.jit``.
    Attributes (``lower``, ``_cache_size``...) are the top-level jitted function's.
    """

    def __init__(self, fun: Any, **jit_kwargs: Any):
        self._fun = fun
        self._jit_kwargs = jit_kwargs
        self._jitted = None
        self._nested = None
        functools.update_wrapper(self, fun)

    @property
    def jitted(self) -> Any:
        """The underlying top-level ``jax.jit`` object."""
        if self._jitted is None:
            self._jitted = jax.jit(
                self._fun, compiler_options=compiler_options(), **self._jit_kwargs
            )
        return self._jitted

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _tracing():
            if self._nested is None:
                self._nested = jax.jit(self._fun, **self._jit_kwargs)
            return self._nested(*args, **kwargs)
        return self.jitted(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_fun", "_jit_kwargs", "_jitted", "_nested"):
            raise AttributeError(name)
        return getattr(self.jitted, name)


def backend_jit(fun: Any = None, **jit_kwargs: Any) -> Any:
    """Decorator form of ``BackendJit``: ``@backend_jit(static_argnames=...)``."""
    if fun is None:
        return functools.partial(backend_jit, **jit_kwargs)
    return BackendJit(fun, **jit_kwargs)


class _ByIdentity:
    """A static jit argument for an unhashable object, compared by identity."""

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.obj is self.obj


def static_arg(obj: Any) -> Any:
    """``obj`` as a static jit argument: itself if hashable, else a wrapper hashed by identity."""
    try:
        hash(obj)
    except TypeError:
        return _ByIdentity(obj)
    return obj


def unwrap_static(obj: Any) -> Any:
    """The object ``static_arg`` wrapped (anything else is returned as it is)."""
    return obj.obj if isinstance(obj, _ByIdentity) else obj
