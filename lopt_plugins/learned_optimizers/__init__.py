"""Built-in learned optimizers, registered as ``learned_optimizer`` plugins."""

from __future__ import annotations

import lopt_core
from lopt_plugins.learned_optimizers.adafac_mlp_lopt import AdafacMLPLOpt
from lopt_plugins.learned_optimizers.hyper_param import LearnableAdam, LearnableSGD, LearnableSGDM
from lopt_plugins.learned_optimizers.mlp_lopt import MLPLOpt

__all__ = ["AdafacMLPLOpt", "LearnableAdam", "LearnableSGD", "LearnableSGDM", "MLPLOpt"]


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register every built-in learned optimizer under its class name."""
    for cls in (LearnableSGD, LearnableSGDM, LearnableAdam, MLPLOpt, AdafacMLPLOpt):
        registry.register("learned_optimizer", cls.__name__, cls)
