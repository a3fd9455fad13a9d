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
from lopt_core.outer.learner import GradientLearner, LearnerState
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
    "GradientLearner",
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
