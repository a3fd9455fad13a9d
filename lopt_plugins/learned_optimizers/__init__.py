"""Built-in learned optimizers, registered as ``learned_optimizer`` plugins."""

from __future__ import annotations

import lopt_core
from lopt_plugins.learned_optimizers.adafac_mlp_lopt import AdafacMLPLOpt
from lopt_plugins.learned_optimizers.hyper_param import LearnableAdam, LearnableSGD, LearnableSGDM
from lopt_plugins.learned_optimizers.mlp_lopt import MLPLOpt
from lopt_plugins.learned_optimizers.normalized_mlp import NormalizedMLPLOpt
from lopt_plugins.learned_optimizers.residual_adam import ResidualAdamLOpt

__all__ = [
    "AdafacMLPLOpt",
    "LearnableAdam",
    "LearnableSGD",
    "LearnableSGDM",
    "MLPLOpt",
    "NormalizedMLPLOpt",
    "ResidualAdamLOpt",
]


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register every built-in learned optimizer under its class name."""
    learned = (
        LearnableSGD,
        LearnableSGDM,
        LearnableAdam,
        MLPLOpt,
        AdafacMLPLOpt,
        ResidualAdamLOpt,
        NormalizedMLPLOpt,
    )
    for cls in learned:
        registry.register("learned_optimizer", cls.__name__, cls)
