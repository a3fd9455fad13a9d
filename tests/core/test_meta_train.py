"""meta_train: resume equals an uninterrupted run, checkpoints, validation and `lopt train`."""

from __future__ import annotations

import functools
import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt_core import Datasets, Task, TaskFamily
from lopt_core.outer import ConstantTruncationSchedule, TruncatedPES
from lopt_core.outer.checkpoints import load_checkpoint
from lopt_core.outer.meta_train import meta_train
from lopt_plugins.learned_optimizers import LearnableAdam


def _regression_datasets(seed: int = 0) -> Datasets:
    """Fresh iterators of a tiny linear regression problem (one per split)."""
    w_true = np.linspace(-1, 1, 4).astype(np.float32)

    def batches(split_seed):
        rng = np.random.default_rng(split_seed)
        while True:
            x = rng.normal(size=(8, 4)).astype(np.float32)
            yield {"x": x, "y": x @ w_true + 0.1 * rng.normal(size=8).astype(np.float32)}

    return Datasets(*(batches(seed * 10 + i) for i in range(4)))


class _Regression(Task):
    def __init__(self, scale, datasets):
        self.scale, self.datasets = scale, datasets

    def init(self, key):
        return jax.random.normal(key, (4,))

    def loss(self, params, key, batch):
        return self.scale * jnp.mean((batch["x"] @ params - batch["y"]) ** 2)

    def normalizer(self, loss):
        return jnp.log(loss + 1e-6)


class RegressionFamily(TaskFamily):
    """Linear regressions whose loss scale is sampled: a data-backed family."""

    def __init__(self):
        self.datasets = _regression_datasets()

    def sample(self, key):
        return jax.random.uniform(key, (), minval=0.5, maxval=2.0)

    def task_fn(self, cfg):
        return _Regression(cfg, self.datasets)


def _run(output_dir, family, num_steps, **kwargs):
    return meta_train(
        output_dir,
        family,
        kwargs.pop("lopt", None) or _LOPT,
        gradient_estimator=functools.partial(TruncatedPES, trunc_length=3, std=0.05),
        truncation_schedule=ConstantTruncationSchedule(7),
        num_tasks=2,
        random_initial_iteration_offset=7,
        outer_learning_rate=0.05,
        num_steps=num_steps,
        progress=False,
        **kwargs,
    )


_LOPT = LearnableAdam(initial_lr=0.01)


def _assert_same_theta(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_resume_equals_uninterrupted_run_on_data_with_validation(tmp_path):
    kw = dict(checkpoint_every=4, validate_every=3, validation_tasks=2)
    full = _run(tmp_path / "full", RegressionFamily(), 10, **kw)
    _run(tmp_path / "split", RegressionFamily(), 5, **kw)
    resumed = _run(tmp_path / "split", RegressionFamily(), 10, resume=True, **kw)

    assert int(resumed.state.step) == int(full.state.step) == 10
    _assert_same_theta(full.state.theta, resumed.state.theta)
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
    _assert_same_theta(full.state.theta, resumed.state.theta)


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
    from lopt_plugins.learned_optimizers import LearnableSGD

    with pytest.raises(ValueError, match="does not match|expects"):
        _run(tmp_path, RegressionFamily(), 4, resume=True, lopt=LearnableSGD())


def test_lopt_train_cli_writes_a_resumable_run(tmp_path, monkeypatch):
    from lopt_core.cli import main

    config = tmp_path / "tiny.gin"
    config.write_text(
        textwrap.dedent(
            """
            meta_train.task_family = @FixedDimQuadraticFamily()
            FixedDimQuadraticFamily.dim = 3
            meta_train.learned_optimizer = @LearnableSGD()
            meta_train.truncation_schedule = @ConstantTruncationSchedule()
            ConstantTruncationSchedule.length = 6
            meta_train.gradient_estimator = @TruncatedPES
            TruncatedPES.trunc_length = 3
            meta_train.num_tasks = 2
            meta_train.num_steps = 4
            meta_train.checkpoint_every = 2
            """
        )
    )
    out = tmp_path / "run"
    assert main(["train", str(config), "-o", str(out), "--no-progress"]) == 0
    assert (out / "checkpoints" / "latest.msgpack").is_file()
    assert "meta_train.num_steps = 4" in (out / "operative_config.gin").read_text()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    # Continue the run further from its checkpoint with a command-line override.
    args = ["train", str(config), "-o", str(out), "--resume", "--no-progress"]
    assert main(args + ["-p", "meta_train.num_steps = 6"]) == 0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    # Starting over in the same folder without --resume is refused, with advice.
    with pytest.raises(FileExistsError, match="--resume"):
        main(["train", str(config), "-o", str(out), "--no-progress"])
