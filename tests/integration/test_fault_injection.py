"""Real `lopt train` processes stopped by SIGINT, SIGTERM and SIGKILL, resumed each time.

The run must end with every step's metrics row exactly once, equal to an
uninterrupted run's row for row (wall times aside), and the same theta bit for bit.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from flax import serialization

CONFIG = """
meta_train.task_family = @FixedDimQuadraticFamily()
FixedDimQuadraticFamily.dim = 10
meta_train.learned_optimizer = @LearnableAdam()
meta_train.gradient_estimator = @TruncatedPES
TruncatedPES.trunc_length = 10
meta_train.truncation_schedule = @ConstantTruncationSchedule()
ConstantTruncationSchedule.length = 40
meta_train.num_tasks = 8
meta_train.num_steps = 240
meta_train.checkpoint_every = 25
"""
# (signal, rows written when it is sent): several arbitrary points of one run.
CUTS = [(signal.SIGINT, 30), (signal.SIGKILL, 95), (signal.SIGTERM, 160)]


def _lopt(*args: str) -> list[str]:
    return [sys.executable, "-m", "lopt_core.cli", *args, "--no-progress"]


def _rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    # Only whole lines: polled while the run writes, the last line may be half written.
    lines = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def _theta(run: Path):
    raw = serialization.msgpack_restore((run / "checkpoints" / "latest.msgpack").read_bytes())
    return raw["state"]["theta"]


def _cut(config: Path, run: Path, sig: int, after_rows: int, resume: bool) -> int:
    args = _lopt("train", str(config), "-o", str(run)) + (["--resume"] if resume else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if len(_rows(run)) >= after_rows:
            proc.send_signal(sig)
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode is not None
    if sig != signal.SIGKILL:
        assert "lopt: error" not in err, err
    return proc.returncode


def test_stops_at_arbitrary_steps_lose_nothing(tmp_path):
    config = tmp_path / "cfg.gin"
    config.write_text(CONFIG)
    uninterrupted = subprocess.run(
        _lopt("train", str(config), "-o", str(tmp_path / "full")), capture_output=True, text=True
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    full = _rows(tmp_path / "full")
    assert [r["step"] for r in full] == list(range(1, 241))

    run = tmp_path / "cut"
    codes = []
    for i, (sig, rows) in enumerate(CUTS):
        codes.append(_cut(config, run, sig, rows, resume=i > 0))
    # Each stop ended the process as its signal should: SIGINT 130, SIGKILL -9, SIGTERM 143
    # (or 0 if the run had already finished, which the rows below would show).
    assert codes[0] in (130, 0) and codes[1] in (-signal.SIGKILL, 0) and codes[2] in (143, 0)
    done = subprocess.run(
        _lopt("train", str(config), "-o", str(run), "--resume"), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr

    cut = _rows(run)
    assert [r["step"] for r in cut] == list(range(1, 241))  # each step exactly once
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]
    assert strip(cut) == strip(full)
    a, b = _theta(tmp_path / "full"), _theta(run)
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        assert np.array_equal(x, y)


def _leaves(tree):
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in _leaves(tree[k])]
    return [np.asarray(tree)]
