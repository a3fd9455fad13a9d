"""lopt's built-in metric writers (plugin kind ``metric_writer``).

- ``tensorboard``: TensorBoard event files through tensorboardX
  (``pip install 'lopt[tensorboard]'``; no TensorFlow), in ``<run>/tensorboard``;
- ``wandb``: a Weights & Biases run (``pip install 'lopt[wandb]'``); with
  ``WANDB_MODE=offline`` it writes ``<run>/wandb/offline-run-*`` and needs no network.

Choose them with ``lopt train ... --log tensorboard --log wandb`` or in gin,
``meta_train.metric_writers = [@tensorboard(), @wandb()]`` (their parameters
as usual: ``wandb.project = 'mine'``). ``metrics.jsonl`` is always written
(``--log jsonl`` names it, and adds nothing). Neither package is imported
before a run opens its writer, so ``lopt plugins`` lists both even when
their packages are missing; a run that asks for a missing one reports what
to install and goes on with the others.
"""

from __future__ import annotations

import lopt_core
from lopt_plugins.metric_writers.tensorboard import TensorBoardWriter
from lopt_plugins.metric_writers.wandb_writer import WandbWriter

# Registered name -> class.
METRIC_WRITERS = {"tensorboard": TensorBoardWriter, "wandb": WandbWriter}


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register ``tensorboard`` and ``wandb``."""
    for name, cls in METRIC_WRITERS.items():
        registry.register("metric_writer", name, cls)
