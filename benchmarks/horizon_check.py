"""horizon_check: a pretrained optimizer trained 4x past a suite's budgets. Diverges? Improves?

    python benchmarks/horizon_check.py [--pretrained residual_adam_mix_v1] [--suite zoo]
        [--horizon 100] [--mult 4]

For each task of the suite, the optimizer trains the task's runs (the bench's held-out
runs: same inits and data) for ``mult`` times ``horizon`` (its meta-training horizon;
default: the task's budget), told the longer length (``num_steps``), with test loss
every tenth of ``horizon``. Tasks whose data is not on the machine are skipped.
One JSON line per task: mean test loss at ``horizon`` (1x) and at the end (``mult``x),
whether any run
diverged (a non-finite loss), and whether the end is at or below 1x; then a summary
line with the fractions.
"""

from __future__ import annotations

import time

_t0 = time.perf_counter()
import argparse  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
from _common import emit  # noqa: E402

import lopt_core  # noqa: E402
from lopt_core.bench import get_suite  # noqa: E402
from lopt_core.bench.baselines import NUM_EVAL_BATCHES, held_out_key  # noqa: E402
from lopt_core.evaluation import multi_task_training_curves  # noqa: E402

IMPORT_S = time.perf_counter() - _t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", default="residual_adam_mix_v1")
    parser.add_argument("--suite", default="zoo")
    parser.add_argument("--horizon", type=int, help="the 1x point (default: each task's budget)")
    parser.add_argument("--mult", type=int, default=4)
    parser.add_argument(
        "--task", action="append", default=[], help="only these tasks, in this order"
    )
    args = parser.parse_args()
    found = lopt_core.load_pretrained(args.pretrained)
    theta = found.theta()
    rows = []
    suite = get_suite(args.suite)
    chosen = {t.task: t for t in suite.select(args.task).tasks} if args.task else None
    for task in [chosen[n] for n in dict.fromkeys(args.task)] if chosen else suite.tasks:
        horizon = args.horizon or task.steps
        steps = horizon * args.mult
        every = max(1, horizon // 10)
        try:
            family = task.build()
        except (FileNotFoundError, OSError):
            continue
        curves = multi_task_training_curves(
            family, found.learned_optimizer, held_out_key(task), task.seeds, steps,
            eval_every=every, num_eval_batches=NUM_EVAL_BATCHES, eval_splits=("test",),
            theta=theta,
        )  # fmt: skip
        test = curves.losses("test")
        at_1x = test[:, list(curves.eval_steps).index(horizon)]
        final = test[:, -1]
        diverged = bool(not np.all(np.isfinite(test)))
        row = {
            "task": task.label,
            "horizon": horizon,
            "steps": steps,
            "test_at_1x": float(np.mean(at_1x)),
            "test_at_end": float(np.mean(final)) if np.all(np.isfinite(final)) else math.inf,
            "diverged": diverged,
        }
        row["end_at_or_below_1x"] = bool(row["test_at_end"] <= row["test_at_1x"])
        rows.append(row)
        emit("horizon_check", IMPORT_S, pretrained=args.pretrained, mult=args.mult, **row)
    emit(
        "horizon_check_summary",
        IMPORT_S,
        pretrained=args.pretrained,
        suite=args.suite,
        mult=args.mult,
        tasks=len(rows),
        diverged=sum(r["diverged"] for r in rows),
        fraction_end_at_or_below_1x=sum(r["end_at_or_below_1x"] for r in rows) / len(rows),
    )


if __name__ == "__main__":
    main()
