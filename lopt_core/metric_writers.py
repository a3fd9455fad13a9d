"""Metric writers: where a run's numbers go besides ``metrics.jsonl`` (TensorBoard, W&B...).

A ``MetricWriter`` is built from its settings alone (no side effects, so gin
can build it and Ray can pickle it) and opened on a run folder by the run
(``open(run_dir)``). It receives:

- ``scalars(step, values)``: one row of numbers (an outer step's metrics, a
  validation, an inner-training curve point of ``lopt eval``);
- ``text(name, text)``: e.g. the run's operative gin config;
- ``hparams(params)``: the run's settings, as a flat dict.

Writers are plugins (kind ``metric_writer``; ``lopt train --log tensorboard``
or ``meta_train.metric_writers = [@tensorboard()]``). The JSON-lines files
(``metrics.jsonl``, ``validation.jsonl``) are written by the run itself,
always: they are what ``--resume`` and ``lopt eval`` read.

``MetricWriters`` drives several writers for a run: it opens them (a writer
that cannot open, e.g. its package is missing, is reported once with what to
install, and the run goes on with the others), and hands every call to a
background thread, so that a step only pays for putting a row on a queue.
A writer that raises later is reported once and dropped.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["MetricWriter", "MetricWriters", "numeric_values", "writer_label"]


class MetricWriter:
    """A destination for a run's metrics; subclasses override what they support.

    ``name`` labels the writer in messages; ``install_hint`` says what to install
    when its package is missing (e.g. ``pip install 'lopt[tensorboard]'``).
    """

    name = "writer"
    install_hint = ""

    def open(self, run_dir: Path) -> None:
        """Start writing for the run in ``run_dir`` (import the package, create files)."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Record ``values`` (name -> number) at ``step``."""

    def text(self, name: str, text: str) -> None:
        """Record a text, e.g. the operative gin config."""

    def hparams(self, params: Mapping[str, Any]) -> None:
        """Record the run's settings (a flat dict of numbers, strings and booleans)."""

    def flush(self) -> None:
        """Push what was recorded to disk (or to the service)."""

    def close(self) -> None:
        """Flush and release the files; the writer is not used again."""


def writer_label(writer: Any) -> str:
    """The writer's name for messages: its ``name``, else its class name."""
    return str(getattr(writer, "name", None) or type(writer).__name__)


def numeric_values(row: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of ``row`` (booleans as 0/1, None as NaN) under ``prefix``; others dropped."""
    out = {}
    for key, value in row.items():
        if value is None:
            value = math.nan
        if isinstance(value, (bool, int, float)) or hasattr(value, "__float__"):
            try:
                out[prefix + key] = float(value)
            except (TypeError, ValueError):
                continue
    return out


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


_STOP = object()


class MetricWriters:
    """Several writers for one run, fed from a background thread.

    ``writers``: ``MetricWriter`` objects, or callables with no arguments
    returning one (a gin configurable, a class). ``say`` prints a line (the
    progress bar's ``write``). With ``background=False`` every call runs in the
    caller's thread (for tests and benchmarks). Usable as a context manager;
    ``close()`` waits for every queued call to be written.
    """

    def __init__(
        self,
        writers: Iterable[Any] = (),
        run_dir: str | os.PathLike | None = None,
        say: Callable[[str], None] = _stderr,
        background: bool = True,
    ):
        self.say = say
        self.run_dir = Path(run_dir) if run_dir is not None else Path.cwd()
        self.failed: dict[str, str] = {}  # label -> the message reported
        self.writers: list[MetricWriter] = []
        for item in writers:
            self._open(item)
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if background and self.writers:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._drain, name="lopt-metric-writers")
            self._thread.daemon = True
            self._thread.start()

    def __bool__(self) -> bool:
        return bool(self.writers)

    def __enter__(self) -> MetricWriters:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ opening and failures

    def _open(self, item: Any) -> None:
        label = writer_label(item)
        try:
            writer = item if isinstance(item, MetricWriter) else item()
            label = writer_label(writer)
            if not callable(getattr(writer, "scalars", None)):
                raise TypeError(f"{type(writer).__name__} is not a MetricWriter")
            writer.open(self.run_dir)
        except Exception as e:  # a missing package, a folder that cannot be written...
            self._report(label, "cannot start", e, getattr(item, "install_hint", ""))
            return
        self.writers.append(writer)

    def _report(self, label: str, what: str, error: BaseException, hint: str = "") -> None:
        if label in self.failed:
            return
        fix = f" Install it: {hint}." if hint and isinstance(error, ImportError) else ""
        message = (
            f"lopt: metric writer '{label}' {what} and is off for this run: "
            f"{type(error).__name__}: {error}.{fix} The run goes on with the other writers "
            "(metrics.jsonl is always written)."
        )
        self.failed[label] = message
        self.say(message)

    # ------------------------------------------------------------ calls

    def scalars(self, step: int, values: Mapping[str, Any], prefix: str = "") -> None:
        """Every writer records the numbers of ``values`` (under ``prefix``) at ``step``."""
        if self.writers:
            self._call("scalars", int(step), numeric_values(values, prefix))

    def row(self, row: Mapping[str, Any], prefix: str = "") -> None:
        """``scalars`` of a row that holds its own ``step`` (a ``metrics.jsonl`` row)."""
        if self.writers:
            self.scalars(row["step"], {k: v for k, v in row.items() if k != "step"}, prefix)

    def row_callback(
        self, prefix: str = "", then: Callable[[dict[str, Any]], None] | None = None
    ) -> Callable[[dict[str, Any]], None]:
        """A function of a row that hands it to ``row`` and then to ``then`` (if any)."""

        def see(row: dict[str, Any]) -> None:
            self.row(row, prefix)
            if then is not None:
                then(row)

        return see

    def text(self, name: str, text: str) -> None:
        """Every writer records ``text`` under ``name``."""
        if self.writers:
            self._call("text", name, text)

    def hparams(self, params: Mapping[str, Any]) -> None:
        """Every writer records the settings ``params``."""
        if self.writers:
            self._call("hparams", dict(params))

    def _call(self, method: str, *args: Any) -> None:
        if self._queue is not None:
            self._queue.put((method, args))
        else:
            self._run(method, args)

    def _run(self, method: str, args: tuple) -> None:
        for writer in list(self.writers):
            try:
                getattr(writer, method)(*args)
            except Exception as e:
                self.writers.remove(writer)
                self._report(writer_label(writer), f"failed in {method}()", e)

    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._run(*item)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued call is done, then flush every writer."""
        if self._queue is not None:
            self._queue.join()
        self._run("flush", ())

    def close(self) -> None:
        """Write what is queued, then close every writer (idempotent)."""
        if self._thread is not None:
            assert self._queue is not None
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = self._queue = None
        self._run("close", ())
        self.writers = []
