"""Score learned optimizers on a suite's inner_valid split: how to choose one without test.

    python tools/choose_on_inner_valid.py                          # the shipped pretrained ones
    python tools/choose_on_inner_valid.py runs/a runs/b --suite small --checkpoint best

Each candidate (every shipped pretrained optimizer, then each run folder's checkpoint) is
benched with ``bench(..., split="inner_valid")``: normalized score IQM with its 95%
interval, then per task; the baselines' own inner_valid scores come first. A run folder's
theta is loaded into the architecture of the pretrained optimizer ``--like`` names
(default ``residual_adam_mix_v1``). Prints plain text; nothing is written.
"""

from __future__ import annotations

import argparse

import jax

from lopt_core.bench.baselines import BASELINES
from lopt_core.bench.runner import Candidate, aggregate, bench
from lopt_core.outer.checkpoints import load_theta
from lopt_core.pretrained_optimizers import load_pretrained
from lopt_core.registry import get_registry


def _line(name: str, agg: dict) -> str:
    low, high = agg["normalized_ci95"]
    return f"{name:40s} {agg['normalized_iqm']:.3f} [{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="lopt train run folders")
    parser.add_argument("--suite", default="small")
    parser.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    parser.add_argument(
        "--like", default="residual_adam_mix_v1", help="the run folders' architecture"
    )
    args = parser.parse_args()

    candidates = []
    for name in get_registry().names("pretrained"):
        pretrained = load_pretrained(name)
        candidates.append(Candidate.of(pretrained.learned_optimizer, pretrained.theta(), name=name))
    learned = load_pretrained(args.like).learned_optimizer
    for run in args.runs:
        path = f"{run}/checkpoints/{args.checkpoint}.msgpack"
        theta, _ = load_theta(path, learned.init(jax.random.PRNGKey(0)))
        candidates.append(Candidate.of(learned, theta, name=run.rstrip("/").split("/")[-1]))

    for i, candidate in enumerate(candidates):
        results = bench(candidate, args.suite, progress=False, split="inner_valid")
        names = [candidate.name] + ([b.name for b in BASELINES] if i == 0 else [])
        scores = aggregate(results, names)
        if i == 0:
            print(f"{args.suite}, inner_valid split: normalized score IQM [95% CI]")
            for name in names[1:]:
                print(_line(name, scores[name]))
        print(_line(candidate.name, scores[candidate.name]))
        per_task = ", ".join(
            f"{r.task.label} {r.normalized(candidate.name):.3f}" for r in results if not r.skipped
        )
        print(f"    {per_task}", flush=True)


if __name__ == "__main__":
    main()
