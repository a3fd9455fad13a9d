"""Stopping a run cleanly: SIGINT (Ctrl-C) and SIGTERM become a request, read between steps.

A ``KeyboardInterrupt`` can land anywhere, also halfway through writing a metrics
row, and then the rows and the checkpoint disagree. While a run loop holds
``StopRequests``, the first SIGINT or SIGTERM only records the request; the loop
finishes the step it is in, writes its rows, checkpoints and returns. A second
Ctrl-C stops at once (``KeyboardInterrupt``), for a run that hangs.
Batch schedulers (SLURM, Kubernetes, Ray) stop jobs with SIGTERM, so it is
treated like Ctrl-C. Handlers are installed only in the main thread (Python's
rule); elsewhere (a Ray actor's thread) the run is stopped by its owner.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """A context manager: ``requested`` is the name of the first stop signal received."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.requested is None:
            self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
