"""mixture_step: outer-step time of a task distribution run against the number of distinct families.

    python benchmarks/mixture_step.py [--distinct 1 2 4 8] [--slots 8] [--steps 30]

Each configuration meta-trains ``LearnableAdam`` with truncated PES (trunc 10,
horizon 50, 4 tasks per slot) over ``--slots`` estimator slots holding
``K`` distinct families: MLPs on the bundled 8x8 digits (batch 64) with one hidden
layer of 16, 20, 24, ... units (a distinct graph each), slot ``s`` holding family
``s mod K``, never resampled. Reported per K: the first step (the compiles of K
PES programs and the update), the median steady step after ``--warmup`` steps,
and the same workload through the fused single-family path (``task_family``,
``num_estimators=slots``) for reference. One JSON line per configuration.
"""

from __future__ import annotations

import time

_t0 = time.perf_counter()
import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import emit, median  # noqa: E402

from lopt_core import meta_train, single_task_to_family  # noqa: E402
from lopt_core.outer import ConstantTruncationSchedule, TruncatedPES  # noqa: E402
from lopt_core.task_distributions import TaskDistribution  # noqa: E402
from lopt_plugins.learned_optimizers import LearnableAdam  # noqa: E402
from lopt_plugins.tasks import ImageMLPTask  # noqa: E402

IMPORT_S = time.perf_counter() - _t0


class _RoundRobin(TaskDistribution):
    """Family ``i mod K`` on the ``i``-th draw: slot ``s`` holds family ``s mod K``."""

    def __init__(self, families):
        self.families, self.draws = families, 0
        self.name = f"RoundRobin{len(families)}"

    def sample(self, key):
        family = self.families[self.draws % len(self.families)]
        self.draws += 1
        return family


def _families(k: int) -> list:
    return [
        single_task_to_family(ImageMLPTask(hidden_sizes=(16 + 4 * i,), batch_size=64))
        for i in range(k)
    ]


def _run(source: dict, slots: int, steps: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        meta_train(
            Path(tmp) / "run",
            **source,
            learned_optimizer=LearnableAdam(),
            gradient_estimator=functools.partial(TruncatedPES, trunc_length=10, std=0.01),
            truncation_schedule=ConstantTruncationSchedule(50),
            num_tasks=4,
            num_estimators=slots,
            num_steps=steps,
            checkpoint_every=steps,
            progress=False,
        )
        rows = [json.loads(r) for r in (Path(tmp) / "run/metrics.jsonl").read_text().splitlines()]
    walls = [r["wall_s"] for r in rows]
    return [walls[0]] + [b - a for a, b in zip(walls, walls[1:], strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--distinct", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    fused = _run({"task_family": _families(1)[0]}, args.slots, args.steps)
    emit(
        "mixture_step",
        IMPORT_S,
        path="fused single family",
        distinct_families=1,
        slots=args.slots,
        first_step_s=round(fused[0], 3),
        steady_step_s=round(median(fused[args.warmup :]), 4),
    )
    for k in args.distinct:
        times = _run({"task_distribution": _RoundRobin(_families(k))}, args.slots, args.steps)
        emit(
            "mixture_step",
            IMPORT_S,
            path="task distribution",
            distinct_families=k,
            slots=args.slots,
            first_step_s=round(times[0], 3),
            steady_step_s=round(median(times[args.warmup :]), 4),
        )


if __name__ == "__main__":
    main()
