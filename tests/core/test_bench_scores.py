"""lopt_core.bench: scores (normalization, speedup, IQM, bootstrap), suites and the archive."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lopt_core.bench import Baseline, BaselineArchive, Suite, SuiteTask
from lopt_core.bench.baselines import ADAM_1E3, BASELINES, archive_key
from lopt_core.bench.scores import (
    first_step_at_or_below,
    iqm,
    normalized_score,
    speedup,
    stratified_bootstrap,
)

STEPS = np.arange(0, 110, 10)


def test_normalized_score_is_zero_at_init_and_one_at_the_best_baseline():
    assert normalized_score(2.0, init=2.0, best=1.0) == 0.0
    assert normalized_score(1.0, init=2.0, best=1.0) == 1.0
    assert normalized_score(0.5, init=2.0, best=1.0) == 1.5
    assert normalized_score(math.inf, init=2.0, best=1.0) == -math.inf
    with pytest.raises(ValueError, match="no tuned baseline lowered the loss"):
        normalized_score(1.0, init=1.0, best=1.2)


def test_first_step_interpolates_between_evaluations():
    curve = np.array([4.0, 3.0, 2.0, 1.0])
    steps = np.array([0, 10, 20, 30])
    assert first_step_at_or_below(steps, curve, 2.5) == pytest.approx(15.0)
    assert first_step_at_or_below(steps, curve, 4.0) == 0.0
    assert first_step_at_or_below(steps, curve, 0.5) is None
    assert first_step_at_or_below(steps, np.array([4.0, np.nan, 1.0, 1.0]), 2.0) == 20.0


def test_speedup_is_one_against_itself_and_measures_steps_saved_or_lost():
    baseline = 1.0 / (1.0 + STEPS / 10.0)  # reaches its final loss at the last step
    assert speedup(STEPS, baseline, STEPS, baseline) == pytest.approx(1.0)
    twice_as_fast = 1.0 / (1.0 + STEPS / 5.0)
    assert speedup(STEPS, twice_as_fast, STEPS, baseline) == pytest.approx(2.0, rel=0.15)
    half_speed = 1.0 / (1.0 + STEPS / 20.0)  # ends where the baseline is at step ~50
    assert speedup(STEPS, half_speed, STEPS, baseline) == pytest.approx(0.5, rel=0.15)
    worse_than_init = np.full_like(baseline, 2.0)
    assert speedup(STEPS, worse_than_init, STEPS, baseline) == 0.0
    diverged = np.where(STEPS > 50, np.inf, baseline)
    assert speedup(STEPS, diverged, STEPS, baseline) == 0.0


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)
    assert iqm([100, 1, 2, 3]) == pytest.approx(2.5)  # the outliers are cut
    assert iqm([3.0]) == 3.0


def test_stratified_bootstrap_interval_brackets_the_estimate_and_shrinks_with_no_noise():
    rng = np.random.default_rng(0)
    runs = [rng.normal(i, 1.0, 5) for i in range(6)]
    low, high = stratified_bootstrap(runs, lambda i, x: float(np.mean(x)), replicates=500)
    estimate = iqm([np.mean(x) for x in runs])
    assert low < estimate < high
    flat = [np.full(4, float(i)) for i in range(6)]
    assert stratified_bootstrap(flat, lambda i, x: float(np.mean(x)), replicates=50) == (
        pytest.approx(2.5),
        pytest.approx(2.5),
    )


def test_suite_tasks_check_their_budget_and_suites_their_tasks():
    task = SuiteTask("SomeTask", {"width": 8}, steps=150)
    assert 150 % task.eval_every == 0 and task.eval_every <= 7
    assert task.label == "SomeTask(width=8)"
    with pytest.raises(ValueError, match="eval_every"):
        SuiteTask("SomeTask", steps=100, eval_every=7)
    with pytest.raises(ValueError, match="steps"):
        SuiteTask("SomeTask", steps=0)
    with pytest.raises(TypeError):
        SuiteTask("SomeTask", {"fn": print})  # arguments key the archive: JSON only
    with pytest.raises(ValueError, match="more than once"):
        Suite("s", [SuiteTask("A"), SuiteTask("A")])
    suite = Suite("s", [SuiteTask("A"), SuiteTask("B")])
    assert [t.task for t in suite.select(["B"]).tasks] == ["B"]
    with pytest.raises(ValueError, match="has no task C; it has A, B"):
        suite.select(["C"])


def test_archive_keys_cover_what_determines_a_result(tmp_path):
    task = SuiteTask("A", steps=100, seeds=3)
    key = archive_key(task, ADAM_1E3)
    assert {"protocol", "lopt", "task", "args", "steps", "seeds", "settings"} <= set(key)
    assert archive_key(SuiteTask("A", steps=200, seeds=3), ADAM_1E3) != key
    assert archive_key(SuiteTask("A", steps=100, seeds=4), ADAM_1E3) != key
    assert archive_key(task, BASELINES[1]) != key
    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    archive = BaselineArchive(cache)
    assert archive.get(key) is None
    path = archive.put(key, {"chosen": {"learning_rate": 1e-3}, "test_loss": [[1.0, math.inf]]})
    assert path.parent == cache
    assert json.loads(path.read_text())["test_loss"] == [[1.0, None]]  # strict JSON
    assert archive.get(key)["chosen"] == {"learning_rate": 1e-3}
    # A shipped copy is read first; a file whose key differs is not taken.
    shipped.mkdir()
    (shipped / path.name).write_text(json.dumps({"key": key, "chosen": "shipped"}))
    assert BaselineArchive(cache, [shipped]).get(key)["chosen"] == "shipped"
    (shipped / path.name).write_text(json.dumps({"key": {**key, "steps": 1}, "chosen": "x"}))
    assert BaselineArchive(cache, [shipped]).get(key)["chosen"] == {"learning_rate": 1e-3}


def test_the_default_baselines_are_untuned_adam_and_three_tuned_ones():
    assert [b.name for b in BASELINES] == [
        "Adam lr=1e-3",
        "Adam (tuned)",
        "AdamW warmup+cosine (tuned)",
        "SGDM (tuned)",
    ]
    assert [b.tuned for b in BASELINES] == [False, True, True, True]
    adamw = BASELINES[2]
    assert {s["weight_decay"] for s in adamw.settings} == {1e-4, 1e-1}
    optimizer = adamw.make(200)(learning_rate=1e-2, weight_decay=1e-4)
    assert optimizer.hyper_params["total_steps"] == 200
    assert isinstance(BASELINES[0], Baseline) and BASELINES[0].num_runs == 1
    assert adamw.num_runs == len(adamw.settings) + 1
