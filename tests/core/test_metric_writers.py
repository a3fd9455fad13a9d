"""Metric writers (lopt_core.metric_writers): fed off the hot path, failures reported once,
and a run hands them every metrics and validation row, its settings and its config."""

from __future__ import annotations

import threading

from lopt_core import meta_train
from lopt_core.metric_writers import MetricWriter, MetricWriters
from toys import QuadraticFamily, build_args


class Recorder(MetricWriter):
    name = "recorder"

    def __init__(self):
        self.calls, self.threads, self.opened, self.closed = [], set(), None, False

    def open(self, run_dir):
        self.opened = run_dir

    def scalars(self, step, values):
        self.threads.add(threading.current_thread().name)
        self.calls.append(("scalars", step, dict(values)))

    def text(self, name, text):
        self.calls.append(("text", name, text))

    def hparams(self, params):
        self.calls.append(("hparams", dict(params)))

    def close(self):
        self.closed = True


class Missing(MetricWriter):
    name = "missing"
    install_hint = "pip install 'lopt[missing]'"

    def open(self, run_dir):
        import lopt_no_such_package  # noqa: F401


class Breaks(Recorder):
    name = "breaks"

    def scalars(self, step, values):
        raise OSError("disk full")


def test_rows_reach_every_writer_from_a_background_thread(tmp_path):
    recorder = Recorder()
    with MetricWriters([recorder], tmp_path) as writers:
        writers.row({"step": 3, "meta_loss": 0.5, "best": True, "note": "x", "gone": None})
        writers.scalars(4, {"a": 1}, prefix="p/")
    assert recorder.opened == tmp_path and recorder.closed
    step, values = recorder.calls[0][1:]
    assert step == 3 and values["meta_loss"] == 0.5 and values["best"] == 1.0
    assert "note" not in values and values["gone"] != values["gone"]  # None -> NaN
    assert recorder.calls[1] == ("scalars", 4, {"p/a": 1.0})
    assert recorder.threads == {"lopt-metric-writers"}


def test_a_failing_writer_is_reported_once_and_the_others_go_on(tmp_path):
    said, recorder = [], Recorder()
    with MetricWriters([Missing(), Breaks(), recorder], tmp_path, said.append) as writers:
        for step in range(3):
            writers.scalars(step, {"x": step})
    assert [c[1] for c in recorder.calls] == [0, 1, 2]
    assert len(said) == 2
    assert "'missing' cannot start" in said[0] and "pip install 'lopt[missing]'" in said[0]
    assert "ModuleNotFoundError" in said[0] and "goes on" in said[0]
    assert "'breaks' failed in scalars()" in said[1] and "disk full" in said[1]


def test_a_run_logs_rows_validation_settings_and_config(tmp_path):
    recorder = Recorder()
    (tmp_path / "operative_config.gin").write_text("meta_train.num_steps = 4\n")
    # A folder with a config but no checkpoint is a new run: meta_train may start there.
    meta_train(
        tmp_path,
        **build_args(QuadraticFamily(3)),
        num_steps=4,
        validate_every=2,
        validation_tasks=2,
        progress=False,
        metric_writers=[lambda: recorder],
    )
    scalars = [c for c in recorder.calls if c[0] == "scalars"]
    outer = [(s, v) for _, s, v in scalars if "outer/meta_loss" in v]
    assert [s for s, _ in outer] == [1, 2, 3, 4]
    assert {"outer/grad_norm", "outer/wall_s"} <= set(outer[0][1])
    validation = [s for _, s, v in scalars if "validation/inner_valid_loss" in v]
    assert validation == [2, 4]
    hparams = next(c[1] for c in recorder.calls if c[0] == "hparams")
    assert hparams["num_steps"] == 4 and hparams["learned_optimizer"]
    assert ("text", "operative_config", "meta_train.num_steps = 4\n") in recorder.calls
    assert recorder.closed
