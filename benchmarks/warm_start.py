"""warm_start: cold and warm compilation cache for `lopt train`, `lopt eval` and `lopt bench`.

    python benchmarks/warm_start.py [--recipe quickstart] [--rounds 2]

Each round runs ``lopt train RECIPE -p 'meta_train.num_steps = 1'`` twice in fresh
processes sharing a new, empty ``LOPT_COMPILATION_CACHE`` folder: the first compiles
and fills it (cold), the second reads it (warm). Reported: ``wall_s`` of step 1 in
``metrics.jsonl`` (from the start of the run to the end of its first outer step) and
the whole process's wall time, per round, their medians and the warm/cold ratios.
Then, on the cold run's folder, ``lopt eval RUN --seeds 1`` and ``lopt bench RUN
--suite tiny`` (its shipped baselines: only the learned optimizer's runs train), each
cold and warm with a cache folder of their own: their whole process's wall time
(evaluation has no first outer step; its time is compiling and training).
One JSON line.
"""

from __future__ import annotations

import time

_t0 = time.perf_counter()
import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import emit, median  # noqa: E402

IMPORT_S = time.perf_counter() - _t0
LOPT = [sys.executable, "-m", "lopt_core.cli"]


def _process_s(args: list[str], cache: Path) -> float:
    """Wall seconds of ``lopt ARGS`` in a fresh process using the compilation ``cache``."""
    env = {**os.environ, "LOPT_COMPILATION_CACHE": str(cache)}
    t0 = time.perf_counter()
    subprocess.run([*LOPT, *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def _run(recipe: str, out: Path, cache: Path) -> tuple[float, float]:
    """``lopt train`` for one step: its first outer step's ``wall_s`` and the process's time."""
    args = ["train", recipe, "-o", str(out), "--no-progress"]
    args += ["-p", "meta_train.num_steps = 1", "-p", "meta_train.validate_every = 0"]
    process_s = _process_s(args, cache)
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return float(first["wall_s"]), process_s


def _eval_and_bench(run: Path, tmp: Path) -> dict[str, tuple[float, float]]:
    """Cold and warm process seconds of ``lopt eval`` and ``lopt bench`` on ``run``."""
    commands = {
        "eval": ["eval", str(run), "--seeds", "1", "--no-progress"],
        "bench": ["bench", str(run), "--suite", "tiny", "--no-progress"],
    }
    out = {}
    for name, args in commands.items():
        cache = tmp / f"cache_{name}"
        extra = ["-o", str(tmp / "bench_out")] if name == "bench" else []
        out[name] = (_process_s(args + extra, cache), _process_s(args + extra, cache))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="quickstart")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cold, warm, others = [], [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            cold.append(_run(args.recipe, tmp / "cold", tmp / "cache"))
            warm.append(_run(args.recipe, tmp / "warm", tmp / "cache"))
            others.append(_eval_and_bench(tmp / "cold", tmp))
    med = lambda rows, i: median([r[i] for r in rows])
    per_command = {}
    for name in ("eval", "bench"):
        rows = [o[name] for o in others]
        per_command[f"{name}_cold_process_s"] = [round(r[0], 3) for r in rows]
        per_command[f"{name}_warm_process_s"] = [round(r[1], 3) for r in rows]
        per_command[f"{name}_process_ratio"] = round(med(rows, 1) / med(rows, 0), 3)
    emit(
        "warm_start",
        IMPORT_S,
        recipe=args.recipe,
        cold_first_step_s=[r[0] for r in cold],
        warm_first_step_s=[r[0] for r in warm],
        cold_process_s=[round(r[1], 3) for r in cold],
        warm_process_s=[round(r[1], 3) for r in warm],
        first_step_ratio=round(med(warm, 0) / med(cold, 0), 3),
        process_ratio=round(med(warm, 1) / med(cold, 1), 3),
        **per_command,
    )


if __name__ == "__main__":
    main()
