"""The old import path of meta-training's entry point, kept so that existing code runs.

``from lopt_core.outer.meta_train import meta_train`` still works; new code
writes ``from lopt_core import meta_train`` (the function lives in
``lopt_core.outer.run``; the run loop in ``lopt_core.outer.run_loop``).
"""

from lopt_core.outer.run import meta_train, objects_recipe, run_meta_training
from lopt_core.outer.run_dir import (
    BEST,
    CHECKPOINT_DIR,
    LATEST,
    METRICS_FILE,
    OPERATIVE_CONFIG_FILE,
    VALIDATION_FILE,
)
from lopt_core.outer.run_loop import MetaTrainResult
from lopt_core.outer.settings import build_learner

__all__ = [
    "BEST",
    "CHECKPOINT_DIR",
    "LATEST",
    "METRICS_FILE",
    "OPERATIVE_CONFIG_FILE",
    "VALIDATION_FILE",
    "MetaTrainResult",
    "build_learner",
    "meta_train",
    "objects_recipe",
    "run_meta_training",
]
