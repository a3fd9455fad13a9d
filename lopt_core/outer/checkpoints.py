"""Atomic checkpoints of a meta-training run: the learner state plus a small JSON header."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization


def save_checkpoint(
    path: str | os.PathLike,
    state: Any,
    metadata: dict[str, Any],
    previous: str | os.PathLike | None = None,
) -> Path:
    """Write ``state`` (a pytree) and ``metadata`` (JSON-able) to ``path`` atomically.

    The bytes go to a temporary file in the same folder, which is then renamed
    over ``path``: a crash mid-write leaves the previous checkpoint intact. With
    ``previous``, the checkpoint that was at ``path`` is kept there (one more
    good copy, for when the newest is damaged later).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = serialization.to_state_dict(jax.device_get(state))
    payload = serialization.msgpack_serialize(
        {"metadata": json.dumps(metadata), "state": state_dict}
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the run from its other users
        if previous is not None and path.is_file():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or does not fit this run's configuration."""


class UnreadableCheckpointError(CheckpointError):
    """A checkpoint file that is torn (cut short, corrupt) or not a lopt checkpoint."""


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw state dict and the header of the checkpoint at ``path``: the one reader.

    Raises ``FileNotFoundError`` when there is no file, ``CheckpointError``
    (an ``UnreadableCheckpointError``, naming the file) when it is torn or not a
    lopt checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        raw = serialization.msgpack_restore(path.read_bytes())
        header = json.loads(raw["metadata"])
        state = raw["state"]
    except Exception as e:  # msgpack and json raise many kinds on a torn file
        raise UnreadableCheckpointError(
            f"The checkpoint {path} is unreadable (truncated or corrupt: {type(e).__name__}: {e})."
        ) from e
    return state, header


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Only the JSON header of the checkpoint at ``path``."""
    return read_checkpoint(path)[1]


def _restore(path: Path, template: Any, raw: Any, mismatch: str) -> Any:
    try:
        restored = serialization.from_state_dict(template, raw)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(mismatch.format(path=path, error=e)) from e
    _check_shapes(path, template, restored)
    return restored


_STATE_MISMATCH = (
    "The checkpoint {path} does not match this run's configuration ({error}). Resume with "
    "the config the run was started with (its operative_config.gin), or start a new run in "
    "another output directory."
)
_THETA_MISMATCH = (
    "The meta-parameters in {path} do not fit this learned optimizer ({error}); was the run "
    "made with another configuration?"
)


def load_checkpoint(
    path: str | os.PathLike, template: Any, *, ignore: tuple[str, ...] = ()
) -> tuple[Any, dict[str, Any]]:
    """Read a checkpoint written by ``save_checkpoint`` into the structure of ``template``.

    ``template`` is a state of the same structure (e.g. a freshly initialized
    one); a mismatch means the checkpoint came from a different configuration.
    ``ignore`` names top-level fields of the saved state to leave out: they take
    the template's values.
    """
    path = Path(path)
    raw, header = read_checkpoint(path)
    for name in ignore:
        raw[name] = serialization.to_state_dict(getattr(template, name))
    return _restore(path, template, raw, _STATE_MISMATCH), header


def _check_shapes(path: Path, template: Any, state: Any) -> None:
    for (where, t), s in zip(
        jax.tree_util.tree_leaves_with_path(template), jax.tree_util.tree_leaves(state), strict=True
    ):
        if np.shape(t) != np.shape(s):
            raise CheckpointError(
                f"The checkpoint {path} holds shape {np.shape(s)} at "
                f"{jax.tree_util.keystr(where)}, but this run's configuration expects "
                f"{np.shape(t)}. Resume with the config the run was started with."
            )


def load_theta(path: str | os.PathLike, template: Any) -> tuple[Any, dict[str, Any]]:
    """Only the meta-parameters (and header) of a learner checkpoint, shaped like ``template``."""
    path = Path(path)
    raw, header = read_checkpoint(path)
    if "theta" not in raw:
        raise CheckpointError(f"{path} holds no meta-parameters (theta): it is no learner state.")
    return _restore(path, template, raw["theta"], _THETA_MISMATCH), header
