"""Registers the core's hand-designed optimizers under their class names."""

from __future__ import annotations

import lopt_core
from lopt_core import optimizers


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register ``SGD``, ``SGDM``, ``Adam``, ``RMSProp``, ``AdamW`` and ``OptaxOptimizer``."""
    for name in ("SGD", "SGDM", "Adam", "RMSProp", "AdamW", "OptaxOptimizer"):
        registry.register("optimizer", name, getattr(optimizers, name))
