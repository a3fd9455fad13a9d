"""Meta-training: truncation schedules, the vectorized truncated step, gradient estimators,
the learner, workers and executors, and the run (``meta_train``)."""

# The old module path `lopt_core.outer.meta_train` is loaded first, so that the name
# `lopt_core.outer.meta_train` below is the function, and stays the function when
# someone later imports the old path (Python sets a package attribute only when it
# first loads a submodule).
from lopt_core.outer import meta_train as _old_meta_train_path  # noqa: F401
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
from lopt_core.outer.run import meta_train, run_meta_training
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
    "meta_train",
    "run_meta_training",
    "sample_perturbations",
]
