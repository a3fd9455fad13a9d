"""Meta-training: truncation schedules, the vectorized truncated step, estimators, learner."""

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
from lopt_core.outer.learner import (
    Executor,
    GradientLearner,
    GradientWorker,
    InProcessWorkers,
    LearnerState,
    LocalExecutor,
    PoolExecutor,
    WorkerJob,
    WorkerLost,
    WorkerPool,
    WorkerResult,
    WorkersFailed,
)
from lopt_core.outer.truncated_step import InnerState, UnrollOutput, VectorizedLOptTruncatedStep
from lopt_core.outer.truncation_schedules import (
    ConstantTruncationSchedule,
    LogUniformLengthSchedule,
    NeverEndingTruncationSchedule,
    TruncationSchedule,
)

__all__ = [
    "ConstantTruncationSchedule",
    "EmptyWorkerState",
    "FullES",
    "GradientEstimate",
    "GradientEstimator",
    "Executor",
    "GradientLearner",
    "GradientWorker",
    "InProcessWorkers",
    "LocalExecutor",
    "PoolExecutor",
    "WorkerJob",
    "WorkerLost",
    "WorkerPool",
    "WorkerResult",
    "WorkersFailed",
    "InnerState",
    "LearnerState",
    "LogUniformLengthSchedule",
    "NeverEndingTruncationSchedule",
    "PESWorkerState",
    "TruncatedGrad",
    "TruncatedPES",
    "TruncationSchedule",
    "UnrollOutput",
    "VectorizedLOptTruncatedStep",
    "sample_perturbations",
]
