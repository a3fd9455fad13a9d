"""Registers the core's hand-designed optimizers under their class names."""

from __future__ import annotations

import lopt_core
from lopt_core import optimizers


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register ``SGD``, ``SGDM``, ``Adam``, ``RMSProp``, ``AdamW``, ``WarmupCosineAdamW``
    and ``OptaxOptimizer``."""
    names = ("SGD", "SGDM", "Adam", "RMSProp", "AdamW", "WarmupCosineAdamW", "OptaxOptimizer")
    for name in names:
        registry.register("optimizer", name, getattr(optimizers, name))
