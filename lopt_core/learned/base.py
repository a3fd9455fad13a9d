"""The ``LearnedOptimizer`` protocol: meta-parameters ``theta`` and the optimizer they define."""

from __future__ import annotations

from typing import Any

import jax

from lopt_core.optimizers.base import Optimizer

MetaParams = Any


class LearnedOptimizer:
    """An optimizer family indexed by meta-parameters ``theta``.

    ``init(key)`` draws initial meta-parameters; ``opt_fn(theta)`` returns the
    ``Optimizer`` they define. ``theta`` is a pytree of arrays, so meta-training
    can differentiate through, perturb and vmap over it.
    """

    @property
    def name(self) -> str:
        """A readable name; the class name unless a subclass says otherwise."""
        return type(self).__name__

    def init(self, key: jax.Array) -> MetaParams:
        """Initial meta-parameters."""
        raise NotImplementedError(f"{type(self).__name__} must implement init(key) -> theta.")

    def opt_fn(self, theta: MetaParams, is_training: bool = False) -> Optimizer:
        """The optimizer defined by ``theta``; ``is_training`` is True during meta-training."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement opt_fn(theta, is_training=False) -> Optimizer."
        )

    def __repr__(self) -> str:
        return f"<LearnedOptimizer {self.name}>"
