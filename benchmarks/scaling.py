"""scaling: one point of the scaling benchmark, the pes_mlp workload at another size.

    python benchmarks/scaling.py --num-tasks 64 --hidden 32 [--steps 7]

``pes_mlp`` (MLPLOpt meta-trained with TruncatedPES, trunc 10, on the synthetic
64 -> H relu -> 10 classifier) with ``num_tasks`` task slots (2 PES particles
each) and ``H`` hidden units: the inner model has ``75 H + 10`` parameters
(H = 13, 133, 1333, 13333 give about 1e3, 1e4, 1e5, 1e6). Prints one JSON line:
``_common.outer_loop``'s fields (the first outer step, which compiles, and the median
of the steady steps, 3rd on, in wall and process-CPU seconds) and the process's peak
RSS. ``scaling_sweep.py`` runs the grid, one fresh process per point, and plots it.
"""

import argparse
import time

_t0 = time.perf_counter()
import pes_mlp  # noqa: E402
import pes_quadratic  # noqa: E402

IMPORT_S = time.perf_counter() - _t0

import _common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-tasks", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--steps", type=int, default=7, help="outer steps (>= 3)")
    parser.add_argument(
        "--group-elements",
        default="default",
        help="the truncated step's group_elements: an int, 'none', or 'default'",
    )
    args = parser.parse_args()
    step_kwargs = {}
    if args.group_elements != "default":
        none = args.group_elements == "none"
        step_kwargs["group_elements"] = None if none else int(args.group_elements)
    learner = pes_quadratic.build(
        "pes", pes_mlp.family(args.hidden), num_tasks=args.num_tasks, **step_kwargs
    )
    _common.emit(
        "scaling",
        IMPORT_S,
        library="lopt",
        num_tasks=args.num_tasks,
        hidden=args.hidden,
        inner_params=75 * args.hidden + 10,
        group_elements=args.group_elements,
        **_common.outer_loop(learner, num_steps=max(3, args.steps)),
    )


if __name__ == "__main__":
    main()
