"""Evaluation: curves reproduce training, LR tuning (inner_valid only), plots, `lopt eval`."""

from __future__ import annotations

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt_core import SGD, Adam, Datasets, Task, train
from lopt_core.evaluation import (
    TrainingCurves,
    log_grid,
    multi_task_training_curves,
    single_task_training_curves,
    tune_learning_rate,
)
from lopt_core.plotting import plot_curves


class Diagonal(Task):
    """``0.5 * sum(a * p**2)``: SGD with lr ``1/a`` reaches the optimum in one step."""

    def __init__(self, curvature: float = 4.0):
        self.curvature = curvature

    def init(self, key):
        return jnp.ones(3) + 0.1 * jax.random.normal(key, (3,))

    def loss(self, params, key, batch):
        return 0.5 * self.curvature * jnp.sum(params**2)


def test_single_task_curves_reproduce_train_exactly():
    task = Diagonal()
    curves = single_task_training_curves(task, Adam(0.05), jax.random.PRNGKey(3), 12, num_seeds=3)
    # The seeds are the run keys train_family derives: reproduce each with `train`.
    _, run_key = jax.random.split(jax.random.PRNGKey(3))
    for i, key in enumerate(jax.random.split(run_key, 3)):
        single = train(task, Adam(0.05), key, 12)
        np.testing.assert_array_equal(curves.train_loss[i], np.asarray(single.train_loss))
        np.testing.assert_array_equal(curves.test_loss[i], np.asarray(single.test_loss))
    assert curves.train_loss.shape == (3, 12)
    assert curves.eval_steps.tolist() == [0, 12]


def test_summary_reports_final_best_spread_and_steps_to_target():
    curves = TrainingCurves(
        name="opt",
        train_loss=np.zeros((2, 4)),
        eval_steps=np.array([0, 2, 4]),
        inner_valid_loss=None,
        test_loss=np.array([[4.0, 1.0, 2.0], [4.0, 3.0, 0.5]]),
        test_aux={"accuracy": np.array([[0.1, 0.5, 0.6], [0.1, 0.4, 0.8]])},
    )
    s = curves.summary("test", target_loss=1.0)
    assert s["final_mean"] == pytest.approx(1.25)
    assert s["final_sd"] == pytest.approx(0.75)
    assert s["best_mean"] == pytest.approx(0.75)
    assert s["steps_to_target"] == [2, 4]
    assert s["final_accuracy_mean"] == pytest.approx(0.7)
    np.testing.assert_array_equal(curves.at_step("test", 2), [1.0, 3.0])
    with pytest.raises(ValueError, match="not an evaluation step"):
        curves.at_step("test", 3)
    with pytest.raises(ValueError, match="no 'inner_valid' losses"):
        curves.summary("inner_valid")


def test_tuning_picks_the_analytic_best_learning_rate():
    # With curvature 4, SGD at lr 1/4 = 0.25 zeroes the loss in one step; lr >= 0.5 diverges.
    grid = [0.01, 0.03, 0.1, 0.25, 0.4, 1.0]
    result = tune_learning_rate(SGD, Diagonal(4.0), jax.random.PRNGKey(0), grid, 5, num_runs=2)
    assert result.best_learning_rate == 0.25
    assert result.optimizer == SGD(0.25)
    assert result.scores[0.25] == pytest.approx(0.0, abs=1e-10)
    assert result.scores[1.0] > result.scores[0.01] or not np.isfinite(result.scores[1.0])
    with pytest.raises(ValueError, match="diverged"):
        tune_learning_rate(SGD, Diagonal(4.0), jax.random.PRNGKey(0), [10.0, 100.0], 30, 2)


def _never_read():
    raise AssertionError("tuning read the test split")
    yield


class _Noisy(Task):
    def __init__(self):
        rng = np.random.default_rng(0)

        def batches():
            while True:
                yield {"x": rng.normal(size=(4, 3)).astype(np.float32)}

        self.datasets = Datasets(batches(), batches(), batches(), _never_read())

    def init(self, key):
        return jnp.ones(3)

    def loss(self, params, key, batch):
        return jnp.mean((batch["x"] - params) ** 2)


