"""lopt_core: the protocols and engines of lopt, a plugin-based learned-optimizer library.

The names here are the ones the docs use. Meta-training (``meta_train``,
``lopt_core.outer``) and the pretrained optimizers (``pretrained``,
``load_pretrained``) are imported on first use, so ``import lopt_core`` stays light.
"""

from lopt_core.datasets import (
    SPLITS,
    Datasets,
    clear_dataset_cache,
    dataset_lru_cache,
    fresh_datasets,
    stack_batches,
    stack_task_batches,
)
from lopt_core.hookspecs import hookimpl
from lopt_core.learned import LearnedOptimizer, MetaParams, to_optax
from lopt_core.model_tasks import FunctionTask, InitScaleFamily, LinenTask, NNXTask
from lopt_core.optimizers import (
    SGD,
    SGDM,
    Adam,
    AdamW,
    OptaxOptimizer,
    OptaxState,
    Optimizer,
    RMSProp,
)
from lopt_core.registry import (
    KINDS,
    PluginConflictError,
    PluginLoadError,
    PluginLoadWarning,
    RegistrationError,
    Registry,
    RegistryError,
    UnknownEntryError,
    UnknownKindError,
    get_registry,
    reset_registry,
)
from lopt_core.static_graph import StaticGraphError, sample_cfgs
from lopt_core.tasks import Task, TaskFamily, single_task_to_family
from lopt_core.training import TrainResult, draw_family_batches, train, train_family
from lopt_core.version import __version__

__all__ = [
    "KINDS",
    "LearnedOptimizer",
    "MetaParams",
    "meta_train",
    "pretrained",
    "load_pretrained",
    "to_optax",
    "PluginConflictError",
    "PluginLoadError",
    "PluginLoadWarning",
    "RegistrationError",
    "Registry",
    "RegistryError",
    "UnknownEntryError",
    "UnknownKindError",
    "get_registry",
    "reset_registry",
    "SGD",
    "SGDM",
    "SPLITS",
    "Adam",
    "AdamW",
    "Datasets",
    "FunctionTask",
    "InitScaleFamily",
    "LinenTask",
    "NNXTask",
    "OptaxOptimizer",
    "OptaxState",
    "Optimizer",
    "RMSProp",
    "StaticGraphError",
    "Task",
    "TaskFamily",
    "TrainResult",
    "__version__",
    "clear_dataset_cache",
    "dataset_lru_cache",
    "draw_family_batches",
    "fresh_datasets",
    "hookimpl",
    "sample_cfgs",
    "single_task_to_family",
    "stack_batches",
    "stack_task_batches",
    "train",
    "train_family",
]


def __getattr__(name: str):
    # Meta-training pulls in the whole outer engine: imported when first asked for.
    if name == "meta_train":
        from lopt_core.outer.run import meta_train

        return meta_train
    if name in ("pretrained", "load_pretrained"):
        from lopt_core import pretrained_optimizers as module

        return getattr(module, name)
    raise AttributeError(f"module 'lopt_core' has no attribute {name!r}")
