"""scaling_sweep: outer-step time and peak memory against tasks and inner parameters.

    python benchmarks/scaling_sweep.py [--reference-python REFVENV/bin/python] [--out FILE]
    python benchmarks/scaling_sweep.py --plot results/scaling-*.jsonl   # only the plot

Runs ``scaling.py`` (and, given its interpreter, ``reference/scaling_pes_mlp.py``)
once per point, each in a fresh process (peak RSS is per process), alternating the
two libraries point by point so both see the same machine load:

- tasks: ``num_tasks`` = 8, 16, 32, 64, 128, 256 on the 2,410-parameter MLP (H = 32);
- parameters: H = 13, 133, 1333, 13333 (about 1e3 .. 1e6 parameters) at 8 tasks.

Appends one JSON line per point to ``--out`` (default
``benchmarks/results/scaling-<date>.jsonl``), a row with ``"error"`` where a point
failed or ran past ``--timeout``, then draws ``scaling.png`` next to it: steady
seconds per outer step and peak RSS against each axis, log-log.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASKS = (8, 16, 32, 64, 128, 256)
# Plot styles by the rows' "library" (other labels, e.g. an earlier lopt, get dotted lines).
STYLES = {"lopt": "o-", "reference": "s--"}
HIDDEN = (13, 133, 1333, 13333)


def points() -> list[tuple[int, int]]:
    """(num_tasks, hidden) of every point: the tasks axis, then the parameters axis."""
    return [(n, 32) for n in TASKS] + [(8, h) for h in HIDDEN]


def run_point(cmd: list[str], timeout: float) -> dict:
    """The JSON line ``cmd`` prints, or a row saying why there is none."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"error": f"ran past {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return {"error": tail[0][:300]}
    return json.loads(lines[-1])


def sweep(out: Path, reference_python: str | None, steps: int, timeout: float) -> None:
    libraries = {"lopt": [sys.executable, "scaling.py"]}
    if reference_python:
        libraries["reference"] = [reference_python, "reference/scaling_pes_mlp.py"]
    out.parent.mkdir(parents=True, exist_ok=True)
    for num_tasks, hidden in points():
        for library, cmd in libraries.items():
            args = ["--num-tasks", str(num_tasks), "--hidden", str(hidden), "--steps", str(steps)]
            row = run_point([*cmd, *args], timeout)
            row.update(library=library, num_tasks=num_tasks, hidden=hidden)
            row.setdefault("inner_params", 75 * hidden + 10)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            shown = row.get("steady_s_per_outer_step", row.get("error"))
            print(f"{library:9s} tasks={num_tasks:<4d} H={hidden:<6d} {shown}", flush=True)


def plot(files: list[Path], png: Path) -> None:
    """Two rows (time, memory) by two columns (tasks, parameters), one line per library."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line]
    rows = [r for r in rows if "error" not in r]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    axis_defs = (
        ("num_tasks", lambda r: r["hidden"] == 32, "task slots (2 PES particles each), H = 32"),
        ("inner_params", lambda r: r["num_tasks"] == 8, "inner model parameters, 8 task slots"),
    )
    for col, (x_key, keep, x_label) in enumerate(axis_defs):
        libraries = sorted({r["library"] for r in rows})
        for library in libraries:
            style = STYLES.get(library, "^:")
            pts = sorted((r[x_key], r) for r in rows if r["library"] == library and keep(r))
            if not pts:
                continue
            xs = [x for x, _ in pts]
            axes[0, col].plot(
                xs, [r["steady_s_per_outer_step"] for _, r in pts], style, label=library
            )
            axes[1, col].plot(xs, [r["peak_rss_mib"] for _, r in pts], style, label=library)
        for row, y_label in enumerate(("steady s / outer step", "peak RSS, MiB")):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(x_label)
            ax.set_ylabel(y_label)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.suptitle("pes_mlp (MLPLOpt, TruncatedPES trunc 10) scaling, CPU")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-python", help="the interpreter of a reference venv")
    parser.add_argument("--out", type=Path, help="JSON lines file to append to")
    parser.add_argument("--steps", type=int, default=6, help="outer steps per point")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per point")
    parser.add_argument("--plot", type=Path, nargs="+", help="only plot these result files")
    args = parser.parse_args()
    if args.plot:
        plot(args.plot, args.plot[0].with_suffix(".png"))
        return
    out = args.out or HERE / "results" / f"scaling-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    sweep(out.resolve(), args.reference_python, args.steps, args.timeout)
    plot([out.resolve()], out.resolve().with_suffix(".png"))


if __name__ == "__main__":
    main()
