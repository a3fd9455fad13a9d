"""Optimizers: the ``Optimizer`` protocol, hand-designed ones, and the optax adapter."""

from lopt_core.optimizers.base import Optimizer
from lopt_core.optimizers.hand_designed import (
    SGD,
    SGDM,
    Adam,
    AdamW,
    RMSProp,
    WarmupCosineAdamW,
)
from lopt_core.optimizers.optax_adapter import OptaxOptimizer, OptaxState

__all__ = [
    "SGD",
    "SGDM",
    "Adam",
    "AdamW",
    "OptaxOptimizer",
    "OptaxState",
    "Optimizer",
    "RMSProp",
    "WarmupCosineAdamW",
]
