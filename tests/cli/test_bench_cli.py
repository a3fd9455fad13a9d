"""`lopt bench` end to end on the built-in suites, with their shipped baselines."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import optax
import pytest

from helpers import tensorboard_events
from lopt_core.bench import BASELINES, BaselineArchive, Candidate, bench, get_suite
from lopt_core.bench.baselines import archive_key, compute_baseline
from lopt_core.bench.runner import aggregate
from lopt_core.bench.scores import stratified_bootstrap
from lopt_core.cli import main
from toys import write_tiny_gin

QUICK = "TeacherStudent_Dim8_Relu32"  # the cheapest task of `tiny` to compile


@pytest.fixture
def empty_archive(tmp_path, monkeypatch):
    """An empty user archive: anything not shipped would be trained and land here."""
    folder = tmp_path / "archive"
    monkeypatch.setenv("LOPT_BASELINE_ARCHIVE", str(folder))
    return folder


def test_shipped_archive_holds_every_baseline_of_tiny_and_small():
    for name in ("tiny", "small"):
        suite = get_suite(name)
        archive = BaselineArchive("/nonexistent", [suite.baselines])
        missing = [
            f"{task.label}/{b.name}"
            for task in suite.tasks
            for b in BASELINES
            if archive.get(archive_key(task, b)) is None
        ]
        assert not missing, f"suite {name}: no shipped baselines for {missing}"


def test_a_shipped_baseline_recomputes_to_the_same_result():
    suite = get_suite("tiny").select([QUICK])
    (task,) = suite.tasks
    baseline = BASELINES[1]  # tuned Adam: the sweep, the choice and the reported runs
    shipped = BaselineArchive("/nonexistent", [suite.baselines]).get(archive_key(task, baseline))
    fresh = compute_baseline(task, baseline)
    assert fresh["chosen"] == shipped["chosen"]
    # The same batches whatever ran before (fresh_datasets): on the machine that wrote the
    # archive this is exact; float rounding differs across machines and XLA builds.
    np.testing.assert_allclose(fresh["tuning_scores"], shipped["tuning_scores"], rtol=3e-2)
    np.testing.assert_allclose(fresh["test_loss"], shipped["test_loss"], rtol=1e-2)


def test_lopt_bench_an_optimizer_uses_the_shipped_baselines(tmp_path, empty_archive, capsys):
    out = tmp_path / "bench"
    args = ["bench", "--optimizer", "Adam", "-p", "Adam.learning_rate = 3e-3"]
    args += ["--suite", "tiny", "--task", QUICK, "-o", str(out), "--no-progress"]
    assert main(args + ["--replicates", "100", "--log", "tensorboard"]) == 0
    table = capsys.readouterr().out
    assert "| optimizer | normalized score, IQM [95% CI]" in table
    assert "| Adam(learning_rate=0.003" in table and "| SGDM (tuned) |" in table
    assert not empty_archive.exists()  # nothing trained but the optimizer itself
    report = json.loads((out / "bench.json").read_text())
    assert report["suite"] == "tiny" and len(report["tasks"]) == 1
    (task,) = report["tasks"]
    scores = task["optimizers"]
    best = task["best_baseline"]
    assert scores[best]["normalized"] == pytest.approx(1.0)
    assert scores[best]["speedup"] == pytest.approx(1.0)
    assert all(math.isfinite(s["normalized"]) for s in scores.values())
    for plot in report["plots"]:
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
    # --log: the aggregates, per-task scores and mean curves reach the writer.
    tags = {
        (v.tag, e.step) for e in tensorboard_events(out / "tensorboard") for v in e.summary.value
    }
    assert sum(t.startswith("bench/") and t.endswith("/normalized_iqm") for t, _ in tags) == 5
    assert any(t.endswith("/test_loss") and step == 150 for t, step in tags)


def test_lopt_bench_a_run_folder_and_the_python_api(tmp_path, empty_archive, capsys):
    config = write_tiny_gin(tmp_path / "tiny.gin", "meta_train.num_steps = 2")
    run = tmp_path / "run"
    assert main(["train", str(config), "-o", str(run), "--no-progress"]) == 0
    args = ["bench", str(run), "--task", QUICK, "--no-progress", "--replicates", "50"]
    assert main(args) == 0
    assert "| LearnableSGD (run, latest)" in capsys.readouterr().out
    assert (run / "bench_tiny" / "bench.json").is_file()
    # From Python: any optax GradientTransformation.
    results = bench(
        Candidate.of(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3)), name="clip"),
        get_suite("tiny").select([QUICK]),
        progress=False,
    )
    assert list(results[0].curves)[0] == "clip"
    assert results[0].normalized("clip") > 0.5
    # Scored on inner_valid, the intervals resample inner_valid runs too (not test's).
    (valid,) = bench(
        Candidate.of(optax.adam(3e-3), name="adam"),
        get_suite("tiny").select(["Logistic_Iris"]),  # data-backed: its splits differ
        progress=False,
        split="inner_valid",
    )
    runs = valid.curves["adam"].losses("inner_valid")
    assert not np.array_equal(runs, valid.curves["adam"].losses("test"))
    got = aggregate([valid], ["adam"], replicates=50)["adam"]
    expected = stratified_bootstrap([runs], lambda i, x: valid.speedup("adam", x), replicates=50)
    assert got["speedup_ci95"] == list(expected)
    assert not empty_archive.exists()


def test_lopt_bench_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", "--suite", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "exactly one of RUN_DIR, --optimizer NAME, --pretrained NAME or --baselines-only" in err
    assert main(["bench", "--optimizer", "Adam", "--theta", "x.msgpack"]) == 1
    assert "--theta is for learned optimizers" in capsys.readouterr().err
    assert main(["bench", "--optimizer", "LearnableSGD"]) == 1
    assert "give its meta-parameters with --theta FILE" in capsys.readouterr().err
    assert main(["bench", "--optimizer", "Adam", "--suite", "tinny"]) == 1
    assert "tiny" in capsys.readouterr().err  # close matches
    assert main(["bench", "--optimizer", "Adam", "--task", "Nope"]) == 1
    assert "suite 'tiny' has no task Nope" in capsys.readouterr().err


def test_python_candidates_are_checked():
    with pytest.raises(TypeError, match="optax GradientTransformation"):
        Candidate.of(lambda g: g)
    from lopt_core.registry import get_registry

    learned = get_registry().create("learned_optimizer", "LearnableSGD")
    with pytest.raises(ValueError, match="needs a theta"):
        Candidate.of(learned)
    assert Candidate.of(learned, learned.init(jax.random.PRNGKey(0))).name == "LearnableSGD"


def test_meta_train_validates_on_a_suite_and_keeps_the_best_by_its_score(tmp_path, empty_archive):
    config = write_tiny_gin(
        tmp_path / "tiny.gin",
        "meta_train.num_steps = 4",
        "meta_train.validate_every = 2",
        "meta_train.validation_suite = 'tiny'",
        "LearnableSGD.initial_lr = 0.02",
    )
    run = tmp_path / "run"
    assert main(["train", str(config), "-o", str(run), "--no-progress"]) == 0
    rows = [json.loads(r) for r in (run / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    tasks = [k for k in rows[0] if k.startswith("suite/")]
    assert len(tasks) == len(get_suite("tiny").tasks)
    for row in rows:
        assert row["suite_normalized_iqm"] == pytest.approx(
            float(np.mean(sorted(row[k] for k in tasks)[1:-1]))  # IQM of four: the middle two
        )
    best = max(rows, key=lambda r: r["suite_normalized_iqm"])
    assert best["best"] and sum(r["best"] for r in rows) >= 1
    assert not empty_archive.exists()  # the shipped baselines, on inner_valid
    # A suite is checked when the run starts.
    bad = write_tiny_gin(
        tmp_path / "bad.gin",
        "meta_train.validate_every = 2",
        "meta_train.validation_suite = 'tinny'",
    )
    assert main(["train", str(bad), "-o", str(tmp_path / "bad"), "--no-progress"]) == 1
