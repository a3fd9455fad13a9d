"""The tutorials run: every ```python block of a doc executes, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import lopt_core
from helpers import DOCS_DIR

DOCS = DOCS_DIR
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(path: Path) -> list[str]:
    """The contents of the ```python fenced blocks of ``path``, in order."""
    return FENCE.findall(path.read_text(encoding="utf-8"))


def run_blocks(path: Path) -> dict:
    """Execute the blocks of ``path`` one after another in a shared namespace."""
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    for i, block in enumerate(python_blocks(path)):
        code = compile(block, f"{path.name} (python block {i + 1})", "exec")
        exec(code, namespace)  # noqa: S102 - running the docs is the point of this test
    return namespace


def test_python_blocks_are_extracted_in_order(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Intro\n\n```python\nx = 1\n```\n\ntext\n\n```text\nnot code\n```\n\n"
        "```python\ny = x + 1\n```\n",
        encoding="utf-8",
    )
    assert python_blocks(doc) == ["x = 1\n", "y = x + 1\n"]
    assert run_blocks(doc)["y"] == 2


def test_custom_tasks_tutorial_runs(fresh_cache):
    # (fresh_cache: the tutorial's builder must really build, not reuse another test's datasets.)
    path = DOCS / "custom_tasks.md"
    blocks = python_blocks(path)
    assert len(blocks) >= 10, "the tutorial lost its code blocks"
    namespace = run_blocks(path)

    # The objects the tutorial teaches exist and behave as it says.
    family = namespace["FixedDimQuadraticFamily"](dim=4)
    assert isinstance(family, lopt_core.TaskFamily)
    task = family.task_fn(family.sample(namespace["jax"].random.PRNGKey(0)))
    assert isinstance(task, lopt_core.Task)
    assert task.datasets is family.datasets  # shared through dataset_lru_cache
    assert namespace["losses"].shape == (32, 20)  # the vmapped training over 32 configs


def test_meta_training_guide_runs():
    path = DOCS / "meta_training.md"
    assert len(python_blocks(path)) >= 8, "the guide lost its code blocks"
    namespace = run_blocks(path)
    run_dir = namespace["run_dir"]
    assert (run_dir / "checkpoints" / "best.msgpack").is_file()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 40


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the README's example writes runs/ where it runs
    path = DOCS.parent / "README.md"
    blocks = python_blocks(path)
    assert len(blocks) >= 2, "the README lost its examples"
    namespace = run_blocks(path)
    assert namespace["result"].train_loss.shape == (32, 100)
    assert (tmp_path / "runs" / "python" / "checkpoints" / "latest.msgpack").is_file()


def test_task_distributions_guide_runs():
    path = DOCS / "task_distributions.md"
    assert len(python_blocks(path)) >= 5, "the guide lost its code blocks"
    namespace = run_blocks(path)
    rows = namespace["rows"]
    assert {"meta_loss/FixedDimQuadraticFamily_Dim4", "meta_loss/ImageMLP_Digits8_Relu32"} & set(
        k for row in rows for k in row
    )
    assert namespace["validation"][-1]["normalized_inner_valid_loss"] < 2.0


def test_bench_guide_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LOPT_BASELINE_ARCHIVE", str(tmp_path / "archive"))
    namespace = run_blocks(DOCS / "bench.md")
    scores = namespace["scores"]["adamw"]
    low, high = scores["normalized_ci95"]
    assert low <= scores["normalized_iqm"] <= high
    assert not (tmp_path / "archive").exists()  # tiny's shipped baselines were used
    suite = namespace["my_suite"]()
    assert suite.tasks[0].build().name  # the example suite's task exists


def test_pretrained_guide_runs(capsys):
    namespace = run_blocks(DOCS / "pretrained.md")
    assert float(
        namespace["loss_fn"](namespace["state"].params, namespace["x"], namespace["y"])
    ) < (0.5 * float(namespace["first"]))
    assert "ResidualAdamLOpt" in capsys.readouterr().out
