"""``tensorboard``: a run's metrics as TensorBoard event files, written with tensorboardX."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lopt_core.metric_writers import MetricWriter

DEFAULT_SUBDIR = "tensorboard"


def _markdown_code(text: str) -> str:
    # TensorBoard renders text as Markdown: indenting every line keeps a config verbatim.
    return "\n".join("    " + line for line in text.splitlines())


class TensorBoardWriter(MetricWriter):
    """Event files in ``log_dir`` (default ``<run folder>/tensorboard``), flushed by
    tensorboardX's own thread every ``flush_secs`` seconds and at the end. A row
    is one event holding all its numbers (tensorboardX's ``FileWriter``; its
    ``SummaryWriter.add_scalar`` would cost an event per number, ~10x more).

    Scalars keep their row names (``outer/meta_loss``, ``validation/...``); the
    operative config and the settings are text (the TEXT tab).
    ``tensorboard --logdir runs`` shows every run under ``runs/``.
    """

    name = "tensorboard"
    install_hint = "pip install 'lopt[tensorboard]' (or: pip install tensorboardX)"

    def __init__(self, log_dir: str | os.PathLike | None = None, flush_secs: int = 10):
        self.log_dir = log_dir
        self.flush_secs = flush_secs
        self.writer: Any = None

    def open(self, run_dir: Path) -> None:
        from tensorboardX import FileWriter
        from tensorboardX.proto.summary_pb2 import Summary

        log_dir = Path(self.log_dir) if self.log_dir is not None else Path(run_dir) / DEFAULT_SUBDIR
        self.writer = FileWriter(logdir=str(log_dir), max_queue=100, flush_secs=self.flush_secs)
        self.summary = Summary
        self.path = log_dir

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        Value = self.summary.Value
        entries = [Value(tag=name, simple_value=value) for name, value in values.items()]
        self.writer.add_summary(self.summary(value=entries), global_step=step)

    def text(self, name: str, text: str) -> None:
        from tensorboardX.summary import text as text_summary

        self.writer.add_summary(text_summary(name, _markdown_code(text)), global_step=0)

    def hparams(self, params: Mapping[str, Any]) -> None:
        table = "| setting | value |\n|---|---|\n" + "\n".join(
            f"| {k} | {v} |" for k, v in params.items()
        )
        self.text("hparams", table)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
