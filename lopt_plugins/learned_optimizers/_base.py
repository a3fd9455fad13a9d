"""What the built-in learned optimizers' ``Optimizer`` classes share."""

from __future__ import annotations

from typing import Any

from lopt_core.learned import LearnedOptimizer
from lopt_core.optimizers import Optimizer


class ThetaOptimizer(Optimizer):
    """The ``Optimizer`` that meta-parameters ``theta`` of learned optimizer ``lopt`` define.

    ``lopt`` holds the settings and networks, ``theta`` their weights; subclasses
    implement ``init`` and ``update`` and set ``lopt_name``, their name (that of
    the learned optimizer, whatever subclass of it made them).
    """

    lopt_name: str = "LearnedOptimizer"

    def __init__(self, lopt: LearnedOptimizer, theta: Any):
        self.lopt = lopt
        self.theta = theta

    @property
    def name(self) -> str:
        """``lopt_name``: e.g. ``MLPLOpt``."""
        return self.lopt_name
