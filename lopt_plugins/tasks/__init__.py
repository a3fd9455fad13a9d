"""lopt's built-in tasks and task families, registered through the ``lopt`` entry point.

Importing this package builds no data: tasks build their ``Datasets`` when
constructed. See ``docs/tasks.md`` for every task, family, batch shape and
normalizer.
"""

from __future__ import annotations

import lopt_core
from lopt_plugins.tasks import (
    autoencoder,
    char_lm,
    conv,
    image_mlp,
    mixer,
    resnet,
    synthetic,
    tabular,
    transformer_lm,
    vit,
)
from lopt_plugins.tasks._image import ImageClassificationTask
from lopt_plugins.tasks.autoencoder import ImageAutoencoderTask, ImageVAETask
from lopt_plugins.tasks.char_lm import CharLMTask
from lopt_plugins.tasks.conv import ImageConvTask
from lopt_plugins.tasks.families import (
    ImageMLPActivationFamily,
    ImageMLPDataFamily,
    ImageMLPInitFamily,
)
from lopt_plugins.tasks.image_mlp import ImageMLPTask
from lopt_plugins.tasks.mixer import MixerTask
from lopt_plugins.tasks.quadratics import (
    FixedDimQuadraticFamily,
    NoisyConditionedQuadraticFamily,
    QuadraticTask,
)
from lopt_plugins.tasks.resnet import ResNetTask
from lopt_plugins.tasks.tabular import TabularLinearTask, TabularMLPTask
from lopt_plugins.tasks.transformer_lm import TransformerLMTask
from lopt_plugins.tasks.vit import ViTTask

# Registered name -> factory. Presets are classes too, so gin can set their batch_size.
# Each is registered (and exported) under its class name.
TASKS: dict[str, type[lopt_core.Task]] = {
    **{
        cls.__name__: cls
        for cls in (
            QuadraticTask,
            ImageMLPTask,
            ImageConvTask,
            CharLMTask,
            TransformerLMTask,
            TabularMLPTask,
            TabularLinearTask,
            ImageAutoencoderTask,
            ImageVAETask,
            ResNetTask,
            ViTTask,
            MixerTask,
        )
    },
    **image_mlp.PRESETS,
    **conv.PRESETS,
    **char_lm.PRESETS,
    **transformer_lm.PRESETS,
    **tabular.PRESETS,
    **synthetic.PRESETS,
    **autoencoder.PRESETS,
    **resnet.PRESETS,
    **vit.PRESETS,
    **mixer.PRESETS,
}

TASK_FAMILIES: dict[str, type[lopt_core.TaskFamily]] = {
    **{
        cls.__name__: cls
        for cls in (
            FixedDimQuadraticFamily,
            NoisyConditionedQuadraticFamily,
            ImageMLPInitFamily,
            ImageMLPDataFamily,
            ImageMLPActivationFamily,
        )
    },
    **synthetic.FAMILIES,
}

# Presets, importable by name: `from lopt_plugins.tasks import ImageMLP_Digits8_Relu32`.
globals().update(image_mlp.PRESETS)
globals().update(conv.PRESETS)
globals().update(char_lm.PRESETS)
globals().update(transformer_lm.PRESETS)
globals().update(tabular.PRESETS)
globals().update(synthetic.PRESETS)
globals().update(synthetic.FAMILIES)
for _module in (autoencoder, resnet, vit, mixer):
    globals().update(_module.PRESETS)


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register every task (kind ``task``) and task family (kind ``task_family``) above."""
    for name, factory in TASKS.items():
        registry.register("task", name, factory)
    for name, factory in TASK_FAMILIES.items():
        registry.register("task_family", name, factory)


__all__ = [
    "TASKS",
    "TASK_FAMILIES",
    "ImageClassificationTask",
    "lopt_register",
    *TASKS,
    *TASK_FAMILIES,
]
