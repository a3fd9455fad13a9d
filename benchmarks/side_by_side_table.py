"""The table of ``benchmarks/side_by_side`` results: medians per workload and library.

    python benchmarks/side_by_side_table.py benchmarks/results/side_by_side-*.jsonl

Reads the JSON lines of both libraries (lopt's fields as ``_common.outer_loop`` writes
them, the reference's as its ``_meta_common`` does, under ``results``) and prints a
markdown table: steady seconds per outer step, the first outer step (compiling), and
peak RSS, each as reference / lopt with the ratio, medians over the rounds.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

FIELDS = (
    ("steady_s_per_outer_step", "steady s/outer step"),
    ("first_outer_step_s", "first outer step s"),
    ("peak_rss_mib", "peak RSS MiB"),
)


def flatten(row: dict) -> dict:
    """One dict of fields, whichever library wrote the row."""
    out = {**row, **row.get("results", {})}
    out["workload"] = row.get("benchmark") or row.get("bench")
    return out


def main(paths: list[str]) -> None:
    values: dict[tuple, list[float]] = defaultdict(list)
    loads = []
    for path in paths:
        for line in open(path):
            row = flatten(json.loads(line))
            loads.append(row.get("loadavg", [None])[0])
            for field, _ in FIELDS:
                if field in row:
                    values[(row["workload"], row["library"], field)].append(float(row[field]))
    workloads = sorted({w for w, _, _ in values}, key=lambda w: w.replace("pes_mlp", "z"))
    header = " | ".join(f"{label}, reference / lopt (x)" for _, label in FIELDS)
    print(f"| workload | rounds | {header} |")
    print("|---" * (len(FIELDS) + 2) + "|")
    for workload in workloads:
        cells = []
        rounds = len(values.get((workload, "lopt", FIELDS[0][0]), []))
        for field, _ in FIELDS:
            ref = values.get((workload, "reference", field))
            ours = values.get((workload, "lopt", field))
            if not ref or not ours:
                cells.append("-")
                continue
            r, o = statistics.median(ref), statistics.median(ours)
            cells.append(f"{r:.4g} / {o:.4g} ({r / o:.2f}x)")
        print(f"| {workload} | {rounds} | " + " | ".join(cells) + " |")
    seen = sorted(x for x in loads if x is not None)
    if seen:
        print(f"\n1-minute load averages seen: {seen[0]} to {seen[-1]}")


if __name__ == "__main__":
    main(sys.argv[1:])
