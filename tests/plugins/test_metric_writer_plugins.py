"""The ``tensorboard`` and ``wandb`` metric writers, read back with their own formats.

TensorBoard: the event file's records parsed with tensorboardX's own ``Event``
protobuf. W&B runs offline (``WANDB_MODE=offline``, no network): the run's
``.wandb`` file is read back record by record with W&B's own ``Record`` protobuf.
"""

from __future__ import annotations

import sys

import pytest

from helpers import tensorboard_events, wandb_records
from lopt_core.metric_writers import MetricWriters
from lopt_plugins.metric_writers import TensorBoardWriter, WandbWriter


def test_tensorboard_event_file_reads_back(tmp_path):
    pytest.importorskip("tensorboardX")
    with MetricWriters([TensorBoardWriter()], tmp_path) as writers:
        writers.hparams({"num_steps": 3, "learned_optimizer": "MLPLOpt"})
        writers.text("operative_config", "meta_train.num_steps = 3")
        for step in (1, 2, 3):
            writers.row({"step": step, "meta_loss": 1.0 / step}, prefix="outer/")
    events = tensorboard_events(tmp_path / "tensorboard")
    scalars = [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value]
    losses = [(s, round(x, 6)) for s, tag, x in scalars if tag == "outer/meta_loss"]
    assert losses == [(1, 1.0), (2, 0.5), (3, round(1 / 3, 6))]
    texts = {
        v.tag: v.tensor.string_val[0].decode()
        for e in events
        for v in e.summary.value
        if v.tensor.string_val
    }
    assert "meta_train.num_steps = 3" in texts["operative_config/text_summary"]
    assert "| learned_optimizer | MLPLOpt |" in texts["hparams/text_summary"]


def test_wandb_offline_run_reads_back(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    with MetricWriters([WandbWriter(project="lopt-test")], tmp_path / "myrun") as writers:
        writers.hparams({"num_steps": 2})
        writers.text("operative_config", "meta_train.num_steps = 2")
        writers.row({"step": 1, "meta_loss": 0.5}, prefix="outer/")
        writers.row({"step": 2, "meta_loss": 0.25}, prefix="outer/")
        writers.row({"step": 2, "inner_valid_loss": 0.75}, prefix="validation/")
    (run_file,) = (tmp_path / "myrun" / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    history = [
        {item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [(h["outer/step"], h["outer/meta_loss"]) for h in history[:2]] == [
        ("1", "0.5"),
        ("2", "0.25"),
    ]
    assert history[2]["validation/step"] == "2" and history[2]["validation/inner_valid_loss"]
    config = {
        item.key or "/".join(item.nested_key): item.value_json
        for r in records
        if r.WhichOneof("record_type") == "config"
        for item in r.config.update
    }
    assert config["num_steps"] == "2" and "meta_train.num_steps = 2" in config["operative_config"]
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == "myrun" and run.project == "lopt-test"


def test_a_bad_folder_or_a_missing_package_is_reported_and_the_run_goes_on(tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if W&B were not installed
    said = []
    good = TensorBoardWriter(log_dir=tmp_path / "tb")
    bad = TensorBoardWriter(log_dir=blocker / "tb")
    with MetricWriters([bad, WandbWriter(), good], tmp_path, said.append) as writers:
        writers.scalars(1, {"outer/meta_loss": 0.5})
    assert len(said) == 2
    assert "'tensorboard' cannot start" in said[0] and "a_file" in said[0]
    assert "'wandb' cannot start" in said[1] and "pip install 'lopt[wandb]'" in said[1]
    events = tensorboard_events(tmp_path / "tb")
    assert [v.simple_value for e in events for v in e.summary.value] == [0.5]
