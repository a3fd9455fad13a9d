"""Meta-training's engine: truncation schedules, the vectorized truncated step, gradient
estimators, the learner, workers, executors, the run's settings and its run loop.

The entry point, ``meta_train``, is ``lopt_core.meta_train`` (``lopt_core.outer.run``;
``lopt_core.outer.meta_train`` is its old module path). It is not imported here:
``lopt_core.distributed`` builds on this package, and the entry point on both.
"""

from lopt_core.outer.executors import MODES, Executor, LocalExecutor, PoolExecutor
from lopt_core.outer.gradient_estimators import (
    EmptyWorkerState,
    FullES,
    GradientEstimate,
    GradientEstimator,
    PESWorkerState,
    TruncatedGrad,
    TruncatedPES,
    sample_perturbations,
)
from lopt_core.outer.learner import GradientLearner, LearnerState
from lopt_core.outer.run_loop import MetaTrainResult, RunLoop
from lopt_core.outer.settings import LearnerSpec, RunSettings, WorkerSettings, build_learner
from lopt_core.outer.truncated_step import InnerState, UnrollOutput, VectorizedLOptTruncatedStep
from lopt_core.outer.truncation_schedules import (
    ConstantTruncationSchedule,
    LogUniformLengthSchedule,
    NeverEndingTruncationSchedule,
    TruncationSchedule,
)
from lopt_core.outer.workers import (
    GradientWorker,
    InProcessWorkers,
    WorkerJob,
    WorkerLost,
    WorkerPool,
    WorkerResult,
    WorkersFailed,
)

__all__ = [
    "MODES",
    "ConstantTruncationSchedule",
    "EmptyWorkerState",
    "Executor",
    "FullES",
    "GradientEstimate",
    "GradientEstimator",
    "GradientLearner",
    "GradientWorker",
    "InProcessWorkers",
    "InnerState",
    "LearnerSpec",
    "LearnerState",
    "LocalExecutor",
    "LogUniformLengthSchedule",
    "MetaTrainResult",
    "NeverEndingTruncationSchedule",
    "PESWorkerState",
    "PoolExecutor",
    "RunLoop",
    "RunSettings",
    "TruncatedGrad",
    "TruncatedPES",
    "TruncationSchedule",
    "UnrollOutput",
    "VectorizedLOptTruncatedStep",
    "WorkerJob",
    "WorkerLost",
    "WorkerPool",
    "WorkerResult",
    "WorkerSettings",
    "WorkersFailed",
    "build_learner",
    "sample_perturbations",
]
