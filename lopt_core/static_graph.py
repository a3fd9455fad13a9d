"""One static computation graph: the check every task family must pass, and its errors.

A family is trained under ``jax.vmap`` and ``jit``, so every task it samples must
trace into one graph. A task that turns a traced value into a Python one fails
deep inside jax; ``explain_tracer_errors`` turns that into a ``StaticGraphError``
that says what went wrong and how to fix it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax

from lopt_core.tasks import TaskFamily


class StaticGraphError(TypeError):
    """A task or family cannot be traced into one static computation graph."""


# Tracing errors that mean a task or family turned traced values into Python ones.
_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
)


def _is_tracer_error(e: Exception) -> bool:
    if isinstance(e, StaticGraphError):
        return False
    if isinstance(e, _TRACER_ERRORS):
        return True
    # A shape or slice built from a traced value fails with a plain TypeError
    # ("Shapes must be 1D sequences of concrete values") or IndexError ("Slice
    # entries must be static integers") rather than a jax.errors class.
    msg = str(e)
    return isinstance(e, (TypeError, IndexError)) and (
        "concrete value" in msg or "must be static" in msg
    )


@contextlib.contextmanager
def explain_tracer_errors(what: str):
    """Re-raise tracer errors inside the block as a ``StaticGraphError`` about ``what``."""
    try:
        yield
    except (TypeError, IndexError) as e:
        if not _is_tracer_error(e):
            raise
        raise StaticGraphError(
            f"{what} could not be traced into one static computation graph: it turned a traced "
            "array into a Python value (int(), float(), bool(), `if`, a shape or slice size, or "
            "numpy on a jax array). "
            "Every task of a family must keep one computation graph, because the family is "
            "trained under jax.vmap and jit: choose between variants with lax.cond/lax.switch "
            "and keep shapes fixed, or split the variants into separate families. "
            f"Original error: {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from e


def sample_cfgs(family: TaskFamily, key: jax.Array, num_tasks: int) -> Any:
    """``family.sample_tasks`` with the checks that make a bad family fail clearly."""
    if not isinstance(family, TaskFamily):
        raise TypeError(f"expected a TaskFamily, got {type(family).__name__}: {family!r}.")
    with explain_tracer_errors(f"TaskFamily {family.name}.sample"):
        try:
            cfgs = family.sample_tasks(key, num_tasks)
        except TypeError as e:
            if "vmap" not in str(e) and "JAX type" not in str(e):
                raise
            raise StaticGraphError(
                f"TaskFamily {family.name}.sample must return a pytree of jax arrays (the cfg), "
                f"so that configs can be vmapped; it failed under jax.vmap with: {e}"
            ) from e
    return cfgs
