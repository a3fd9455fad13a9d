"""The folder of a meta-training run: what its files are called, and how they are kept.

::

    <output_dir>/
        metrics.jsonl            one JSON object per outer step
        validation.jsonl         one per validation
        operative_config.gin     the gin config the run used (written by `lopt train`)
        checkpoints/latest.msgpack, previous.msgpack, best.msgpack
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from lopt_core.files import strict_json, write_atomic

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.msgpack"
PREVIOUS = "previous.msgpack"  # the checkpoint before latest: the fallback if latest is damaged
BEST = "best.msgpack"
METRICS_FILE = "metrics.jsonl"
VALIDATION_FILE = "validation.jsonl"
OPERATIVE_CONFIG_FILE = "operative_config.gin"


def latest_checkpoint(output_dir: str | os.PathLike) -> Path:
    """Where the run in ``output_dir`` keeps its latest checkpoint."""
    return Path(output_dir) / CHECKPOINT_DIR / LATEST


def previous_checkpoint(output_dir: str | os.PathLike) -> Path:
    """Where the run in ``output_dir`` keeps the checkpoint before its latest."""
    return Path(output_dir) / CHECKPOINT_DIR / PREVIOUS


def check_output_dir(output_dir: Path, resume: bool) -> Path:
    """The latest checkpoint's path, after checking that ``resume`` fits the folder.

    Resuming needs a checkpoint there (latest, or the previous one); a new run
    must not overwrite one. Rows left by a run that never checkpointed (a lopt
    before runs checkpointed at step 0) are moved aside with a warning, so a
    folder never holds rows of two runs.
    """
    latest = latest_checkpoint(output_dir)
    exists = latest.is_file() or previous_checkpoint(output_dir).is_file()
    if resume and not exists:
        raise FileNotFoundError(
            f"--resume: there is no checkpoint at {latest}. Start the run without --resume, "
            "or point --output-dir at the folder of the run to continue."
        )
    if not resume and exists:
        raise FileExistsError(
            f"{output_dir} already holds a run (checkpoint {latest}). Pass --resume to continue "
            "it, or choose another --output-dir."
        )
    if not resume:
        for name in (METRICS_FILE, VALIDATION_FILE):
            stale = Path(output_dir) / name
            if stale.is_file():
                aside = stale.with_name(f"{name}.stale")
                os.replace(stale, aside)
                warnings.warn(
                    f"{stale} holds rows of an earlier run that saved no checkpoint; moved "
                    f"them to {aside} so that this run's rows are not mixed with them.",
                    stacklevel=2,
                )
    return latest


def truncate_rows(path: Path, last_step: int) -> None:
    """Drop the JSON-lines rows of steps after ``last_step`` (they were lost with a crash).

    A torn last line goes too. The file is replaced atomically, so a crash here
    leaves the old one whole.
    """
    if not path.is_file():
        return
    kept = [row for row in read_rows(path) if row["step"] <= last_step]
    write_atomic(path, "".join(dumps_row(row) + "\n" for row in kept))


def dumps_row(row: dict[str, Any]) -> str:
    """One JSON-lines row in strict JSON: a non-finite number is written as ``null``."""
    return json.dumps(strict_json(row), allow_nan=False)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; ``null`` numbers read back as NaN.

    A last line cut short (power loss, a full disk) is the row it was being
    written: it is dropped with a warning that names the file. A bad line
    elsewhere is an error.
    """
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                warnings.warn(
                    f"{path}: its last line is cut short ({line[:60]!r}); it is dropped "
                    "(the row of a step that was being written when the run stopped).",
                    stacklevel=2,
                )
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON row ({e}): {line[:80]!r}") from e
        rows.append({k: (math.nan if v is None else v) for k, v in row.items()})
    return rows
