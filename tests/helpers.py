"""Small utilities the tests share: paths, comparisons of pytrees, jitting and random inputs.

A plain module (``import helpers``; setup.cfg puts tests/ on the path). It imports
nothing from ``lopt_plugins``, so the core tests may use it.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from lopt_core.outer.checkpoints import load_checkpoint

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
DOCS_DIR = REPO_ROOT / "docs"
FIXTURES_DIR = TESTS_DIR / "fixtures"


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
