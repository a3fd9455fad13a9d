"""JAX's persistent compilation cache for lopt's command line: warm starts.

A second ``lopt train`` / ``lopt eval`` / ``lopt bench`` of the same recipe
reads its compiled programs from disk instead of compiling them again.
``$LOPT_COMPILATION_CACHE`` is the folder (default: ``jax/`` in lopt's user
cache, ``lopt_core.files.user_cache_dir``); ``off`` (or ``0``, ``false``, ``no``)
disables it. Only programs that took at least ``MIN_COMPILE_S`` to compile are
stored, so the many tiny ones do not fill the folder (at 0.05 s the quickstart stores 7
programs, 472 KiB; at JAX's default 1 s an idle machine cached too few of them to
warm-start).
"""

from __future__ import annotations

import os
from pathlib import Path

from lopt_core.files import user_cache_dir

ENV_COMPILATION_CACHE = "LOPT_COMPILATION_CACHE"
MIN_COMPILE_S = 0.05
_OFF = ("off", "0", "false", "no", "")


def compilation_cache_dir() -> Path | None:
    """Where compiled programs are cached, or None when the cache is off."""
    value = os.environ.get(ENV_COMPILATION_CACHE)
    if value is not None and value.strip().lower() in _OFF:
        return None
    return Path(value) if value else user_cache_dir("jax")


def enable_compilation_cache() -> Path | None:
    """Point JAX's persistent compilation cache at ``compilation_cache_dir()``; its path.

    A folder that cannot be made leaves the cache off (the run goes on, compiling).
    """
    import jax

    folder = compilation_cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
