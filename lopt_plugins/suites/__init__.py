"""lopt's built-in evaluation suites (kind ``suite``), registered by entry point.

- ``tiny``: four quick tasks (a digits MLP, teacher-student regression, an MLP
  autoencoder, logistic regression); about a minute with the shipped baselines,
  what CI and a quick check use (not held out: the digits MLP is the quickstart's
  kind of task);
- ``small``: twelve tasks across the zoo's kinds (transformer and LSTM LMs,
  autoencoder, VAE, batch-norm ResNet, ViT, MLP-Mixer, tabular, synthetic), all
  held out from the built-in meta-training recipes (tested);
- ``zoo``: every built-in task preset (tasks whose data is not on the machine
  are skipped, saying why); its baselines are not shipped.

The shipped baselines of ``tiny`` and ``small`` are in ``baselines/``
(``lopt bench --suite NAME --baselines-only --archive lopt_plugins/suites/baselines``
rebuilds them). See docs/bench.md.
"""

from __future__ import annotations

from pathlib import Path

import lopt_core
from lopt_core.bench import Suite, SuiteTask

SHIPPED = Path(__file__).parent / "baselines"

TINY = (
    SuiteTask("ImageMLP_Digits8_Relu64x32", steps=150, seeds=3),
    SuiteTask("TeacherStudent_Dim8_Relu32", steps=150, seeds=3),
    SuiteTask("ImageMLPAE_Digits8_32x8x32", steps=150, seeds=3),
    SuiteTask("Logistic_Iris", steps=150, seeds=3),
)

SMALL = (
    SuiteTask("TransformerLM_Text_L1_D16_H2", steps=200, seeds=3),
    SuiteTask("CharLM_Text_LSTM64", steps=200, seeds=3),
    SuiteTask("ImageMLPAE_Digits8_32x8x32", steps=300, seeds=3),
    SuiteTask("ImageMLPVAE_Digits8_32x32x8", steps=300, seeds=3),
    SuiteTask("ResNet_Digits8_BN_8x16", steps=200, seeds=3),
    SuiteTask("ViT_Digits8_P2_D2_W32_H2", steps=200, seeds=3),
    SuiteTask("Mixer_Digits8_P2_D2_W32_T32_C64", steps=200, seeds=3),
    SuiteTask("TabularMLP_BreastCancer_Relu64x32", steps=300, seeds=3),
    SuiteTask("Linear_Diabetes", steps=300, seeds=3),
    SuiteTask("Logistic_Iris", steps=300, seeds=3),
    SuiteTask("TeacherStudent_Dim8_Relu32", steps=300, seeds=3),
    SuiteTask("LeastSquares_Dim32_Cond1e3", steps=300, seeds=3),
)

# The generic task classes need arguments; everything else registered as a task is a preset.
GENERIC_TASKS = frozenset(
    {
        "CharLMTask", "ImageAutoencoderTask", "ImageConvTask", "ImageMLPTask", "ImageVAETask",
        "MixerTask", "QuadraticTask", "ResNetTask", "TabularLinearTask", "TabularMLPTask",
        "TransformerLMTask", "ViTTask",
    }
)  # fmt: skip


def tiny() -> Suite:
    """Four quick tasks: a smoke test of an optimizer, with shipped baselines."""
    return Suite("tiny", TINY, 1, tiny.__doc__, SHIPPED)


def small() -> Suite:
    """Twelve tasks across the zoo's kinds, held out from the built-in recipes."""
    return Suite("small", SMALL, 1, small.__doc__, SHIPPED, held_out=True)


def zoo() -> Suite:
    """Every built-in task preset, 200 steps and 2 runs each (baselines not shipped)."""
    from lopt_core.registry import get_registry

    registry = get_registry()
    names = [
        entry.name
        for entry in registry.entries("task")
        if entry.distribution == "lopt" and entry.name not in GENERIC_TASKS
    ]
    return Suite("zoo", [SuiteTask(n, steps=200, seeds=2) for n in names], 1, zoo.__doc__)


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register the ``tiny``, ``small`` and ``zoo`` suites."""
    for factory in (tiny, small, zoo):
        registry.register("suite", factory.__name__, factory)
