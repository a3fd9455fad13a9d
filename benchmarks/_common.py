"""Shared helpers of the benchmark scripts: timing, the JSON line, machine facts.

Every benchmark script is run as its own process (``python benchmarks/<name>.py``),
records ``import_s`` from its first line, and prints exactly one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared: context for every figure)."""
    return [round(x, 2) for x in os.getloadavg()]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn()`` takes until its result is ready on the device, and the result."""
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t0, out


def median(xs: Sequence[float]) -> float:
    """The median of ``xs``."""
    return float(statistics.median(xs))


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import jax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def emit(name: str, import_s: float, **fields: Any) -> None:
    """Print the benchmark's one JSON line (with load average, peak RSS and machine)."""
    row = {
        "benchmark": name,
        "import_s": round(import_s, 4),
        **fields,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "loadavg": loadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **machine(),
    }
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()


def outer_loop(learner: Any, num_steps: int, seed: int = 0) -> dict[str, Any]:
    """The meta-training measurement shared by the PES/ES benchmarks.

    ``init_s``: ``learner.init`` until ready. Then ``num_steps`` outer steps,
    each with a fresh PRNG key, each timed around ``jax.block_until_ready``:
    ``first_outer_step_s`` (includes tracing and compilation),
    ``steady_s_per_outer_step`` (median of outer steps 3 to 22, 1-based; also in
    process CPU seconds, and the median over all steps but the first),
    ``total_loop_s`` (all ``num_steps`` steps, the first included), and the
    meta-loss first/last and the means of the first and last 10 steps.
    """
    import jax
    import numpy as np

    key = jax.random.PRNGKey(seed)
    init_s, state = timed(lambda: learner.init(jax.random.fold_in(key, -1 % 2**31)))
    step_s, cpu_s, losses = [], [], []
    t_loop = time.perf_counter()
    for step in range(num_steps):
        step_key = jax.random.fold_in(key, step)
        t0, c0 = time.perf_counter(), time.process_time()
        state, metrics = learner.update(state, step_key)
        jax.block_until_ready((state, metrics))
        step_s.append(time.perf_counter() - t0)
        cpu_s.append(time.process_time() - c0)
        losses.append(metrics["meta_loss"])  # a device array: read after the loop
    total_loop_s = time.perf_counter() - t_loop
    losses = np.asarray(jax.device_get(losses), np.float64)
    return {
        "init_s": round(init_s, 4),
        "first_outer_step_s": round(step_s[0], 4),
        # Process CPU seconds of the first step (tracing and compiling are single-threaded
        # here): the compile cost with less of the noise of a shared machine.
        "first_outer_step_cpu_s": round(cpu_s[0], 4),
        "steady_s_per_outer_step": round(median(step_s[2:22]), 6),
        # CPU seconds of this process (all threads) per step, same steps: less sensitive
        # than wall time to other processes on a shared machine.
        "steady_cpu_s_per_outer_step": round(median(cpu_s[2:22]), 6),
        "median_s_per_outer_step_all": round(median(step_s[1:]), 6),
        "total_loop_s": round(total_loop_s, 3),
        "num_outer_steps": num_steps,
        "meta_loss_first": float(losses[0]),
        "meta_loss_last": float(losses[-1]),
        "meta_loss_first10_mean": float(losses[:10].mean()),
        "meta_loss_last10_mean": float(losses[-10:].mean()),
    }
