"""pes_quadratic: meta-train MLPLOpt with truncated PES on FixedDimQuadraticFamily(10).

num_tasks=8, ConstantTruncationSchedule(50), random initial offsets up to 50,
TruncatedPES(trunc_length=10, std=0.01), outer Adam(1e-3), 200 outer steps.
Prints one JSON line (see benchmarks/README.md).
"""

import time

_t0 = time.perf_counter()
import optax  # noqa: E402

from lopt_core.outer import (  # noqa: E402
    ConstantTruncationSchedule,
    GradientLearner,
    TruncatedPES,
    VectorizedLOptTruncatedStep,
)
from lopt_plugins.learned_optimizers import MLPLOpt  # noqa: E402
from lopt_plugins.tasks import FixedDimQuadraticFamily  # noqa: E402

IMPORT_S = time.perf_counter() - _t0

import _common  # noqa: E402


def build(
    estimator: str = "pes", family=None, num_tasks: int = 8, **step_kwargs
) -> GradientLearner:
    """The learner of this benchmark (``estimator``: "pes" or "full_es"; ``step_kwargs`` go
    to the truncated step)."""
    from lopt_core.outer import FullES

    lopt = MLPLOpt()
    family = FixedDimQuadraticFamily(10) if family is None else family
    step = VectorizedLOptTruncatedStep(
        family,
        lopt,
        ConstantTruncationSchedule(50),
        num_tasks=num_tasks,
        random_initial_iteration_offset=50 if estimator == "pes" else 0,
        **step_kwargs,
    )
    if estimator == "pes":
        est = TruncatedPES(step, trunc_length=10, std=0.01)
    else:
        est = FullES(step, std=0.01, loss_type="avg")
    return GradientLearner(lopt, [est], optax.adam(1e-3))


def main(name: str = "pes_quadratic", estimator: str = "pes", family=None) -> None:
    learner = build(estimator, family)
    _common.emit(name, IMPORT_S, **_common.outer_loop(learner, num_steps=200))


if __name__ == "__main__":
    main()
