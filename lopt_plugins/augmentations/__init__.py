"""lopt's built-in task augmentations (plugin kind ``task_augmentation``).

An augmentation wraps a ``TaskFamily`` (or a ``Task``, wrapped first with
``lopt_core.single_task_to_family``) and is itself a ``TaskFamily`` of
perturbed tasks with the same computation graph: its cfg is
``{"inner": <the wrapped cfg>, **its own sampled arrays}``, and its datasets,
normalizer and model state are the wrapped family's. They compose, in Python
or gin: ``@ReparamWeights(family=@SubsampleBatch(family=@ImageMLPInitFamily()))``.

- ``ReparamWeights``: the optimizer sees ``p / s`` for log-uniform scales ``s``
  (one, per tensor or per entry); exact at ``s = 1``.
- ``SubsampleBatch``: the loss averages the first ``ceil(fraction * B)``
  examples of each batch (smaller batches at a static shape).
- ``LossTransform``: ``a * loss + b`` or ``log(loss + eps)``; the normalizer
  inverts it.
- ``GradientNoise``: Gaussian noise added to gradients, loss values unchanged.
- ``LowPrecision``: bfloat16/float16 parameters, or compute.

See ``docs/task_distributions.md`` for parameters, defaults, exactness and costs.
"""

from __future__ import annotations

import lopt_core
from lopt_plugins.augmentations._wrap import AugmentedFamily, AugmentedTask
from lopt_plugins.augmentations.batch import SubsampleBatch
from lopt_plugins.augmentations.loss import LossTransform
from lopt_plugins.augmentations.noise import GradientNoise
from lopt_plugins.augmentations.precision import LowPrecision
from lopt_plugins.augmentations.reparam import ReparamWeights

# Registered name -> class (each under its class name).
AUGMENTATIONS: dict[str, type[AugmentedFamily]] = {
    cls.__name__: cls
    for cls in (ReparamWeights, SubsampleBatch, LossTransform, GradientNoise, LowPrecision)
}


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register every augmentation above as kind ``task_augmentation``."""
    for name, factory in AUGMENTATIONS.items():
        registry.register("task_augmentation", name, factory)


__all__ = [
    "AUGMENTATIONS",
    "AugmentedFamily",
    "AugmentedTask",
    "lopt_register",
    *AUGMENTATIONS,
]
