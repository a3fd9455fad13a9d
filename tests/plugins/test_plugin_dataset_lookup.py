"""Built-in tasks find their datasets by name in the plugin registry, a third party's included."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import lopt_core
from lopt_core.registry import reset_registry, set_registry
from lopt_plugins import datasets as builtin_datasets
from lopt_plugins.tasks import CharLMTask, ImageMLPDataFamily, ImageMLPTask

KEY = jax.random.PRNGKey(0)
NUM_CLASSES = 3
VOCAB_SIZE = 5


def _endless(seed: int, make_batch):
    rng = np.random.default_rng(seed)
    while True:
        yield make_batch(rng)


def tiny_shapes(batch_size: int = 4, image_size: tuple[int, int] = (4, 4)) -> lopt_core.Datasets:
    """Random 1-channel images with 3 classes; the image shape only in the abstract batch."""

    def batch(rng):
        return {
            "image": rng.random((batch_size, *image_size, 1), dtype=np.float32),
            "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32),
        }

    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch(np.random.default_rng(0))
    )
    return lopt_core.Datasets(
        *(_endless(seed, batch) for seed in range(len(lopt_core.SPLITS))),
        extra_info={"name": "tiny_shapes", "num_classes": NUM_CLASSES},
        abstract_batch=abstract,
    )


def tiny_text(batch_size: int = 2, sequence_length: int = 8) -> lopt_core.Datasets:
    """Random token windows over a vocabulary of 5."""

    def batch(rng):
        window = rng.integers(0, VOCAB_SIZE, (batch_size, sequence_length + 1)).astype(np.int32)
        return {"obs": window[:, :-1], "target": window[:, 1:]}

    return lopt_core.Datasets(
        *(_endless(seed, batch) for seed in range(len(lopt_core.SPLITS))),
        extra_info={"name": "tiny_text", "vocab_size": VOCAB_SIZE},
    )


class TinyDatasetsPlugin:
    """A third party's plugin: two datasets and nothing else."""

    @lopt_core.hookimpl
    def lopt_register(self, registry):
        registry.register("dataset", "tiny_shapes", tiny_shapes)
        registry.register("dataset", "tiny_text", tiny_text)


@pytest.fixture
def registry():
    """The built-in datasets and tasks plus ``TinyDatasetsPlugin``, as ``get_registry()``."""
    registry = lopt_core.Registry(strict=True)
    registry.load_module("lopt_plugins.datasets")
    registry.load_module("lopt_plugins.tasks")
    registry.load_module(
        TinyDatasetsPlugin(), name="tiny", distribution="tiny-datasets", version="0.1"
    )
    set_registry(registry)
    yield registry
    reset_registry()  # the next get_registry() loads the installed plugins again


def _train(task: lopt_core.Task) -> np.ndarray:
    result = lopt_core.train(task, lopt_core.Adam(1e-2), KEY, num_steps=3)
    losses = np.asarray(result.train_loss)
    assert losses.shape == (3,) and np.all(np.isfinite(losses)), losses
    return losses


def test_an_image_task_trains_on_a_plugin_dataset(registry):
    task = ImageMLPTask("tiny_shapes", (4, 4), hidden_sizes=(8,), batch_size=4)
    assert task.name == "ImageMLP_TinyShapes4_Relu8"
    assert task.image_shape == (4, 4, 1) and task.num_classes == NUM_CLASSES
    _train(task)
    # Families build their base task the same way, so they see the plugin's classes.
    family = ImageMLPDataFamily("tiny_shapes", (4, 4), hidden_sizes=(8,), batch_size=4)
    assert family.num_classes == NUM_CLASSES


def test_the_char_lm_trains_on_a_plugin_dataset(registry):
    task = CharLMTask("tiny_text", hidden_size=8, embed_size=4, batch_size=2, sequence_length=8)
    assert task.name == "CharLM_TinyText_LSTM8" and task.vocab_size == VOCAB_SIZE
    _train(task)


def test_a_misspelt_name_names_the_close_match(registry):
    with pytest.raises(lopt_core.UnknownEntryError, match="Close matches: tiny_shapes") as info:
        ImageMLPTask("tiny_shape", (4, 4), batch_size=4)
    assert isinstance(info.value, ValueError)  # as the tasks' other argument errors
    assert "Unknown image dataset 'tiny_shape'" in str(info.value)
    with pytest.raises(ValueError, match="(?s)Unknown text dataset 'tiny_txt'.*Close.*tiny_text"):
        CharLMTask("tiny_txt")


def test_a_dataset_of_the_wrong_kind_is_refused_before_it_is_built(registry):
    with pytest.raises(ValueError, match="takes no image_size.*Is 'tiny_text' an image dataset"):
        ImageMLPTask("tiny_text", (4, 4), batch_size=4)


def test_built_in_names_still_give_the_cached_built_in_data(registry):
    task = ImageMLPTask("digits", (8, 8), batch_size=8)
    assert task.datasets is builtin_datasets.digits(batch_size=8, image_size=(8, 8))
    assert task.name == "ImageMLP_Digits8_Relu32"


def test_a_built_in_name_without_the_datasets_plugin_says_which_plugin_to_load():
    registry = lopt_core.Registry(strict=True)
    registry.load_module("lopt_plugins.tasks")
    set_registry(registry)
    try:
        with pytest.raises(ValueError, match="built-in dataset.*'datasets' plugin"):
            ImageMLPTask("digits", (8, 8), batch_size=8)
    finally:
        reset_registry()
