"""The `lopt train` and `lopt eval` commands, end to end on a tiny config of built-in plugins.

(`lopt train --ray` is tested with the Ray backend, in tests/distributed.)
"""

from __future__ import annotations

import json

from toys import write_tiny_gin


def test_lopt_train_cli_writes_a_resumable_run(tmp_path, monkeypatch, capsys):
    from lopt_core.cli import main

    config = write_tiny_gin(
        tmp_path / "tiny.gin", "meta_train.num_steps = 4", "meta_train.checkpoint_every = 2"
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
    assert main(["train", str(config), "-o", str(out), "--no-progress"]) == 1
    assert "--resume" in capsys.readouterr().err


def test_lopt_eval_end_to_end_on_a_tiny_run(tmp_path, capsys):
    from lopt_core.cli import main

    config = write_tiny_gin(
        tmp_path / "tiny.gin",
        "LearnableSGD.initial_lr = 0.05",
        "meta_train.num_steps = 4",
        "meta_train.validate_every = 2",
        "meta_train.validation_tasks = 2",
        length=10,
        trunc_length=5,
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
    assert main(["eval", str(tmp_path)]) == 1
    assert "not a lopt run folder" in capsys.readouterr().err
