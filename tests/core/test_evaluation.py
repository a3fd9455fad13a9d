"""Evaluation: curves reproduce training, LR tuning (inner_valid only), plots.

(`lopt eval` is tested in tests/cli/test_commands.py.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt_core import SGD, Adam, Datasets, Task, draw_family_batches, train, train_family
from lopt_core.evaluation import (
    TrainingCurves,
    log_grid,
    multi_task_training_curves,
    single_task_training_curves,
    sweep_curves,
    tune_learning_rate,
)
from lopt_core.plotting import plot_curves
from toys import QuadraticFamily, RegressionFamily, ToyLearnableSGD


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
    assert labels == [
        "SGD(learning_rate=0.1)",
        "Adam(learning_rate=0.1, beta1=0.9, beta2=0.999, epsilon=1e-08)",
        "Adam(learning_rate=0.01, beta1=0.9, beta2=0.999, epsilon=1e-08)",
    ]
    assert ax.get_yscale() == "log"


def test_multi_task_curves_accept_learned_optimizers():
    lopt = ToyLearnableSGD(initial_lr=0.1)
    family = QuadraticFamily(4)
    key = jax.random.PRNGKey(0)
    learned = multi_task_training_curves(
        family, lopt, key, 3, 6, theta=lopt.init(key), name="learned"
    )
    plain = multi_task_training_curves(family, SGD(0.1), key, 3, 6)
    np.testing.assert_allclose(learned.train_loss, plain.train_loss, rtol=1e-5)
    assert learned.name == "learned"


def test_every_setting_of_a_sweep_trains_on_the_same_batches():
    # Two equal settings give equal curves only if the second does not read the next batches.
    family = RegressionFamily()
    a, b = sweep_curves(Adam, family, jax.random.PRNGKey(0), [0.01, 0.01], 5, num_runs=2)
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    np.testing.assert_array_equal(a.test_loss, b.test_loss)


def test_train_family_on_drawn_batches_equals_drawing_them_itself():
    key = jax.random.PRNGKey(1)
    batches = draw_family_batches(RegressionFamily(), 2, 4, eval_every=2)
    given = train_family(RegressionFamily(), SGD(0.1), key, 2, 4, eval_every=2, batches=batches)
    drawn = train_family(RegressionFamily(), SGD(0.1), key, 2, 4, eval_every=2)
    np.testing.assert_array_equal(given.train_loss, drawn.train_loss)
    np.testing.assert_array_equal(given.test_loss, drawn.test_loss)
    with pytest.raises(ValueError, match=r"draw_family_batches\(...\).*2 tasks, 6 steps"):
        train_family(RegressionFamily(), SGD(0.1), key, 2, 6, eval_every=2, batches=batches)
    with pytest.raises(ValueError, match=r"draw_family_batches\(...\).*2 evaluations"):
        train_family(RegressionFamily(), SGD(0.1), key, 2, 4, eval_every=4, batches=batches)
