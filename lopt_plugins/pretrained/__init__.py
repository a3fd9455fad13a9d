"""lopt's pretrained learned optimizers (kind ``pretrained``), registered by entry point.

- ``normalized_mlp_v1``: ``NormalizedMLPLOpt`` meta-trained by ``gin/normalized_pes.gin``
  (card: ``normalized_mlp_v1.md`` next to this file; docs/pretrained.md).

Use one with ``tx = lopt_core.pretrained("normalized_mlp_v1")``.
"""

from __future__ import annotations

from pathlib import Path

import lopt_core
from lopt_core.pretrained_optimizers import Pretrained
from lopt_plugins.learned_optimizers import NormalizedMLPLOpt

HERE = Path(__file__).parent


def normalized_mlp_v1() -> Pretrained:
    """NormalizedMLPLOpt meta-trained with PES on small image MLPs, conv nets and GRU LMs."""
    # The constructor arguments of the recipe: theta's offsets are relative to them.
    learned = NormalizedMLPLOpt(initial_lr=1e-2, initial_weight_decay=1e-3)
    return Pretrained(
        "normalized_mlp_v1",
        learned,
        HERE / "normalized_mlp_v1.msgpack",
        HERE / "normalized_mlp_v1.md",
    )


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register ``normalized_mlp_v1``."""
    registry.register("pretrained", "normalized_mlp_v1", normalized_mlp_v1)
