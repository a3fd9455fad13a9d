"""A run's ``metrics.jsonl``: one row per outer step, and what the rows say about its health.

Each outer step's metrics stay on the device until the next step has been
dispatched (so the host never waits for the device), then become a row:

- ``step``: outer steps done; ``wall_s``: seconds since this process started the loop;
- ``meta_loss``: the mean meta-loss of the step's estimates (``null`` if not finite);
- ``grad_norm``: the global norm of the averaged meta-gradient, before clipping;
- ``nonfinite_skipped``: updates skipped so far for a non-finite meta-gradient or loss;
- the estimators' own metrics (averaged over estimators): ``train_loss`` (mean
  finite inner training loss of the unroll), ``restarts`` (inner problems
  restarted in the unroll; PES and truncated backprop) and ``nonfinite_losses``
  (non-finite inner losses in the unroll);
- with workers: ``staleness``, ``stale_dropped``, ``worker_failures``, ``worker_rebuilds``.

Numbers that are not finite are written as ``null`` (strict JSON).
``MetricsLog`` also watches for a run that cannot learn: a meta-gradient that
stays exactly zero (theta never moves) or updates that are all skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import IO, Any

import jax

from lopt_core.outer.run_dir import dumps_row

# Consecutive steps of a zero meta-gradient, or of skipped updates, before the run says so.
STUCK_WINDOW = 20


class MetricsLog:
    """Writes metrics rows to ``file`` one step late, and reports a run that cannot learn.

    ``say`` prints a line (the progress bar's ``write``); ``on_row`` sees each row.
    """

    def __init__(
        self,
        file: IO[str],
        say: Callable[[str], None],
        on_row: Callable[[dict[str, Any]], None] | None = None,
        window: int = STUCK_WINDOW,
    ):
        self.file, self.say, self.on_row, self.window = file, say, on_row, window
        self.t_start = time.perf_counter()
        self.pending: tuple[int, Any] | None = None  # (step, device metrics)
        self.last: dict[str, Any] = {}
        self.steps_written = 0
        self.updates_skipped = 0  # in this process
        self._zero_grads = 0
        self._skipped_in_a_row = 0
        self._warned: set[str] = set()

    @property
    def last_step(self) -> int | None:
        """The step of the last row written (None before the first)."""
        return self.last.get("step")

    def add(self, step: int, device_metrics: Any) -> dict[str, Any] | None:
        """Hold step ``step``'s metrics; write the row held before (returned, if any)."""
        row = self.flush()
        self.pending = (step, device_metrics)
        return row

    def flush(self) -> dict[str, Any] | None:
        """Write the row held, if any; returns it."""
        if self.pending is None:
            return None
        step, device_metrics = self.pending
        metrics = jax.device_get(device_metrics)
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        row["wall_s"] = round(time.perf_counter() - self.t_start, 4)
        self.file.write(dumps_row(row) + "\n")
        self.pending = None
        self.last = row
        self.steps_written += 1
        self._watch(row)
        if self.on_row is not None:
            self.on_row(row)
        return row

    def _watch(self, row: dict[str, Any]) -> None:
        skipped = not math.isfinite(row["meta_loss"]) or not math.isfinite(row["grad_norm"])
        self.updates_skipped += skipped
        self._skipped_in_a_row = self._skipped_in_a_row + 1 if skipped else 0
        self._zero_grads = self._zero_grads + 1 if row["grad_norm"] == 0.0 else 0
        step = row["step"]
        if self._skipped_in_a_row == 1 and "skipped" not in self._warned:
            self.say(f"step {step}: non-finite meta-loss or meta-gradient; the update was skipped")
        if self._skipped_in_a_row >= self.window:
            self._once(
                "skipped",
                f"step {step}: the last {self.window} updates were all skipped (non-finite "
                "meta-loss or meta-gradient): theta is not learning. Check the task's loss and "
                "normalizer (NaN?), the learned optimizer's initial step size, and "
                "meta_train.outer_learning_rate.",
            )
        if self._zero_grads >= self.window:
            self._once(
                "zero",
                f"step {step}: the meta-gradient has been exactly zero for {self.window} steps: "
                "theta does not move. The meta-loss is probably clipped or saturated (e.g. a "
                "learning rate so large that every inner run diverges to the normalizer's cap); "
                "check the learned optimizer's initial hyper-parameters and the task's normalizer.",
            )

    def _once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self.say(message)

    @property
    def stuck(self) -> bool:
        """Whether every row written in this process had its update skipped."""
        return self.steps_written > 0 and self.updates_skipped == self.steps_written

    def postfix(self) -> dict[str, str]:
        """The progress bar's figures: meta-loss and the counters worth watching."""
        out = {"meta_loss": f"{self.last.get('meta_loss', math.nan):.4g}"}
        if self.updates_skipped:
            out["skipped"] = str(self.updates_skipped)
        for name in ("restarts", "nonfinite_losses"):
            if self.last.get(name):
                out[name] = f"{self.last[name]:.3g}"
        return out
