"""metric_writers: what the TensorBoard and W&B writers cost a meta-training step.

Two measurements, with both writers on (tensorboard, and wandb with WANDB_MODE=offline):

- ``row_call_us``: the caller's time per metrics row of 10 numbers, median over
  ``ROWS`` rows: ``background`` is what a step pays (a row put on the writers'
  queue), ``inline`` is the same writers called in the caller's thread (what a
  step would pay without the background thread);
- ``step_ms``: short meta-training runs (PES, truncations of 10 steps, 8 tasks,
  ``STEPS`` outer steps) of ``LearnableAdam`` on ``FixedDimQuadraticFamily(8)``
  (a ~1 ms step: the worst case, where the writers' Python competes with the
  loop for the GIL and 2 cores) and of ``MLPLOpt`` on the quickstart's digits MLP
  (a realistic small step): median milliseconds per outer step after the first
  10 (from ``metrics.jsonl``'s ``wall_s``), without writers and with both;
  ``overhead_fraction`` is their relative difference.

Prints one JSON line.
"""

import os
import tempfile
import time

_t0 = time.perf_counter()
import json  # noqa: E402
import statistics  # noqa: E402
from pathlib import Path  # noqa: E402

from lopt_core import meta_train  # noqa: E402
from lopt_core.metric_writers import MetricWriters  # noqa: E402
from lopt_core.outer import ConstantTruncationSchedule, TruncatedPES  # noqa: E402
from lopt_plugins.learned_optimizers import LearnableAdam, MLPLOpt  # noqa: E402
from lopt_plugins.metric_writers import TensorBoardWriter, WandbWriter  # noqa: E402
from lopt_plugins.tasks import FixedDimQuadraticFamily, ImageMLPInitFamily  # noqa: E402

IMPORT_S = time.perf_counter() - _t0

import _common  # noqa: E402

ROWS = 2000
STEPS = 150


def row_call_us(folder: Path, background: bool) -> float:
    row = {f"metric_{i}": float(i) for i in range(10)}
    times = []
    with MetricWriters([TensorBoardWriter(), WandbWriter()], folder, background=background) as w:
        for step in range(ROWS):
            t0 = time.perf_counter()
            w.scalars(step, row, prefix="outer/")
            times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e6, 2)


PROBLEMS = {
    "quadratic_learnable_adam": lambda: (FixedDimQuadraticFamily(8), LearnableAdam()),
    "digits_mlp_mlplopt": lambda: (
        ImageMLPInitFamily(dataset="digits", hidden_sizes=(32,)),
        MLPLOpt(),
    ),
}


def step_ms(folder: Path, problem: str, writers: list) -> float:
    family, learned = PROBLEMS[problem]()
    meta_train(
        folder,
        task_family=family,
        learned_optimizer=learned,
        gradient_estimator=lambda ts: TruncatedPES(ts, trunc_length=10),
        truncation_schedule=ConstantTruncationSchedule(50),
        num_tasks=8,
        num_steps=STEPS,
        checkpoint_every=STEPS,
        progress=False,
        metric_writers=writers,
    )
    walls = [json.loads(r)["wall_s"] for r in (folder / "metrics.jsonl").read_text().splitlines()]
    deltas = [b - a for a, b in zip(walls[10:], walls[11:], strict=False)]
    return round(statistics.median(deltas) * 1e3, 3)


def main() -> None:
    os.environ.setdefault("WANDB_MODE", "offline")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        calls = {
            "background": row_call_us(tmp / "bg", True),
            "inline": row_call_us(tmp / "inline", False),
        }
        steps, overhead = {}, {}
        for problem in PROBLEMS:
            without = step_ms(tmp / f"{problem}_none", problem, [])
            both = step_ms(tmp / f"{problem}_both", problem, [TensorBoardWriter(), WandbWriter()])
            steps[problem] = {"no_writers": without, "tensorboard_and_wandb": both}
            overhead[problem] = round(both / without - 1.0, 4)
    _common.emit(
        "metric_writers",
        IMPORT_S,
        writers=["tensorboard", "wandb (offline)"],
        rows=ROWS,
        row_call_us=calls,
        outer_steps=STEPS,
        step_ms=steps,
        overhead_fraction=overhead,
    )


if __name__ == "__main__":
    main()
