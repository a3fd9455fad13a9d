"""The tabular datasets (wine, breast_cancer, iris, diabetes) and the tabular tasks."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt_core
from lopt_plugins import datasets as D
from lopt_plugins.tasks import tabular
from lopt_plugins.tasks.tabular import TabularLinearTask, TabularMLPTask

KEY = jax.random.PRNGKey(0)
NAMES = ("wine", "breast_cancer", "iris", "diabetes")
# name -> (rows, features, classes or None, split sizes train/inner_valid/outer_valid/test)
FACTS = {
    "wine": (178, 13, 3, (106, 18, 18, 36)),
    "breast_cancer": (569, 30, 2, (341, 57, 57, 114)),
    "iris": (150, 4, 3, (90, 15, 15, 30)),
    "diabetes": (442, 10, None, (266, 44, 44, 88)),
}


def _sklearn(name):
    import sklearn.datasets

    if name == "diabetes":
        bunch = sklearn.datasets.load_diabetes(scaled=False)
    else:
        bunch = getattr(sklearn.datasets, f"load_{name}")()
    return np.asarray(bunch.data, np.float64), np.asarray(bunch.target)


# --- datasets --------------------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_cache")
@pytest.mark.parametrize("name", NAMES)
def test_dataset_splits_shapes_and_train_standardization(name):
    rows, features, classes, sizes = FACTS[name]
    ds = D.BUILDERS[name](batch_size=8)
    ids = {s: ds.split(s).example_ids for s in lopt_core.SPLITS}
    assert tuple(len(ids[s]) for s in lopt_core.SPLITS) == sizes
    assert ds.extra_info["num_examples"] == dict(zip(lopt_core.SPLITS, sizes, strict=True))
    everything = np.concatenate(list(ids.values()))
    assert len(everything) == rows and len(np.unique(everything)) == rows  # disjoint, complete
    x, y = _sklearn(name)
    train = ids["train"]
    mean, std = x[train].mean(0), x[train].std(0)
    for split in lopt_core.SPLITS:
        it = ds.split(split)
        np.testing.assert_allclose(it.data["x"], (x[it.example_ids] - mean) / std, atol=1e-4)
        np.testing.assert_allclose(it.data["y"], y[it.example_ids], rtol=1e-6)
        batch = next(it)
        assert set(batch) == {"x", "y"} and batch["x"].shape == (8, features)
        assert batch["x"].dtype == np.float32 and batch["y"].shape == (8,)
        assert batch["y"].dtype == (np.float32 if classes is None else np.int32)
        for key, spec in ds.abstract_batch.items():
            assert (spec.shape, spec.dtype) == (batch[key].shape, batch[key].dtype)
    np.testing.assert_allclose(ds.split("train").data["x"].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.split("train").data["x"].std(0), 1.0, atol=1e-4)
    info = ds.extra_info
    assert info["name"] == name and info["num_features"] == features
    if classes is None:
        assert info["task"] == "regression" and "num_classes" not in info
        assert info["target_mean"] == pytest.approx(y[train].mean())
        assert info["target_std"] == pytest.approx(y[train].std())
    else:
        assert info["task"] == "classification" and info["num_classes"] == classes


@pytest.mark.usefixtures("fresh_cache")
def test_datasets_are_deterministic_cached_and_sample_small_splits_with_repeats():
    first = D.iris(batch_size=64)
    assert D.iris(64) is first and D.iris(batch_size=32) is not first
    train_batch = next(first.train)
    batch = next(first.inner_valid)  # 15 rows, batches of 64: rows repeat, shape stays fixed
    assert batch["x"].shape == (64, 4) and len(np.unique(batch["x"], axis=0)) == 15
    ids = first.test.example_ids.copy()
    lopt_core.clear_dataset_cache()
    again = D.iris(batch_size=64)
    assert again is not first
    np.testing.assert_array_equal(again.test.example_ids, ids)
    np.testing.assert_array_equal(next(again.train)["x"], train_batch["x"])
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        D.wine(batch_size=0)


@pytest.mark.usefixtures("fresh_registry")
def test_every_tabular_dataset_is_registered_and_builds():
    registry = lopt_core.get_registry()
    for name in NAMES:
        ds = registry.create("dataset", name, batch_size=4)
        assert next(ds.train)["x"].shape == (4, FACTS[name][1])


# --- tasks -----------------------------------------------------------------------------------


def _init_loss(task, n=8):
    """Mean loss at init over ``n`` init keys and test batches."""
    batches = lopt_core.stack_batches(task.datasets.test, n)
    keys = jax.random.split(KEY, n)

    @jax.jit
    def f(keys, batches):
        return jax.vmap(lambda k, b: task.loss(task.init(k), k, b))(keys, batches)

    return float(jnp.mean(f(keys, batches)))


def test_presets_parameter_counts_and_init_losses():
    # name -> (parameters, num_classes or None (regression))
    expected = {
        "TabularMLP_Wine_Relu32": (547, 3),
        "TabularMLP_Iris_Relu16": (131, 3),
        "TabularMLP_BreastCancer_Relu64x32": (4130, 2),
        "TabularMLP_Diabetes_Relu64": (769, None),
        "Logistic_Wine": (42, 3),
        "Logistic_Iris": (15, 3),
        "Logistic_BreastCancer": (62, 2),
        "Linear_Diabetes": (11, None),
    }
    assert set(tabular.PRESETS) == set(expected)
    for name, (params, classes) in expected.items():
        task = tabular.PRESETS[name](batch_size=32)
        assert task.name == name and task.batch_size == 32
        shapes = jax.eval_shape(task.init, KEY)
        assert sum(leaf.size for leaf in jax.tree_util.tree_leaves(shapes)) == params, name
        loss = _init_loss(task)
        # The readout starts at zero: uniform class probabilities, or the train mean.
        if classes is None:  # measured: 0.79 (MLP) and 0.80 (linear) on the test split
            assert 0.6 < float(task.normalizer(loss)) < 1.4, (name, loss)
        else:
            assert loss == pytest.approx(np.log(classes), abs=1e-5), name
            assert float(task.normalizer(loss)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("name", "lr", "ratio"),
    [
        # Measured final/initial test losses: 0.24, 0.12, 0.69, 0.70.
        ("TabularMLP_Wine_Relu32", 0.01, 0.45),
        ("Logistic_BreastCancer", 0.05, 0.3),
        ("TabularMLP_Diabetes_Relu64", 0.01, 0.85),
        ("Linear_Diabetes", 0.01, 0.85),
    ],
)
def test_adam_lowers_the_loss_in_100_steps(name, lr, ratio):
    task = tabular.PRESETS[name]()
    # 8 test batches per evaluation: the test splits are small (36 to 114 rows), one
    # batch of 32 is a noisy estimate.
    result = lopt_core.train(
        task, lopt_core.Adam(lr), KEY, num_steps=100, num_eval_batches=8, eval_splits=("test",)
    )
    init, final = np.asarray(result.test_loss)
    assert np.all(np.isfinite(np.asarray(result.train_loss)))
    assert final < ratio * init, (init, final)
    if task.classification:
        assert float(result.test_aux["accuracy"][-1]) > 0.8


def test_names_equality_and_pickling():
    task = TabularMLPTask("iris", (8, 4), "tanh", 16)
    assert task.name == "TabularMLP_Iris_Tanh8x4"
    assert task == TabularMLPTask("iris", [8, 4], "tanh", 16)
    assert hash(task) == hash(TabularMLPTask("iris", (8, 4), "tanh", 16))
    assert task != TabularMLPTask("iris", (8, 4), "tanh", 32)
    assert TabularLinearTask("wine").name == "Logistic_Wine"
    assert TabularLinearTask("diabetes").name == "Linear_Diabetes"
    preset = tabular.PRESETS["Logistic_Iris"]
    assert preset() == preset(32) and preset(8) != preset(32)
    assert pickle.loads(pickle.dumps(preset)) is preset
    assert "batch_size" in repr(preset())


def test_task_on_a_given_datasets_object_and_normalizers():
    ds = D.breast_cancer(batch_size=16)
    task = TabularMLPTask(ds, (8,))
    assert task.datasets is ds and task.name == "TabularMLP_BreastCancer_Relu8"
    out = task.normalizer(jnp.array([0.0, np.log(2), 10.0, jnp.nan, jnp.inf]))
    np.testing.assert_allclose(out, [0.0, 1.0, 1.5, 1.5, 1.5], rtol=1e-6)
    reg = TabularLinearTask("diabetes")
    np.testing.assert_allclose(reg.normalizer(jnp.array([0.5, 20.0, jnp.nan])), [0.5, 10, 10])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "nope"}, "Unknown tabular dataset 'nope'"),
        ({"dataset": "digits"}, "needs batches"),
        ({"hidden_sizes": (0,)}, "hidden_sizes must be a sequence of positive integers"),
        ({"activation": "swish"}, "Unknown activation 'swish'"),
        ({"batch_size": -1}, "batch_size must be a positive integer, got -1"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TabularMLPTask(**kwargs)
