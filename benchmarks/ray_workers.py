"""Outer-step throughput of meta-training with 0 (single process), 1, 2, ... Ray workers.

    python benchmarks/ray_workers.py [--workers 1 2] [--steps 60] [--ray-address A]

The workload is ``pes_mlp`` from this folder (``benchmarks/pes_mlp.py``): MLPLOpt
meta-trained with truncated PES on an MLP 64 -> 32 relu -> 10 over 10,000 synthetic
examples, batch 128, 8 tasks, horizon 50, offsets up to 50, trunc 10, std 0.01, outer
Adam 1e-3. Each worker owns one estimator of 8 tasks, so a synchronous step with N
workers averages N estimates.

Each configuration is a real ``meta_train`` run into a temporary folder; the
steady step time is the median of the steps after ``--warmup`` (compilation and
actor start-up excluded), from the ``wall_s`` of ``metrics.jsonl``. Prints one
JSON line per configuration.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCHMARKS_DIR = Path(__file__).resolve().parent


def pes_mlp_recipe() -> dict[str, Any]:
    """meta_train's build arguments of the pes_mlp workload (``pes_mlp`` must be importable)."""
    import pes_mlp  # benchmarks/pes_mlp.py: the synthetic data and the MLP task family

    from lopt_core.outer import ConstantTruncationSchedule, TruncatedPES

    return dict(
        task_family=pes_mlp.family(),
        learned_optimizer=_lopt(),
        gradient_estimator=functools.partial(TruncatedPES, trunc_length=10, std=0.01),
        truncation_schedule=ConstantTruncationSchedule(50),
        num_tasks=8,
        random_initial_iteration_offset=50,
        outer_learning_rate=1e-3,
    )


@functools.cache
def _lopt():
    from lopt_plugins.learned_optimizers import MLPLOpt

    return MLPLOpt()  # one object per process: the learner checks estimators were built with it


def _steady(run_dir: Path, warmup: int) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    walls = [r["wall_s"] for r in rows]
    steps = [b - a for a, b in zip(walls[warmup:-1], walls[warmup + 1 :], strict=True)]
    median = statistics.median(steps)
    return {
        "steady_s_per_outer_step": round(median, 4),
        "outer_steps_per_s": round(1.0 / median, 3),
        "first_rows_wall_s": round(walls[min(warmup, len(walls) - 1)], 2),
        "meta_loss_last": rows[-1]["meta_loss"],
        "stale_dropped": rows[-1].get("stale_dropped", 0),
    }


def measure(workers: int, mode: str, steps: int, warmup: int, ray: bool) -> dict[str, Any]:
    """One ``meta_train`` run of pes_mlp; its steady outer-step rate."""
    # The recipe by its importable name (not __main__'s), so the actors can unpickle it.
    from ray_workers import pes_mlp_recipe

    from lopt_core import meta_train

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        t0 = time.perf_counter()
        extra = dict(ray=True, recipe=pes_mlp_recipe, worker_mode=mode) if ray else {}
        meta_train(
            run_dir,
            **pes_mlp_recipe(),
            workers=workers,
            num_steps=steps,
            checkpoint_every=10**6,
            progress=False,
            **extra,
        )
        out = _steady(run_dir, warmup)
    estimates = max(workers, 1) if mode == "sync" else 1
    out.update(
        workers=workers if ray else 0,
        mode=mode if ray else "single-process",
        estimates_per_outer_step=estimates,
        estimates_per_s=round(out["outer_steps_per_s"] * estimates, 3),
        total_s=round(time.perf_counter() - t0, 1),
        loadavg=[round(x, 2) for x in os.getloadavg()],
        cpu_count=os.cpu_count(),
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure the single-process baseline and each ``--workers`` count on Ray."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=["sync"], choices=["sync", "async"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)

    # The Ray actors import this module and pes_mlp too: they inherit PYTHONPATH.
    sys.path.insert(0, str(BENCHMARKS_DIR))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(BENCHMARKS_DIR), os.environ.get("PYTHONPATH")) if p
    )
    if not args.no_baseline:
        print(json.dumps(measure(0, "sync", args.steps, args.warmup, ray=False)), flush=True)
    from lopt_core.distributed import init_ray

    started = init_ray(args.ray_address, num_cpus=max(os.cpu_count() or 1, max(args.workers)))
    try:
        for mode in args.modes:
            for workers in args.workers:
                row = measure(workers, mode, args.steps, args.warmup, ray=True)
                print(json.dumps(row), flush=True)
    finally:
        if started:
            import ray

            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
