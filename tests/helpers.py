"""Small utilities the tests share: paths, comparisons of pytrees, jitting and random inputs.

A plain module (``import helpers``; setup.cfg puts tests/ on the path). It imports
nothing from ``lopt_plugins``, so the core tests may use it.
"""

from __future__ import annotations

import functools
import json
import struct
import time
from pathlib import Path

import jax
import numpy as np

from lopt_core.outer.checkpoints import load_checkpoint

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
DOCS_DIR = REPO_ROOT / "docs"
FIXTURES_DIR = TESTS_DIR / "fixtures"

# Compiling dominates many tests' time; XLA's backend at -O0 compiles ~2.5x faster.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
fast_jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)
tree_map = jax.tree_util.tree_map


# Pytrees -------------------------------------------------------------------------------------


def flat(tree) -> np.ndarray:
    """All leaves of ``tree``, flattened and concatenated."""
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def assert_same_theta(a, b):
    """Equal meta-parameters, leaf by leaf, up to float32 noise."""
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


# meta_train run folders ----------------------------------------------------------------------


def metric_rows(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_header(run_dir: Path, state) -> dict:
    """The header of a run's latest checkpoint (``state`` is a template of its structure)."""
    return load_checkpoint(run_dir / "checkpoints" / "latest.msgpack", state)[1]


# Random inputs ---------------------------------------------------------------------------------


def small_params():
    """A matrix ``w`` [3, 2] and a vector ``b`` [2] drawn from N(0, 1)."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    return {"w": jax.random.normal(k1, (3, 2)), "b": jax.random.normal(k2, (2,))}


def grads_sequence(params, n: int):
    """``n`` random gradients shaped (and typed) like ``params``."""
    keys = jax.random.split(jax.random.PRNGKey(1), n)
    return [tree_map(lambda p, k=k: jax.random.normal(k, p.shape, p.dtype), params) for k in keys]


def toy_params_and_grads(n: int, more=None):
    """Parameters ``b`` [3] and ``w`` [3, 2] (plus ``more(key)``'s), and ``n`` gradients for them.

    Gradient ``i`` of each leaf is drawn from N(0, 1) with the leaf's shape and dtype.
    """
    k = jax.random.split(jax.random.PRNGKey(1), 5)
    params = {"b": jax.random.normal(k[0], (3,)), "w": jax.random.normal(k[1], (3, 2))}
    if more is not None:
        params.update(more(k[2]))
    grads = [
        tree_map(
            lambda p, i=i: jax.random.normal(jax.random.fold_in(k[3], i), p.shape, p.dtype),
            params,
        )
        for i in range(n)
    ]
    return params, grads


def sample_tasks_jitted(family, n: int, key=None):
    """``n`` cfgs of ``family``, sampled in one compiled call (eager vmap compiles op by op)."""
    key = jax.random.PRNGKey(0) if key is None else key
    return jax.jit(family.sample_tasks, static_argnums=1)(key, n)


# Metric writers' files ------------------------------------------------------------------------


def tensorboard_events(log_dir: Path) -> list:
    """Every event of the event files in ``log_dir`` (TFRecord: length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event()
            event.ParseFromString(data[pos + 12 : pos + 12 + length])
            events.append(event)
            pos += 12 + length + 4
    return events


def wandb_records(run_file: Path, timeout: float = 30.0) -> list:
    """The records of a W&B ``.wandb`` file, once its ``exit`` record is there.

    W&B's service process writes the file; ``run.finish()`` can return a moment
    before it is done, so this waits (up to ``timeout`` seconds) for the last record.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_file_records(run_file)
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        if time.monotonic() > deadline:
            kinds = [r.WhichOneof("record_type") for r in records]
            raise AssertionError(f"{run_file} has no exit record after {timeout} s: {kinds}")
        time.sleep(0.1)


def _wandb_file_records(run_file: Path) -> list:
    """The records of a W&B ``.wandb`` file (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block, pos, parts, records = run_file.read_bytes(), 32768, 7, [], []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last part of one
            record = Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records
