"""meta_train: resume equals an uninterrupted run, checkpoints and validation.

(`lopt train` is tested in tests/cli/test_commands.py.)
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from helpers import assert_same_theta
from lopt_core import meta_train
from lopt_core.outer.checkpoints import load_checkpoint
from toys import RegressionFamily, ToyLearnableAdam, ToyLearnableSGD, build_args


def _run(output_dir, family, num_steps, **kwargs):
    lopt = kwargs.pop("lopt", None) or _LOPT
    args = build_args(family, lopt)
    return meta_train(output_dir, **args, num_steps=num_steps, progress=False, **kwargs)


_LOPT = ToyLearnableAdam(initial_lr=0.01)


def test_resume_equals_uninterrupted_run_on_data_with_validation(tmp_path):
    kw = dict(checkpoint_every=4, validate_every=3, validation_tasks=2)
    full = _run(tmp_path / "full", RegressionFamily(), 10, **kw)
    _run(tmp_path / "split", RegressionFamily(), 5, **kw)
    resumed = _run(tmp_path / "split", RegressionFamily(), 10, resume=True, **kw)

    assert int(resumed.state.step) == int(full.state.step) == 10
    assert_same_theta(full.state.theta, resumed.state.theta)
    full_rows = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    split_rows = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in split_rows] == list(range(1, 11))
    assert [json.loads(r)["meta_loss"] for r in split_rows] == [
        json.loads(r)["meta_loss"] for r in full_rows
    ]
    # The theta really moved: meta-training did something to be resumed.
    initial = _LOPT.init(jax.random.PRNGKey(0))
    assert not np.allclose(full.state.theta["log_lr"], initial["log_lr"])


def test_best_checkpoint_holds_the_lowest_validation_score(tmp_path):
    result = _run(
        tmp_path, RegressionFamily(), 8, checkpoint_every=100, validate_every=2, validation_tasks=2
    )
    rows = [json.loads(r) for r in (tmp_path / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    best_row = min(rows, key=lambda r: r["inner_valid_loss"])
    best, header = load_checkpoint(tmp_path / "checkpoints" / "best.msgpack", result.state)
    assert header["step"] == best_row["step"] == int(best.step)
    assert header["validation_score"] == pytest.approx(best_row["inner_valid_loss"])
    assert [r["best"] for r in rows].count(True) >= 1


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run(tmp_path):
    full = _run(tmp_path / "full", RegressionFamily(), 6, checkpoint_every=100)

    class InterruptingFamily(RegressionFamily):
        """Raises KeyboardInterrupt (as Ctrl-C would) when the 4th truncation's data is drawn."""

        def __init__(self):
            super().__init__()
            train = self.datasets.train
            draws = iter(range(10**9))

            def interrupting():
                while True:
                    if next(draws) == 3 * 2 * 3:  # 3 outer steps x 2 tasks x 3 steps
                        raise KeyboardInterrupt
                    yield next(train)

            self.datasets.train = interrupting()

    interrupted = _run(tmp_path / "cut", InterruptingFamily(), 6, checkpoint_every=100)
    assert interrupted.interrupted
    assert int(interrupted.state.step) == 3
    _, header = load_checkpoint(tmp_path / "cut" / "checkpoints" / "latest.msgpack", full.state)
    assert header["step"] == 3
    resumed = _run(tmp_path / "cut", RegressionFamily(), 6, checkpoint_every=100, resume=True)
    assert_same_theta(full.state.theta, resumed.state.theta)


def test_output_dir_guards(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _run(tmp_path, RegressionFamily(), 2, resume=True)
    _run(tmp_path, RegressionFamily(), 2)
    with pytest.raises(FileExistsError, match="--resume"):
        _run(tmp_path, RegressionFamily(), 2)
    with pytest.raises(ValueError, match="validate_every"):
        _run(tmp_path / "other", RegressionFamily(), 2, validate_every=-1)


def test_resume_with_another_config_is_refused(tmp_path):
    _run(tmp_path, RegressionFamily(), 2)
    with pytest.raises(ValueError, match="does not match|expects"):
        _run(tmp_path, RegressionFamily(), 4, resume=True, lopt=ToyLearnableSGD())


def test_the_old_import_path_is_the_same_function():
    import lopt_core.outer
    from lopt_core.outer.meta_train import meta_train as old

    assert old is lopt_core.meta_train
    assert lopt_core.outer.meta_train.meta_train is old  # the module keeps its name


def test_every_meta_train_parameter_belongs_to_one_settings_object():
    import dataclasses
    import inspect

    from lopt_core.outer import LearnerSpec, RunSettings, WorkerSettings

    owners = {}
    for cls in (LearnerSpec, RunSettings, WorkerSettings):
        for field in dataclasses.fields(cls):
            assert field.name not in owners, f"{field.name} in {owners.get(field.name)} and {cls}"
            owners[field.name] = cls
    params = set(inspect.signature(meta_train).parameters)
    run_only = {"output_dir", "resume", "progress", "on_start"}
    assert params - run_only == set(owners)
