"""`lopt train --log ...` and `lopt eval --log ...`: metric writers from the command line
and from gin, together; a misspelt writer is an error that names the installed ones."""

from __future__ import annotations

import pytest

from helpers import tensorboard_events
from toys import write_tiny_gin


def _tags(log_dir):
    return {(v.tag, e.step) for e in tensorboard_events(log_dir) for v in e.summary.value}


def test_train_and_eval_log_to_tensorboard_and_wandb(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboardX")
    pytest.importorskip("wandb")
    from lopt_core.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    config = write_tiny_gin(
        tmp_path / "tiny.gin",
        "meta_train.num_steps = 4",
        "meta_train.validate_every = 2",
        "meta_train.validation_tasks = 2",
        # A writer bound in gin, with its own parameter; --log adds the others.
        "meta_train.metric_writers = [@tensorboard()]",
        f"tensorboard.log_dir = '{tmp_path / 'tb'}'",
        length=10,
        trunc_length=5,
    )
    run = tmp_path / "run"
    argv = ["train", str(config), "-o", str(run), "--no-progress", "--log", "wandb"]
    assert main(argv + ["--log", "jsonl", "--log", "tensorboard"]) == 0
    tags = _tags(tmp_path / "tb")
    assert {("outer/meta_loss", s) for s in (1, 2, 3, 4)} <= tags
    assert {("validation/inner_valid_loss", 2), ("validation/best", 4)} <= tags
    assert ("operative_config/text_summary", 0) in tags
    assert len(list((run / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    assert not (run / "tensorboard").exists()  # one tensorboard writer: gin's, in tb/

    capsys.readouterr()
    assert main(["eval", str(run), "--seeds", "2", "--no-progress", "--log", "tensorboard"]) == 0
    tags = _tags(run / "tensorboard")
    target = "eval/FixedDimQuadraticFamily_Dim3_held-out_tasks"
    assert (f"{target}/LearnableSGD/train_loss", 19) in tags
    assert (f"{target}/Adam_lr_1e-3/test_loss", 20) in tags


def test_an_unknown_writer_names_the_installed_ones(tmp_path, capsys):
    from lopt_core.cli import main

    config = write_tiny_gin(tmp_path / "tiny.gin", "meta_train.num_steps = 1")
    argv = ["train", str(config), "-o", str(tmp_path / "run"), "--log", "tensorbord"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("lopt: error: --log tensorbord: there is no metric writer")
    assert "Did you mean tensorboard?" in err and "jsonl, tensorboard, wandb" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_writers_are_built_with_their_gin_parameters_and_pickle_for_ray():
    import pickle

    from lopt_core.commands.train import metric_writers_for
    from lopt_core.gin_config import parse_config

    parse_config(
        bindings=[
            "meta_train.metric_writers = [@tensorboard()]",
            "tensorboard.flush_secs = 3",
            "wandb.project = 'mine'",
        ]
    )
    writers = metric_writers_for(["wandb", "tensorboard", "jsonl"])  # tensorboard: once
    assert [(w.name, getattr(w, "flush_secs", None)) for w in writers] == [
        ("tensorboard", 3),
        ("wandb", None),
    ]
    assert pickle.loads(pickle.dumps(writers))[1].project == "mine"
