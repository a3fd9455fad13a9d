"""docs/api.md is generated from the code (tools/api_reference.py) and must be up to date."""

from __future__ import annotations

import importlib.util

import lopt_core
from helpers import DOCS_DIR, REPO_ROOT


def _generator():
    path = REPO_ROOT / "tools" / "api_reference.py"
    spec = importlib.util.spec_from_file_location("api_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date():
    text = _generator().render()
    current = (DOCS_DIR / "api.md").read_text()
    assert current == text, "docs/api.md is out of date: run `python tools/api_reference.py`."


def test_api_reference_lists_every_public_name_with_its_signature():
    doc = (DOCS_DIR / "api.md").read_text()
    for name in lopt_core.__all__:
        if name != "__version__":
            assert f"`lopt_core.{name}`" in doc, name
    assert "class LinenTask(model: 'Any', loss_fn:" in doc
    assert "- `tensorboard(log_dir:" in doc and "- `wandb(project:" in doc
