"""Learned optimizers: the ``LearnedOptimizer`` protocol and its optax export."""

from lopt_core.learned.base import LearnedOptimizer, MetaParams
from lopt_core.learned.to_optax import LearnedOptaxState, to_optax

__all__ = ["LearnedOptaxState", "LearnedOptimizer", "MetaParams", "to_optax"]
