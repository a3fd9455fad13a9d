"""lopt's pretrained learned optimizers (kind ``pretrained``), registered by entry point.

- ``residual_adam_mix_v1``: ``ResidualAdamLOpt`` meta-trained by ``gin/mixture_pes.gin``
  across small MLPs, conv nets and GRU LMs (the general-purpose default);
- ``normalized_mlp_v1``: ``NormalizedMLPLOpt`` meta-trained by ``gin/normalized_pes.gin``.

Each has a model card next to this file (``<name>.md``): architecture, recipe, commit,
meta-training time and machine, ``lopt bench`` scores. Use one with
``tx = lopt_core.pretrained("residual_adam_mix_v1")``; docs/pretrained.md.
"""

from __future__ import annotations

from pathlib import Path

import lopt_core
from lopt_core.pretrained_optimizers import Pretrained
from lopt_plugins.learned_optimizers import NormalizedMLPLOpt, ResidualAdamLOpt

HERE = Path(__file__).parent


def _shipped(name: str, learned) -> Pretrained:
    return Pretrained(name, learned, HERE / f"{name}.msgpack", HERE / f"{name}.md")


# The constructor arguments are the recipe's: a theta's hyper-parameters are offsets from them.
def residual_adam_mix_v1() -> Pretrained:
    """ResidualAdamLOpt meta-trained with PES across small MLPs, conv nets and GRU LMs."""
    return _shipped("residual_adam_mix_v1", ResidualAdamLOpt(initial_weight_decay=1e-2))


def normalized_mlp_v1() -> Pretrained:
    """NormalizedMLPLOpt meta-trained with PES on small image MLPs, conv nets and GRU LMs."""
    return _shipped(
        "normalized_mlp_v1", NormalizedMLPLOpt(initial_lr=1e-2, initial_weight_decay=1e-3)
    )


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register ``residual_adam_mix_v1`` and ``normalized_mlp_v1``."""
    for factory in (residual_adam_mix_v1, normalized_mlp_v1):
        registry.register("pretrained", factory.__name__, factory)
