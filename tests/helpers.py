"""Small utilities the tests share: paths, comparisons of pytrees, jitting and random inputs.

A plain module (``import helpers``; setup.cfg puts tests/ on the path). It imports
nothing from ``lopt_plugins``, so the core tests may use it.
"""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
DOCS_DIR = REPO_ROOT / "docs"
FIXTURES_DIR = TESTS_DIR / "fixtures"
