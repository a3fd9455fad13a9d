"""Meta-training over task distributions: slots, resampling, compile counts, weights, resume."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_same_theta
from lopt_core import meta_train
from lopt_core.outer import ConstantTruncationSchedule, TruncatedPES
from lopt_core.outer.gradient_estimators import GradientEstimate
from lopt_core.outer.mixture_executor import MixtureExecutor
from lopt_core.outer.settings import LearnerSpec
from lopt_core.task_distributions import FamilyMixture, TaskDistribution, host_rng
from toys import Quadratic, QuadraticFamily, RegressionFamily, ToyLearnableSGD

LOPT = ToyLearnableSGD(0.05)


def _three_families():
    # Three graphs: parameters of shape (4,) and (7,) without data, (4,) on data.
    return [QuadraticFamily(4), QuadraticFamily(7), RegressionFamily()]


def _args(**overrides):
    args = dict(
        learned_optimizer=LOPT,
        gradient_estimator=functools.partial(TruncatedPES, trunc_length=3),
        truncation_schedule=ConstantTruncationSchedule(6),
        num_tasks=2,
        num_estimators=3,
        resample_every=2,
        checkpoint_every=3,
        progress=False,
    )
    args.update(overrides)
    return args


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("stop", [4, 5])  # on a resampling boundary, and inside an epoch
def test_three_architectures_meta_train_and_resume_bitwise_with_resampling(tmp_path, stop):
    kw = dict(validate_every=3, validation_tasks=2)
    full = meta_train(
        tmp_path / "full", task_families=_three_families(), num_steps=9, **_args(**kw)
    )
    meta_train(tmp_path / "split", task_families=_three_families(), num_steps=stop, **_args(**kw))
    # New family objects (fresh data iterators), as a new process would build them.
    resumed = meta_train(
        tmp_path / "split",
        task_families=_three_families(),
        num_steps=9,
        resume=True,
        **_args(**kw),
    )
    assert_same_theta(full.state.theta, resumed.state.theta)
    full_rows, split_rows = (
        _rows(tmp_path / "full/metrics.jsonl"),
        _rows(tmp_path / "split/metrics.jsonl"),
    )
    assert [r["step"] for r in split_rows] == list(range(1, 10))
    drop = lambda r: {k: v for k, v in r.items() if k != "wall_s"}
    assert [drop(r) for r in split_rows] == [drop(r) for r in full_rows]
    # Per-family meta-losses, and more than one family over the run.
    per_family = {k for r in full_rows for k in r if k.startswith("meta_loss/")}
    assert {"meta_loss/QuadraticFamily", "meta_loss/RegressionFamily"} <= per_family
    validation = _rows(tmp_path / "full/validation.jsonl")
    assert [r["step"] for r in validation] == [3, 6, 9]
    assert all(np.isfinite(r["normalized_inner_valid_loss"]) for r in validation)
    assert _rows(tmp_path / "split/validation.jsonl") == validation


def test_slots_draw_from_the_seed_and_resample(tmp_path):
    spec = LearnerSpec(task_families=_three_families()[:2], **_spec_args(num_estimators=4))
    spec = LearnerSpec(
        task_distribution=spec.task_distribution, resample_every=1, **_spec_args(num_estimators=4)
    )
    a = MixtureExecutor(spec, jax.random.PRNGKey(0))
    b = MixtureExecutor(spec, jax.random.PRNGKey(0))
    c = MixtureExecutor(spec, jax.random.PRNGKey(1))
    draws = lambda ex, epoch: [id(f) for f in ex.slots.families(epoch)]
    assert draws(a, 0) == draws(b, 0) and draws(a, 3) == draws(b, 3)
    epochs = [tuple(draws(a, e)) for e in range(8)]
    assert len(set(epochs)) > 1  # resampling changes the slots
    assert any(draws(a, e) != draws(c, e) for e in range(8))  # another seed draws others


def _spec_args(**overrides):
    args = dict(
        learned_optimizer=LOPT,
        gradient_estimator=functools.partial(TruncatedPES, trunc_length=2),
        truncation_schedule=ConstantTruncationSchedule(4),
        num_tasks=2,
    )
    args.update(overrides)
    return args


def test_equal_families_compile_once_across_resampling():
    # Two distinct graphs, four slots redrawn every step: two estimators, each compiled
    # once, and one compile of the update, however the draws fall.
    spec = LearnerSpec(
        task_families=[QuadraticFamily(3), QuadraticFamily(5)],
        resample_every=1,
        **_spec_args(num_estimators=4),
    )
    executor = MixtureExecutor(spec, jax.random.PRNGKey(0))
    state = executor.init(jax.random.PRNGKey(1))
    seen = set()
    for step in range(6):
        state, metrics = executor.step(state, step)
        seen.add(tuple(id(f) for f in executor.families()))
    assert len(seen) > 1
    assert executor.programs.built == 2
    assert executor.programs.compiled_programs() == 2
    assert executor._apply._cache_size() == 1
    assert int(metrics["programs_built"]) == 2


def test_max_programs_bounds_the_programs_kept():
    spec = LearnerSpec(
        task_families=[QuadraticFamily(2), QuadraticFamily(3), QuadraticFamily(4)],
        resample_every=1,
        max_programs=2,
        **_spec_args(num_estimators=1),
    )
    executor = MixtureExecutor(spec, jax.random.PRNGKey(0))
    state = executor.init(jax.random.PRNGKey(1))
    for step in range(12):
        state, _ = executor.step(state, step)
        assert len(executor.programs) <= 2
    assert executor.programs.evicted > 0
    assert np.isfinite(jax.tree_util.tree_leaves(state.theta)[0])


def test_weights_combine_the_slots_meta_gradients():
    spec = LearnerSpec(task_family=QuadraticFamily(3), **_spec_args())
    learner = spec.build()
    state = learner.init(jax.random.PRNGKey(0))
    grads = [{"log_lr": jnp.asarray(1.0)}, {"log_lr": jnp.asarray(3.0)}]
    estimates = [GradientEstimate(jnp.asarray(float(i)), g) for i, g in enumerate(grads)]
    _, plain = learner.apply_gradients(state, estimates)
    _, weighted = learner.apply_gradients(state, estimates, jnp.asarray([1.0, 3.0]))
    assert float(plain["meta_loss"]) == pytest.approx(0.5)
    assert float(weighted["meta_loss"]) == pytest.approx(0.75)
    assert float(weighted["grad_norm"]) == pytest.approx(2.5)  # (1*1 + 3*3) / 4
    mixture = FamilyMixture(_three_families()[:2], weights=[1.0, 3.0])
    assert [mixture.weight(f) for f in mixture.families] == [1.0, 3.0]


def test_named_validation_families_are_scored_by_normalized_loss(tmp_path):
    held_out = [QuadraticFamily(6), Quadratic(jnp.ones(2))]
    meta_train(
        tmp_path,
        task_families=_three_families()[:2],
        validation_families=held_out,
        num_steps=2,
        validate_every=2,
        validation_tasks=2,
        **_args(num_estimators=2),
    )
    (row,) = _rows(tmp_path / "validation.jsonl")
    assert set(row) >= {
        "normalized_inner_valid_loss/QuadraticFamily",
        "normalized_inner_valid_loss/Quadratic",
    }
    # The quadratic's normalizer is log(loss): the score is on that scale.
    assert row["normalized_inner_valid_loss"] == pytest.approx(
        np.mean(
            [
                row["normalized_inner_valid_loss/QuadraticFamily"],
                row["normalized_inner_valid_loss/Quadratic"],
            ]
        )
    )


class _Sized(TaskDistribution):
    """Quadratic families of a drawn size: a plugin-style distribution."""

    def sample(self, key):
        return _SIZED[int(host_rng(key).integers(2, 5))]


_SIZED = {n: QuadraticFamily(n) for n in range(2, 5)}


def test_a_distribution_object_drives_the_slots(tmp_path):
    result = meta_train(
        tmp_path, task_distribution=_Sized(), num_steps=4, **_args(resample_every=1)
    )
    assert int(result.state.step) == 4
    rows = _rows(tmp_path / "metrics.jsonl")
    assert all(np.isfinite(r["meta_loss"]) for r in rows)
    assert max(r["distinct_families"] for r in rows) >= 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "exactly one of task_family, task_distribution and task_families; got none"),
        (
            dict(task_family=QuadraticFamily(2), task_families=[QuadraticFamily(2)]),
            "got task_family, task_families",
        ),
        (dict(task_family=QuadraticFamily(2), resample_every=5), "resample_every is for task"),
        (dict(task_families=[]), "at least one TaskFamily"),
        (dict(task_families=[QuadraticFamily]), r"the class QuadraticFamily itself"),
        (dict(task_families=[QuadraticFamily(2)], family_weights=[1, 2]), "one entry per family"),
        (dict(task_families=[QuadraticFamily(2)], family_weights=[-1]), "non-negative"),
        (dict(task_distribution=QuadraticFamily(2)), "task_distribution must be a TaskDistr"),
        (dict(task_families=[QuadraticFamily(2)], resample_every=-1), "resample_every"),
        (dict(task_families=[QuadraticFamily(2)], validation_families=[]), "must not be empty"),
    ],
)
def test_bad_task_sources_fail_with_one_line(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LearnerSpec(learned_optimizer=LOPT, **kwargs)


def test_distributions_run_in_this_process_only(tmp_path):
    with pytest.raises(ValueError, match="runs its slots in this process"):
        meta_train(tmp_path, task_families=_three_families(), num_steps=1, **_args(workers=2))
