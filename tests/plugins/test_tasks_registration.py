"""Tests that lopt_plugins.tasks registers every task and family, and builds no data doing so."""

from __future__ import annotations

import importlib.metadata
import inspect

import pytest

import lopt_core
import lopt_plugins.tasks as tasks_plugin

EXPECTED_TASKS = {
    "QuadraticTask",
    "ImageMLPTask",
    "ImageConvTask",
    "CharLMTask",
    "ImageMLP_Digits8_Relu32",
    "ImageMLP_Digits8_Relu64x32",
    "ImageMLP_Digits8_Tanh32",
    "ImageMLP_Mnist8_Relu32",
    "ImageMLP_FashionMnist8_Relu32",
    "ImageMLP_Kmnist8_Relu32",
    "ImageMLP_Mnist_Relu128x128",
    "ImageMLP_FashionMnist_Relu128x128",
    "ImageMLP_Cifar10_8_Relu32",
    "ImageMLP_Cifar10_Relu128x128",
    "Conv_Digits8_8x16",
    "Conv_Mnist8_8x16",
    "Conv_Mnist_16x32",
    "Conv_FashionMnist_16x32",
    "Conv_Kmnist_16x32",
    "Conv_Cifar10_8_16x32",
    "Conv_Cifar10_32x64x64",
    "CharLM_Text_LSTM64",
    "CharLM_Text_GRU64",
    "CharLM_Text_LSTM64x2",
    "CharLM_Text_LSTM128x2",
    "CharLM_Text_GRU64x3",
    "CharLM_Text_GRU128x2",
    "TransformerLMTask",
    "TransformerLM_Text_L1_D16_H2",
    "TransformerLM_Text_L2_D32_H2",
    "TransformerLM_Text_L4_D64_H4",
    "TransformerLM_Text_L4_D128_H8",
    "TabularMLPTask",
    "TabularLinearTask",
    "TabularMLP_Wine_Relu32",
    "TabularMLP_Iris_Relu16",
    "TabularMLP_BreastCancer_Relu64x32",
    "TabularMLP_Diabetes_Relu64",
    "Logistic_Wine",
    "Logistic_Iris",
    "Logistic_BreastCancer",
    "Linear_Diabetes",
    "TeacherStudent_Dim8_Relu32",
    "LeastSquares_Dim32_Cond1e3",
    "LogisticRegression_Dim16",
    "Rosenbrock_Dim10",
    "Rastrigin_Dim10",
    "ImageAutoencoderTask",
    "ImageVAETask",
    "ResNetTask",
    "ViTTask",
    "MixerTask",
    "ImageMLPAE_Digits8_32x8x32",
    "ImageMLPAE_Mnist_128x32x128",
    "ImageMLPAE_FashionMnist_128x32x128",
    "ImageMLPVAE_Digits8_32x32x8",
    "ImageMLPVAE_Mnist_128x128x32",
    "ImageMLPVAE_FashionMnist_128x128x32",
    "ResNet_Digits8_BN_8x16",
    "ResNet_Digits8_LN_8x16",
    "ResNet_Digits16_BN_8x16x32",
    "ResNet_Mnist_BN_16x32x64",
    "ResNet_Cifar10_BN_16x32x64",
    "ResNet_Cifar10_LN_16x32x64",
    "ViT_Digits8_P2_D2_W32_H2",
    "ViT_Digits16_P4_D2_W32_H2",
    "ViT_Mnist_P4_D4_W64_H4",
    "ViT_Cifar10_P4_D4_W64_H4",
    "Mixer_Digits8_P2_D2_W32_T32_C64",
    "Mixer_Digits16_P4_D2_W32_T32_C64",
    "Mixer_Mnist_P4_D4_W64_T64_C128",
    "Mixer_Cifar10_P4_D4_W64_T64_C128",
}
EXPECTED_FAMILIES = {
    "FixedDimQuadraticFamily",
    "NoisyConditionedQuadraticFamily",
    "ImageMLPInitFamily",
    "ImageMLPDataFamily",
    "ImageMLPActivationFamily",
    "TeacherStudentFamily",
    "LeastSquaresFamily",
    "LogisticRegressionFamily",
    "RosenbrockFamily",
    "RastriginFamily",
}


class RecordingRegistry:
    """Records ``register`` calls, as the real registry's plugin side receives them."""

    def __init__(self):
        self.calls: list[tuple[str, str, object]] = []

    def register(self, kind, name, factory):
        self.calls.append((kind, name, factory))


def test_hook_registers_every_task_and_family_once():
    registry = RecordingRegistry()
    lopt_core.clear_dataset_cache()
    tasks_plugin.lopt_register(registry)
    names = [(kind, name) for kind, name, _ in registry.calls]
    assert len(names) == len(set(names))
    assert {n for k, n in names if k == "task"} == EXPECTED_TASKS
    assert {n for k, n in names if k == "task_family"} == EXPECTED_FAMILIES
    assert {k for k, _ in names} == {"task", "task_family"}
    for kind, name, factory in registry.calls:
        assert inspect.isclass(factory) and factory.__doc__, name
        base = lopt_core.Task if kind == "task" else lopt_core.TaskFamily
        assert issubclass(factory, base), name
        # Importable by name (gin and pickle find presets as module attributes).
        assert getattr(tasks_plugin, name) is factory
    # Registering builds no data: nothing was put in the datasets' cache.
    assert not lopt_core.datasets._BUILT


def test_every_registered_factory_builds_with_defaults_where_data_is_bundled():
    registry = RecordingRegistry()
    tasks_plugin.lopt_register(registry)
    for kind, name, factory in registry.calls:
        if any(tag in name.lower() for tag in ("mnist", "cifar10")):
            continue  # read from files: see test_tasks_image.py for the missing-file error
        kwargs = {"batch_size": 8} if "batch_size" in inspect.signature(factory).parameters else {}
        built = factory(**kwargs)
        assert isinstance(built, lopt_core.Task if kind == "task" else lopt_core.TaskFamily)
        assert built.name


def test_entry_point_names_the_plugin_module():
    points = importlib.metadata.entry_points(group="lopt")
    assert any(p.name == "tasks" and p.value == "lopt_plugins.tasks" for p in points)


def test_real_registry_accepts_the_plugin():
    registry_module = pytest.importorskip("lopt_core.registry")
    registry = registry_module.Registry(strict=True)
    registry.load_module(tasks_plugin, distribution="lopt")
    assert set(registry.names("task")) == EXPECTED_TASKS
    assert set(registry.names("task_family")) == EXPECTED_FAMILIES
    assert registry.entry("task", "ImageMLP_Digits8_Relu32").distribution == "lopt"
