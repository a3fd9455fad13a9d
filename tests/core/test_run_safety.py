"""A run's folder survives what happens to runs: dead runs, torn files, runs that cannot learn.

(Stops by signal, in real processes: tests/integration/test_fault_injection.py.)
"""

from __future__ import annotations

import io
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_same_theta, metric_rows
from lopt_core import TaskFamily, meta_train
from lopt_core.outer import LearnerSpec, LocalExecutor, RunLoop, RunSettings
from lopt_core.outer.metrics_log import MetricsLog
from lopt_core.outer.run_dir import dumps_row, read_rows
from toys import Quadratic, QuadraticFamily, RegressionFamily, build_args


def _run(path, family, steps, **kw):
    kw.setdefault("progress", False)
    return meta_train(path, **build_args(family), num_steps=steps, **kw)


def test_a_fresh_run_checkpoints_at_step_0(tmp_path):
    spec = LearnerSpec(**build_args(QuadraticFamily(3)))
    loop = RunLoop(LocalExecutor(spec.build(), jax.random.PRNGKey(0)), tmp_path, RunSettings())
    state = loop.start(None)
    assert int(state.step) == 0
    assert (tmp_path / "checkpoints" / "latest.msgpack").is_file()
    assert loop.checkpointed_step == 0


def test_rows_left_by_a_run_without_checkpoint_are_moved_aside(tmp_path):
    # What a run killed before it saved anything (with an older lopt) leaves behind.
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "meta_loss": 1.0}\n' * 3)
    with pytest.warns(UserWarning, match="earlier run that saved no checkpoint"):
        _run(tmp_path, QuadraticFamily(3), 2)
    assert [r["step"] for r in metric_rows(tmp_path)] == [1, 2]
    assert (tmp_path / "metrics.jsonl.stale").read_text().count("\n") == 3


def test_a_torn_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    full = _run(tmp_path / "full", RegressionFamily(), 6, checkpoint_every=2)
    cut = tmp_path / "cut"
    _run(cut, RegressionFamily(), 4, checkpoint_every=2)  # latest: step 4, previous: step 2
    latest = cut / "checkpoints" / "latest.msgpack"
    latest.write_bytes(latest.read_bytes()[:100])  # power loss mid-write, on a disk that lied
    with open(cut / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "meta_lo')  # and a row cut short
    with pytest.warns(UserWarning) as caught:
        resumed = _run(cut, RegressionFamily(), 6, checkpoint_every=2, resume=True)
    messages = "\n".join(str(w.message) for w in caught)
    assert f"{latest} cannot be used" in messages and "truncated or corrupt" in messages
    assert "previous.msgpack" in messages
    assert_same_theta(full.state.theta, resumed.state.theta)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]
    assert strip(metric_rows(cut)) == strip(metric_rows(tmp_path / "full"))


def test_a_torn_checkpoint_with_no_fallback_names_the_file(tmp_path):
    from lopt_core.outer.checkpoints import UnreadableCheckpointError

    _run(tmp_path, QuadraticFamily(3), 2)
    for name in ("latest.msgpack", "previous.msgpack"):
        path = tmp_path / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:50])
    with pytest.warns(UserWarning, match="resuming from the checkpoint before it"):
        with pytest.raises(UnreadableCheckpointError) as error:
            _run(tmp_path, QuadraticFamily(3), 4, resume=True)
    message = str(error.value)
    assert "latest.msgpack is unreadable" in message and "previous.msgpack is unreadable" in message
    assert "start it again in a new --output-dir" in message


def test_rows_are_strict_json_and_read_back():
    line = dumps_row({"step": 3, "meta_loss": math.nan, "grad_norm": math.inf, "x": 1.5})
    assert json.loads(line) == {"step": 3, "meta_loss": None, "grad_norm": None, "x": 1.5}
    assert "NaN" not in line and "Infinity" not in line


def test_read_rows_drops_only_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "a": null}\n{"step": 2, "a": 2.0}\n{"step": 3, "a"')
    with pytest.warns(UserWarning, match="last line is cut short"):
        rows = read_rows(path)
    assert [r["step"] for r in rows] == [1, 2] and math.isnan(rows[0]["a"])
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(ValueError, match="m.jsonl:2: not a JSON row"):
        read_rows(path)


def _feed(log, rows):
    for step, (loss, norm) in enumerate(rows, 1):
        log.add(step, {"meta_loss": np.float32(loss), "grad_norm": np.float32(norm)})
    log.flush()


def test_metrics_log_says_once_that_theta_does_not_move():
    said = []
    log = MetricsLog(io.StringIO(), said.append, window=3)
    _feed(log, [(1.0, 0.0)] * 7)
    assert len([s for s in said if "exactly zero for 3 steps" in s]) == 1
    assert not log.stuck


def test_metrics_log_reports_skipped_updates_and_a_stuck_run():
    said = []
    file = io.StringIO()
    log = MetricsLog(file, said.append, window=3)
    _feed(log, [(math.nan, math.nan)] * 4)
    assert log.stuck and log.updates_skipped == 4
    assert sum("were all skipped" in s for s in said) == 1
    assert sum("the update was skipped" in s for s in said) == 1  # not one line per step
    assert all(json.loads(line)["meta_loss"] is None for line in file.getvalue().splitlines())
    assert log.postfix()["skipped"] == "4"


class NaNFamily(TaskFamily):
    """Tasks whose loss is NaN at every step: no update can ever be applied."""

    def sample(self, key):
        return {"target": jax.random.normal(key, (3,))}

    def task_fn(self, cfg):
        task = Quadratic(cfg["target"])
        task.loss = lambda params, key, batch: jnp.sum(params) * jnp.nan
        return task


def test_a_run_where_no_update_applies_is_stuck(tmp_path):
    result = _run(tmp_path, NaNFamily(), 3)
    assert result.stuck
    assert all(r["meta_loss"] is None for r in metric_rows(tmp_path))  # null: strict JSON


def test_strict_json_reaches_every_depth():
    from lopt_core.files import strict_json

    report = {"a": [1.0, math.inf, {"b": -math.inf, "c": (math.nan, 2)}], "d": "x"}
    assert strict_json(report) == {"a": [1.0, None, {"b": None, "c": [None, 2]}], "d": "x"}
    json.dumps(strict_json(report), allow_nan=False)  # no NaN or Infinity left
