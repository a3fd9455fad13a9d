"""Turn run_all result files into the tables of benchmarks/README.md.

    python benchmarks/summarize.py benchmarks/results/run-*.jsonl

Every figure is the median over the runs given. Ratios compare with the
reference figures that the issue quotes for google/learned_optimization (jax,
CPU, 2 cores): a speed-up is reference / lopt, a fraction is lopt / reference.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

# Reference figures (medians of two runs on this machine class), from the issue.
REFERENCE = {
    "pes_quadratic": {"first": 4.25, "steady": 0.00351, "rss": 1122},
    "pes_mlp": {"first": 6.79, "steady": 0.0495, "rss": 1252},
    "full_es_quadratic": {"first": 4.46, "steady": 0.00607, "rss": 1098},
}
REFERENCE_IMPORT_S = 2.8
REFERENCE_IMPORT_MIB = 831


def load(paths: list[str]) -> dict[str, list[dict]]:
    rows = defaultdict(list)
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    rows[row["benchmark"]].append(row)
    return rows


def med(rows: list[dict], *path: str) -> float:
    values = []
    for row in rows:
        for key in path:
            row = row[key]
        values.append(float(row))
    return statistics.median(values)


def med_or(rows: list[dict], key: str) -> str:
    """The median of ``key`` formatted, or "-" when the runs did not record it."""
    values = [float(row[key]) for row in rows if key in row]
    return f"{statistics.median(values):.2f}" if values else "-"


def main(paths: list[str]) -> None:
    rows = load(paths)
    n = max(len(v) for v in rows.values())
    print(f"Medians of {n} run(s); load averages (1 min) seen: ", end="")
    print(sorted({r["loadavg"][0] for v in rows.values() for r in v}))
    print()
    print(
        "| workload | first outer step s (ref) | x faster | steady s/step (ref) | x faster "
        "| steady CPU s/step | first step CPU s | init s | total 200 steps s "
        "| peak RSS MiB (ref) | fraction "
        "| meta-loss first10 -> last10 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, ref in REFERENCE.items():
        if name not in rows:
            continue
        r = rows[name]
        first, steady = med(r, "first_outer_step_s"), med(r, "steady_s_per_outer_step")
        rss = med(r, "peak_rss_mib")
        print(
            f"| {name} | {first:.2f} ({ref['first']}) | {ref['first'] / first:.2f} "
            f"| {steady:.5f} ({ref['steady']}) | {ref['steady'] / steady:.2f} "
            f"| {med(r, 'steady_cpu_s_per_outer_step'):.5f} "
            f"| {med_or(r, 'first_outer_step_cpu_s')} | {med(r, 'init_s'):.2f} "
            f"| {med(r, 'total_loop_s'):.2f} | {rss:.0f} ({ref['rss']}) | {rss / ref['rss']:.2f} "
            f"| {med(r, 'meta_loss_first10_mean'):.3f} -> {med(r, 'meta_loss_last10_mean'):.3f} |"
        )
    import_ok = all("s" in row["lopt_core_and_plugins"] for row in rows.get("import_cost", []))
    if "import_cost" in rows and import_ok:
        r = rows["import_cost"]
        s, mib = med(r, "lopt_core_and_plugins", "s"), med(r, "lopt_core_and_plugins", "rss_mib")
        print()
        print("| import | s | peak RSS MiB |")
        print("|---|---|---|")
        print(
            f"| bare python | {med(r, 'bare_python', 's'):.3f} | "
            f"{med(r, 'bare_python', 'rss_mib'):.0f} |"
        )
        print(f"| jax | {med(r, 'jax_only', 's'):.3f} | {med(r, 'jax_only', 'rss_mib'):.0f} |")
        print(f"| lopt_core + all built-in plugins | {s:.3f} | {mib:.0f} |")
        print(f"| reference core (issue) | {REFERENCE_IMPORT_S} | {REFERENCE_IMPORT_MIB} |")
    if "inner_vmap" in rows:
        r = rows["inner_vmap"]
        print()
        print("| inner_vmap | compile s | steady s/call | task-steps/s | ratio to hand-written |")
        print("|---|---|---|---|---|")
        for tasks in ("tasks_32", "tasks_256"):
            for who in ("lopt", "lopt_no_eval", "hand_written", "hand_written_optax"):
                if who not in r[0][tasks]:
                    continue
                ratio = (
                    f"{med(r, tasks, f'{who}_ratio_to_hand_written'):.2f}"
                    if who != "hand_written"
                    else "1"
                )
                print(
                    f"| {tasks.split('_')[1]} tasks, {who} | {med(r, tasks, who, 'compile_s'):.2f} "
                    f"| {med(r, tasks, who, 'steady_s'):.6f} "
                    f"| {med(r, tasks, who, 'task_steps_per_s'):.3g} | {ratio} |"
                )
    if "lopt_step_overhead" in rows:
        r = rows["lopt_step_overhead"]
        print()
        print("| 1M-param MLP | update s | train step s | update / Adam | train step / Adam |")
        print("|---|---|---|---|---|")
        for who in ("Adam", "MLPLOpt", "AdafacMLPLOpt"):
            ratios = (
                ("1", "1")
                if who == "Adam"
                else (
                    f"{med(r, f'{who}_update_ratio_to_adam'):.1f}",
                    f"{med(r, f'{who}_train_step_ratio_to_adam'):.1f}",
                )
            )
            print(
                f"| {who} | {med(r, who, 'update_s'):.5f} | {med(r, who, 'train_step_s'):.5f} "
                f"| {ratios[0]} | {ratios[1]} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
