"""import_cost: seconds and peak RSS to import jax, and lopt's core plus every built-in plugin.

Each figure is the median over ``RUNS`` fresh Python processes. "lopt" imports
``lopt_core`` and loads the plugin registry (``get_registry()``: every entry
point of the ``lopt`` group, i.e. all built-in tasks, datasets, optimizers and
learned optimizers). Prints one JSON line.
"""

import json
import statistics
import subprocess
import sys

import _common

RUNS = 5
_CHILD = """
import resource, time, json
t0 = time.perf_counter()
{body}
s = time.perf_counter() - t0
print(json.dumps({{"s": s, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
BODIES = {
    "bare_python": "pass",
    "jax_only": "import jax",
    "lopt_core_and_plugins": (
        "import lopt_core\n"
        "from lopt_core.registry import get_registry\n"
        "registry = get_registry()\n"
        "registry.raise_for_failures()\n"
        "assert registry.names('learned_optimizer') and registry.names('task')"
    ),
}


def measure(body: str) -> dict:
    rows = []
    for _ in range(RUNS):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD.format(body=body)], capture_output=True, text=True
        )
        if out.returncode:  # e.g. lopt used from a checkout, not installed: no entry points
            return {"error": out.stderr.strip().splitlines()[-1][:300]}
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "s": round(statistics.median(r["s"] for r in rows), 4),
        "rss_mib": round(statistics.median(r["rss_mib"] for r in rows), 1),
    }


def main() -> None:
    results = {name: measure(body) for name, body in BODIES.items()}
    _common.emit("import_cost", 0.0, runs=RUNS, **results)


if __name__ == "__main__":
    main()
