"""The synthetic families (teacher-student, least squares, logistic regression, Rosenbrock,
Rastrigin), their presets and SyntheticDistribution."""

from __future__ import annotations

import functools
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt_core
from lopt_plugins.tasks import synthetic
from lopt_plugins.tasks.synthetic import (
    FAMILIES,
    PRESETS,
    LeastSquaresFamily,
    LogisticRegressionFamily,
    RastriginFamily,
    RosenbrockFamily,
    SyntheticDistribution,
    TeacherStudentFamily,
)

KEY = jax.random.PRNGKey(0)
# Small instances of every family, to keep compiles short.
SMALL = {
    "TeacherStudentFamily": dict(dim=4, teacher_width=8, hidden_sizes=(8,), batch_size=16),
    "LeastSquaresFamily": dict(dim=8),
    "LogisticRegressionFamily": dict(dim=8, batch_size=16),
    "RosenbrockFamily": dict(dim=6),
    "RastriginFamily": dict(dim=6),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_train_family_over_8_sampled_tasks_gives_finite_falling_losses(name):
    family = FAMILIES[name](**SMALL[name])
    assert family.datasets is None
    result = lopt_core.train_family(
        family, lopt_core.Adam(0.02), KEY, num_tasks=8, num_steps=40, eval_splits=("test",)
    )
    losses = np.asarray(result.test_loss)
    assert losses.shape == (8, 2) and np.all(np.isfinite(losses))
    assert np.all(np.isfinite(np.asarray(result.train_loss)))
    assert np.mean(losses[:, 1] < losses[:, 0]) >= 0.75, losses
    # Different cfgs are different problems (logistic regression starts at log 2 in all).
    assert len(np.unique(np.round(losses[:, 1], 5))) > 1


@functools.cache
def _sampled(name):
    """The small family ``name``, 64 of its cfgs and each one's normalized loss at init,
    in one compiled call (shared by the tests below)."""
    family = FAMILIES[name](**SMALL[name])

    @jax.jit
    def run(key):
        cfg_key, run_key = jax.random.split(key)
        cfgs = family.sample_tasks(cfg_key, 64)

        def one(cfg, key):
            task = family.task_fn(cfg)
            init_key, loss_key = jax.random.split(key)
            return task.normalizer(task.loss(task.init(init_key), loss_key, None))

        return cfgs, jax.vmap(one)(cfgs, jax.random.split(run_key, 64))

    cfgs, values = run(KEY)
    return family, jax.tree_util.tree_map(np.asarray, cfgs), np.asarray(values)


# LogisticRegressionFamily starts at exactly log 2, normalized 1 (see the presets' test).
@pytest.mark.parametrize("name", sorted(set(FAMILIES) - {"LogisticRegressionFamily"}))
def test_normalizers_are_about_one_at_init(name):
    family, cfgs, values = _sampled(name)
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    assert 0.8 < values.mean() < 1.2, values.mean()
    task = family.task_fn(jax.tree_util.tree_map(lambda x: x[0], cfgs))
    worst = np.asarray(task.normalizer(jnp.array([jnp.nan, jnp.inf, 1e30])))
    assert np.all(worst == worst[0]) and worst[0] in (1.5, 3.0, 10.0)


@pytest.mark.parametrize(
    ("name", "lr", "ratio"),
    [
        # Measured final/initial losses: 0.17, 0.004, 0.46, 3e-5, 0.25.
        ("TeacherStudent_Dim8_Relu32", 0.01, 0.4),
        ("LeastSquares_Dim32_Cond1e3", 0.1, 0.05),
        ("LogisticRegression_Dim16", 0.1, 0.7),
        ("Rosenbrock_Dim10", 0.1, 0.01),
        ("Rastrigin_Dim10", 0.1, 0.4),
    ],
)
def test_presets_fall_under_100_adam_steps(name, lr, ratio):
    task = PRESETS[name]()
    assert task.name == name and task.datasets is None
    result = lopt_core.train(task, lopt_core.Adam(lr), KEY, num_steps=100, eval_splits=("test",))
    init, final = np.asarray(result.test_loss)
    assert np.all(np.isfinite(np.asarray(result.train_loss)))
    assert 0.5 < float(task.normalizer(init)) < 1.5
    if name.startswith("Logistic"):  # zero init: exactly log 2; the max is 1.5
        assert float(task.normalizer(init)) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(task.normalizer(jnp.array([jnp.nan, 9.0])), [1.5, 1.5])
    assert final < ratio * init, (init, final)


def test_least_squares_condition_numbers_and_teacher_scale():
    family, cfgs, _ = _sampled("LeastSquaresFamily")  # log10(condition) ~ U[0, 4]
    a = cfgs["a"].astype(np.float64)
    eig = np.linalg.eigvalsh(np.swapaxes(a, 1, 2) @ a / family.num_rows)
    condition = eig[:, -1] / eig[:, 0]
    np.testing.assert_allclose(eig[:, -1], 1.0, rtol=1e-3)
    assert np.all(condition > 0.99) and np.all(condition < 1.01e4)
    assert condition.min() < 10 and condition.max() > 1000  # really sampled over the range
    family, cfgs, _ = _sampled("TeacherStudentFamily")
    x = np.random.default_rng(0).standard_normal((4096, family.dim))
    for i in range(4):  # the clean targets have unit variance
        targets = cfgs["scale"][i] * np.tanh(cfgs["gain"][i] * x @ cfgs["w1"][i]) @ cfgs["w2"][i]
        assert 0.85 < targets.var() < 1.15


def test_logistic_labels_follow_the_true_direction():
    family = LogisticRegressionFamily(dim=4, batch_size=512, max_label_noise=0.0)

    @jax.jit
    def accuracy(key):
        cfg = family.sample(key)
        # The true direction (scaled up) classifies every noise-free example.
        params = {"w": 100.0 * cfg["w_true"], "b": jnp.zeros(())}
        return family.task_fn(cfg).loss_and_aux(params, key, None)[1]["accuracy"]

    assert float(accuracy(KEY)) == 1.0


def test_presets_equality_seeds_and_pickling():
    preset = PRESETS["Rosenbrock_Dim10"]
    assert preset() == preset(0) and hash(preset()) == hash(preset(0))
    assert preset(1) != preset(0) and preset(1).name == "Rosenbrock_Dim10_Seed1"
    assert not np.allclose(preset(1).cfg["shift"], preset(0).cfg["shift"])
    assert pickle.loads(pickle.dumps(preset)) is preset
    assert synthetic.Rastrigin_Dim10 is PRESETS["Rastrigin_Dim10"]
    assert RosenbrockFamily(4) == RosenbrockFamily(dim=4)
    assert hash(RastriginFamily(4)) == hash(RastriginFamily(4))
    assert RastriginFamily(4) != RastriginFamily(5)
    assert TeacherStudentFamily(hidden_sizes=[16, 8]).name == "TeacherStudentFamily_Dim8_Relu16x8"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RosenbrockFamily(dim=1), "dim must be at least 2 for Rosenbrock, got 1"),
        (lambda: RastriginFamily(dim=0), "dim must be a positive integer, got 0"),
        (lambda: RastriginFamily(min_amplitude=5, max_amplitude=1), "min_amplitude=5"),
        (lambda: LeastSquaresFamily(dim=8, num_rows=4), "num_rows must be at least dim=8"),
        (lambda: LeastSquaresFamily(min_density=1.5), "min_density must be a number in"),
        (lambda: LogisticRegressionFamily(max_label_noise=0.7), "max_label_noise must be"),
        (lambda: TeacherStudentFamily(min_teacher_gain=0.0), "min_teacher_gain=0.0"),
        (lambda: TeacherStudentFamily(activation="swish"), "Unknown activation 'swish'"),
        (lambda: PRESETS["Rastrigin_Dim10"](seed=-1), "seed must be an integer >= 0, got -1"),
        (lambda: SyntheticDistribution(families=("Nope",)), "families must name some of"),
        (lambda: SyntheticDistribution(dims=(1, 8)), "dims must be"),
    ],
)
def test_bad_arguments_raise_one_line_value_errors(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


def test_synthetic_distribution_draws_families_of_power_of_two_dims():
    dist = SyntheticDistribution(dims=(4, 16))
    keys = jax.random.split(KEY, 40)
    drawn = [dist.sample(k) for k in keys]
    assert {type(f).__name__ for f in drawn} == set(FAMILIES)
    assert {f.dim for f in drawn} == {4, 8, 16}
    assert dist.sample(keys[3]) == drawn[3]  # same key, equal family: one compiled program
    only = SyntheticDistribution(families="RastriginFamily", dims=(8, 8))
    assert only.sample(KEY) == RastriginFamily(dim=8)
    assert synthetic.DISTRIBUTIONS == {"SyntheticDistribution": SyntheticDistribution}
