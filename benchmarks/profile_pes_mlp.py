"""profile_pes_mlp: where the milliseconds of a pes_mlp outer step go.

    python benchmarks/profile_pes_mlp.py [--steps 5] [--top 25]

Runs the ``pes_mlp`` workload (see ``pes_mlp.py``) to steady state, then records
``--steps`` outer steps with ``jax.profiler.trace``. XLA's CPU runtime reports
every kernel (thunk) it runs, with its HLO module and instruction; the optimized
HLO (dumped by XLA to a temporary folder) gives each instruction the Python
source line it was traced from. The kernels' time is summed per source file
(the learned optimizer, the inner task, PES, random numbers, ...) and per
instruction, and printed as one JSON line: milliseconds per outer step, and the
share of all kernel time. Kernels on both of XLA's threads are summed, so the
total can exceed the wall time of a step.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import tempfile
import time
from pathlib import Path

_DUMP = tempfile.mkdtemp(prefix="lopt-hlo-")
# Before jax starts its backend: XLA writes every optimized module here.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={_DUMP} --xla_dump_hlo_as_text"
).strip()

_t0 = time.perf_counter()
import jax  # noqa: E402
import pes_mlp  # noqa: E402
import pes_quadratic  # noqa: E402

IMPORT_S = time.perf_counter() - _t0

import _common  # noqa: E402

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*stack_frame_id=(\d+)")
_TABLE_ROW = re.compile(r"^(\d+) (.*)$")
_FIELD = re.compile(r"(\w+)=(\d+)")


def _frames(lines: list[str]) -> dict[int, list[str]]:
    """The module's stack frame table: frame id -> ``file:line`` from innermost outwards."""
    tables: dict[str, dict[int, str]] = collections.defaultdict(dict)
    section = None
    for line in lines:  # each table: its name, then "<id> <fields>" rows, then a blank line
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            section = line
        elif not line:
            section = None
        elif section and (row := _TABLE_ROW.match(line)):
            tables[section][int(row.group(1))] = row.group(2)
    files = {k: v.strip('"') for k, v in tables["FileNames"].items()}
    locations = {}
    for k, v in tables["FileLocations"].items():
        fields = dict(_FIELD.findall(v))
        locations[k] = f"{files.get(int(fields.get('file_name_id', 0)), '?')}:{fields.get('line')}"
    chains: dict[int, list[str]] = {}
    for k in tables["StackFrames"]:
        chain, frame, seen = [], k, set()
        while frame in tables["StackFrames"] and frame not in seen:
            seen.add(frame)
            fields = dict(_FIELD.findall(tables["StackFrames"][frame]))
            chain.append(locations.get(int(fields.get("file_location_id", 0)), "?"))
            frame = int(fields.get("parent_frame_id", 0))
        chains[k] = chain
    return chains


def hlo_sources(dump_dir: str) -> dict[tuple[str, str], list[str]]:
    """``(module, instruction) -> [file:line, ...]`` (innermost first) from XLA's dumps."""
    sources: dict[tuple[str, str], list[str]] = {}
    for path in Path(dump_dir).glob("module_*.cpu_after_optimizations.txt"):
        module = re.sub(r"^module_\d+\.", "", path.name).removesuffix(
            ".cpu_after_optimizations.txt"
        )
        lines = path.read_text().splitlines()
        chains = _frames(lines)
        for line in lines:
            if match := _INSTRUCTION.match(line):
                sources[(module, match.group(1))] = chains.get(int(match.group(2)), ["?"])
    return sources


# Where a kernel's source line lives -> what it is part of (first match wins).
CATEGORIES = (
    ("learned_optimizers/", "learned optimizer (features, per-element MLP, update)"),
    ("lopt_plugins/tasks/", "inner task (forward, backward, loss)"),
    ("flax/", "inner task (forward, backward, loss)"),
    ("optax/", "inner task (forward, backward, loss)"),
    ("jax/_src/random", "random numbers"),
    ("jax/_src/prng", "random numbers"),
    ("outer/pes", "PES (perturbations, accumulators, gradient)"),
    ("outer/estimator", "PES (perturbations, accumulators, gradient)"),
    ("outer/truncated_step", "truncated step (unroll, restarts, meta-loss)"),
    ("outer/unroll", "truncated step (unroll, restarts, meta-loss)"),
    ("outer/learner", "learner (outer Adam, clipping, checks)"),
    ("outer/", "other outer-training code"),
)


def category(chain: list[str]) -> str:
    """What a kernel is part of: the first frame of its stack that names a known place."""
    for source in chain:
        for needle, name in CATEGORIES:
            if needle in source:
                return name
    return "other: " + chain[0].rsplit("/", 1)[-1].split(":")[0]


def kernel_times(trace_dir: str) -> dict[tuple[str, str], float]:
    """Seconds per ``(module, instruction)`` over the whole trace."""
    (trace,) = Path(trace_dir).rglob("*.trace.json.gz")
    events = json.load(gzip.open(trace))["traceEvents"]
    times: dict[tuple[str, str], float] = collections.defaultdict(float)
    for event in events:
        args = event.get("args") or {}
        if event.get("ph") == "X" and "hlo_op" in args:
            times[(args.get("hlo_module", "?"), args["hlo_op"])] += event["dur"] / 1e6
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="outer steps to record")
    parser.add_argument("--top", type=int, default=25, help="instructions to list")
    args = parser.parse_args()
    learner = pes_quadratic.build("pes", pes_mlp.family())
    key = jax.random.PRNGKey(0)
    state = jax.block_until_ready(learner.init(key))
    for step in range(4):  # compile, then settle
        state = jax.block_until_ready(learner.update(state, jax.random.fold_in(key, step)))[0]
    trace_dir = tempfile.mkdtemp(prefix="lopt-trace-")
    t0 = time.perf_counter()
    with jax.profiler.trace(trace_dir):
        for step in range(args.steps):
            step_key = jax.random.fold_in(key, 9 + step)
            state, _ = jax.block_until_ready(learner.update(state, step_key))
    wall_s = (time.perf_counter() - t0) / args.steps
    times = kernel_times(trace_dir)
    sources = hlo_sources(_DUMP)
    total = sum(times.values())
    by_category: dict[str, float] = collections.defaultdict(float)
    by_source: dict[str, float] = collections.defaultdict(float)
    for op, seconds in times.items():
        chain = sources.get(op, ["?"])
        by_category[category(chain)] += seconds
        by_source[chain[0]] += seconds

    def per_step(seconds: float) -> dict:
        return {"ms": round(1e3 * seconds / args.steps, 3), "share": round(seconds / total, 3)}

    ranked = sorted(times.items(), key=lambda kv: -kv[1])[: args.top]
    _common.emit(
        "profile_pes_mlp",
        IMPORT_S,
        steps_recorded=args.steps,
        wall_ms_per_step_while_tracing=round(1e3 * wall_s, 2),
        kernel_ms_per_step=round(1e3 * total / args.steps, 2),
        distinct_kernels=len(times),
        by_category={k: per_step(v) for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])},
        by_source_line={
            k: per_step(v) for k, v in sorted(by_source.items(), key=lambda kv: -kv[1])[: args.top]
        },
        top_kernels=[
            {"module": m, "op": o, "source": sources.get((m, o), ["?"])[0], **per_step(s)}
            for (m, o), s in ranked
        ],
    )


if __name__ == "__main__":
    main()
