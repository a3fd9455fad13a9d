"""Every mistake a user plausibly makes ends as one `lopt: error: ...` message, exit status 1.

The traceback shows only with --traceback (or LOPT_DEBUG=1).
"""

from __future__ import annotations

import pytest

from lopt_core.cli import main
from toys import write_tiny_gin


def _error(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 1
    err = capsys.readouterr().err
    assert err.startswith("lopt: error: "), err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 4, err
    return err


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_gin(
        tmp_path / "tiny.gin", "meta_train.num_steps = 2", "meta_train.checkpoint_every = 2"
    )


def _train(config, out, *more):
    return ["train", str(config), "-o", str(out), "--no-progress", *more]


def test_training_twice_into_a_finished_run(capsys, tiny, tmp_path):
    assert main(_train(tiny, tmp_path / "run")) == 0
    err = _error(capsys, *_train(tiny, tmp_path / "run"))
    assert "already holds a run" in err and "--resume" in err


@pytest.mark.parametrize(
    "binding, message",
    [
        ('meta_train.num_tasks = "8"', "num_tasks must be a positive integer, got '8'"),
        (
            'meta_train.outer_learning_rate = "3e-3"',
            "outer_learning_rate must be a positive number, got '3e-3'",
        ),
        ("meta_train.num_steps = 0", "num_steps must be a positive integer, got 0"),
        ("meta_train.checkpoint_every = -1", "checkpoint_every must be a positive integer, got -1"),
    ],
)
def test_bad_values_in_bindings(capsys, tiny, tmp_path, binding, message):
    err = _error(capsys, *_train(tiny, tmp_path / "run", "-p", binding))
    assert message in err
    assert "In call to configurable" not in err  # gin's context is folded into a prefix


def test_negative_workers(capsys, tiny, tmp_path):
    err = _error(capsys, *_train(tiny, tmp_path / "run", "--workers", "-1"))
    assert "workers must be an integer >= 0, got -1" in err


def test_a_dataset_whose_files_are_missing(capsys, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path / "nowhere"))
    config = tmp_path / "mnist.gin"
    config.write_text(
        tiny.read_text().replace("@FixedDimQuadraticFamily()", "@ImageMLPDataFamily()")
        + "ImageMLPDataFamily.dataset = 'mnist'\n"
    )
    err = _error(capsys, *_train(config, tmp_path / "run"))
    assert "mnist" in err and "searched" in err and "LOPT_DATA_DIR" in err


def test_eval_of_a_folder_that_is_not_a_run(capsys, tmp_path):
    err = _error(capsys, "eval", str(tmp_path), "--no-progress")
    assert "is not a lopt run folder" in err


def test_eval_of_a_run_without_checkpoint(capsys, tiny, tmp_path):
    run = tmp_path / "run"
    assert main(_train(tiny, run)) == 0
    for name in ("latest.msgpack", "previous.msgpack"):
        (run / "checkpoints" / name).unlink()
    err = _error(capsys, "eval", str(run), "--no-progress", "--checkpoint", "latest")
    assert "No checkpoint at" in err


@pytest.mark.parametrize("steps", ["-3", "0"])
def test_eval_steps_must_be_positive(capsys, tiny, tmp_path, steps):
    run = tmp_path / "run"
    assert main(_train(tiny, run)) == 0
    err = _error(capsys, "eval", str(run), "--steps", steps, "--no-progress")
    assert f"--steps (the horizon to report at) must be a positive integer, got {steps}" in err


def test_a_task_where_a_family_belongs_is_the_family_of_its_seeds(capsys, tiny, tmp_path):
    config = tmp_path / "task.gin"
    config.write_text(
        tiny.read_text().replace("@FixedDimQuadraticFamily()", "@QuadraticTask()")
        + "QuadraticTask.dim = 3\n"
    )
    assert main(_train(config, tmp_path / "run")) == 0


def test_a_class_given_without_parentheses(capsys, tiny, tmp_path):
    config = tmp_path / "class.gin"
    config.write_text(
        tiny.read_text().replace("@FixedDimQuadraticFamily()", "@FixedDimQuadraticFamily")
    )
    err = _error(capsys, *_train(config, tmp_path / "run"))
    assert "the class FixedDimQuadraticFamily itself" in err and "@FixedDimQuadraticFamily()" in err


def test_a_config_that_only_configures_train(capsys, tmp_path):
    config = tmp_path / "train_only.gin"
    config.write_text("train.optimizer = @SGD()\nSGD.learning_rate = 0.1\ntrain.num_steps = 3\n")
    err = _error(capsys, *_train(config, tmp_path / "run"))
    assert "binds no meta_train.task_family and no meta_train.learned_optimizer" in err


def test_an_unknown_recipe_name(capsys, tmp_path):
    err = _error(capsys, "train", "quikstart", "-o", str(tmp_path / "run"))
    assert "Did you mean quickstart" in err


def test_traceback_on_request(capsys, tiny, tmp_path):
    capsys.readouterr()
    assert (
        main(["--traceback", *_train(tiny, tmp_path / "run", "-p", "meta_train.num_steps = 0")])
        == 1
    )
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "lopt: error: " in err
