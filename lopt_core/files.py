"""Files: strict JSON, atomic writes, and lopt's folder in the user's cache."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

ENV_CACHE_DIR = "LOPT_CACHE_DIR"


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth) replaced by ``None``.

    (``NaN`` and ``Infinity`` are not JSON; jq, JavaScript and most log tools refuse them.)
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename.

    A crash or a kill leaves either the old file or the new one, never half of
    one. Missing parent folders are made.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.chmod(f.name, 0o644)  # NamedTemporaryFile's 0600 would hide it from other users
    os.replace(f.name, path)
    return path


def user_cache_dir(*parts: str) -> Path:
    """lopt's folder in the user's cache (``$LOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/lopt``,
    else ``~/.cache/lopt``), joined with ``parts``; not created."""
    root = os.environ.get(ENV_CACHE_DIR)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "lopt")
    return Path(root).joinpath(*parts)