def test_tuning_never_reads_the_test_split():
    result = tune_learning_rate(Adam, _Noisy(), jax.random.PRNGKey(0), log_grid(1e-3, 1e-1, 3), 4)
    assert result.best_learning_rate in log_grid(1e-3, 1e-1, 3)
    with pytest.raises(AssertionError, match="read the test split"):
        single_task_training_curves(_Noisy(), Adam(0.01), jax.random.PRNGKey(0), 4)


def test_plot_is_a_png_with_one_curve_per_optimizer(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = Diagonal()
    curves = [
        single_task_training_curves(task, opt, jax.random.PRNGKey(0), 10, num_seeds=2, eval_every=2)
        for opt in (SGD(0.1), Adam(0.1), Adam(0.01))
    ]
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))  # keep it to inspect
    path = plot_curves(curves, tmp_path / "curves.png", marker_steps=[5])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = figures[0].axes
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["SGD(learning_rate=0.1)", "Adam(learning_rate=0.1, beta1=0.9, beta2=0.999, "
                      "epsilon=1e-08)", "Adam(learning_rate=0.01, beta1=0.9, beta2=0.999, "
                      "epsilon=1e-08)"]  # fmt: skip
    assert ax.get_yscale() == "log"


def test_multi_task_curves_accept_learned_optimizers():
    from lopt_plugins.learned_optimizers import LearnableSGD
    from lopt_plugins.tasks import FixedDimQuadraticFamily

    lopt = LearnableSGD(initial_lr=0.1)
    family = FixedDimQuadraticFamily(4)
    key = jax.random.PRNGKey(0)
    learned = multi_task_training_curves(
        family, lopt, key, 3, 6, theta=lopt.init(key), name="learned"
    )
    plain = multi_task_training_curves(family, SGD(0.1), key, 3, 6)
    np.testing.assert_allclose(learned.train_loss, plain.train_loss, rtol=1e-5)
    assert learned.name == "learned"


def test_lopt_eval_end_to_end_on_a_tiny_run(tmp_path, capsys):
    from lopt_core.cli import main

    config = tmp_path / "tiny.gin"
    config.write_text(
        textwrap.dedent(
            """
            meta_train.task_family = @FixedDimQuadraticFamily()
            FixedDimQuadraticFamily.dim = 3
            meta_train.learned_optimizer = @LearnableSGD()
            LearnableSGD.initial_lr = 0.05
            meta_train.truncation_schedule = @ConstantTruncationSchedule()
            ConstantTruncationSchedule.length = 10
            meta_train.gradient_estimator = @TruncatedPES
            TruncatedPES.trunc_length = 5
            meta_train.num_tasks = 2
            meta_train.num_steps = 4
            meta_train.validate_every = 2
            meta_train.validation_tasks = 2
            """
        )
    )
    run = tmp_path / "run"
    assert main(["train", str(config), "-o", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--seeds", "2", "--task", "QuadraticTask", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "| LearnableSGD |" in table and "| Adam lr=1e-3 |" in table
    assert "Adam tuned lr=" in table and "SGDM tuned lr=" in table
    assert "| optimizer | 10 steps | 20 steps |" in table
    report = json.loads((run / "eval.json").read_text())
    assert report["checkpoint"] == "best"
    assert [t["name"] for t in report["targets"]] == [
        "FixedDimQuadraticFamily_Dim3 (held-out tasks)",
        "QuadraticTask_Dim10",
    ]
    for target in report["targets"]:
        assert (run / target["plot"]).read_bytes()[:4] == b"\x89PNG"
        assert len(target["rows"]) == 4
        assert all(len(r["test_loss_at_horizon"]) == 2 for r in target["rows"])
    # Not a run folder: a clear error.
    with pytest.raises(FileNotFoundError, match="not a lopt run folder"):
        main(["eval", str(tmp_path)])
