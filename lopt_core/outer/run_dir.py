"""The folder of a meta-training run: what its files are called, and how they are kept.

::

    <output_dir>/
        metrics.jsonl            one JSON object per outer step
        validation.jsonl         one per validation
        operative_config.gin     the gin config the run used (written by `lopt train`)
        checkpoints/latest.msgpack, checkpoints/best.msgpack
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.msgpack"
BEST = "best.msgpack"
METRICS_FILE = "metrics.jsonl"
VALIDATION_FILE = "validation.jsonl"
OPERATIVE_CONFIG_FILE = "operative_config.gin"


def latest_checkpoint(output_dir: str | os.PathLike) -> Path:
    """Where the run in ``output_dir`` keeps its latest checkpoint."""
    return Path(output_dir) / CHECKPOINT_DIR / LATEST


def check_output_dir(output_dir: Path, resume: bool) -> Path:
    """The latest checkpoint's path, after checking that ``resume`` fits the folder.

    Resuming needs a checkpoint there; a new run must not overwrite one.
    """
    latest = latest_checkpoint(output_dir)
    if resume and not latest.is_file():
        raise FileNotFoundError(
            f"--resume: there is no checkpoint at {latest}. Start the run without --resume, "
            "or point --output-dir at the folder of the run to continue."
        )
    if not resume and latest.is_file():
        raise FileExistsError(
            f"{output_dir} already holds a run (checkpoint {latest}). Pass --resume to continue "
            "it, or choose another --output-dir."
        )
    return latest


def truncate_rows(path: Path, last_step: int) -> None:
    """Drop the JSON-lines rows of steps after ``last_step`` (they were lost with a crash).

    The file is replaced atomically, so a crash here leaves the old one whole.
    """
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= last_step
    ]
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write("".join(line + "\n" for line in kept))
    os.replace(f.name, path)
