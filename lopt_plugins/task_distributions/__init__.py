"""lopt's built-in task distributions (kind ``task_distribution``), registered by entry point.

- ``FamilyMixture`` (from ``lopt_core``): a fixed list of families;
- ``ImageMLPDistribution``, ``ConvNetDistribution``, ``ImageTaskDistribution``
  (either), ``CharLMDistribution``: sampled architectures within a cost bound;
- ``DistributionMixture`` and ``AugmentedDistribution``: built from others.

See docs/task_distributions.md.
"""

from __future__ import annotations

import lopt_core
from lopt_core.task_distributions import FamilyMixture, TaskDistribution
from lopt_plugins.task_distributions._sampling import BoundedDistribution, Cost
from lopt_plugins.task_distributions.char_lm import CharLMDistribution
from lopt_plugins.task_distributions.image import (
    ConvNetDistribution,
    ImageMLPDistribution,
    ImageTaskDistribution,
)
from lopt_plugins.task_distributions.image_zoo import DISTRIBUTIONS as IMAGE_ZOO
from lopt_plugins.task_distributions.mixture import AugmentedDistribution, DistributionMixture
from lopt_plugins.task_distributions.transformer_lm import TransformerLMDistribution
from lopt_plugins.tasks.synthetic import SyntheticDistribution

DISTRIBUTIONS: dict[str, type[TaskDistribution]] = {
    **{
        cls.__name__: cls
        for cls in (
            FamilyMixture,
            DistributionMixture,
            AugmentedDistribution,
            ImageMLPDistribution,
            ConvNetDistribution,
            ImageTaskDistribution,
            CharLMDistribution,
            TransformerLMDistribution,
            SyntheticDistribution,
        )
    },
    **IMAGE_ZOO,
}


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register every distribution above (kind ``task_distribution``)."""
    for name, factory in DISTRIBUTIONS.items():
        registry.register("task_distribution", name, factory)


__all__ = ["DISTRIBUTIONS", "BoundedDistribution", "Cost", "lopt_register", *DISTRIBUTIONS]
