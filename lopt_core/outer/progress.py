"""The progress display of a run: says it is compiling, then a bar whose ETA starts after.

The first outer step compiles (seconds to a minute) and a bar started before it
would show an ETA of hours; the bar starts once that step is done. On a
terminal it redraws; redirected to a file it prints a line every 30 s instead
of carriage returns. Messages and the bar share one stream, stderr.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm


class RunProgress:
    """A tqdm bar over ``total`` outer steps from ``initial``, started by ``start()``."""

    def __init__(self, total: int, initial: int, enabled: bool = True):
        self.total, self.initial, self.enabled = total, initial, enabled
        self.bar: Any = None
        self._postfix: dict[str, str] = {}
        self._t0 = time.perf_counter()
        if enabled and initial < total:
            self.write("meta-train: compiling the first outer step...")

    def start(self) -> None:
        """Start the bar (after the first step), if not started yet."""
        if self.bar is not None or not self.enabled:
            return
        interactive = sys.stderr.isatty()
        self.bar = tqdm(
            total=self.total,
            initial=self.initial,
            desc="meta-train",
            unit="step",
            file=sys.stderr,
            mininterval=0.1 if interactive else 30.0,
            dynamic_ncols=interactive,
        )
        compiled = time.perf_counter() - self._t0
        self.bar.write(f"meta-train: compiled in {compiled:.1f} s", file=sys.stderr)

    def update(self, postfix: dict[str, str]) -> None:
        """One more step done, with the figures to show."""
        self.start()
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def write(self, message: str) -> None:
        """A line above the bar (or alone, when there is none)."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()
