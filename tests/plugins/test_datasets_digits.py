"""digits, the shared batch iterator and the dataset plugin hook."""

import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest

import lopt_core
import lopt_plugins.datasets as D
from lopt_plugins.datasets import RandomBatches
from lopt_plugins.datasets.images import digits_arrays

pytestmark = pytest.mark.usefixtures("fresh_cache")


def _source_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def test_digits_splits_cover_all_images_disjointly():
    ds = D.digits(batch_size=32)
    ids = {s: ds.split(s).example_ids for s in lopt_core.SPLITS}
    sizes = {s: len(v) for s, v in ids.items()}
    assert sizes == ds.extra_info["num_examples"]
    assert sizes == {"train": 1078, "inner_valid": 180, "outer_valid": 180, "test": 359}
    everything = np.concatenate(list(ids.values()))
    assert len(everything) == 1797
    assert len(np.unique(everything)) == 1797  # no example in two splits


def test_digits_split_data_is_the_sklearn_data():
    images, labels = _source_digits()
    ds = D.digits(batch_size=8)
    for split in lopt_core.SPLITS:
        it = ds.split(split)
        np.testing.assert_allclose(it.data["image"][..., 0], images[it.example_ids] / 16.0)
        np.testing.assert_array_equal(it.data["label"], labels[it.example_ids])


def test_digits_are_read_from_sklearns_file_without_importing_sklearn():
    images, labels = digits_arrays()
    source_images, source_labels = _source_digits()
    np.testing.assert_array_equal(images, source_images)
    np.testing.assert_array_equal(labels, source_labels)
    # Importing scikit-learn costs over a second of every digits run's start.
    code = (
        "import sys; from lopt_plugins.datasets.images import digits_arrays; digits_arrays(); "
        "print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_digits_batches_have_the_promised_shape_dtype_and_range():
    ds = D.digits(batch_size=16)
    assert ds.extra_info["num_classes"] == 10
    assert ds.extra_info["image_shape"] == (8, 8, 1)
    for split in lopt_core.SPLITS:
        batch = next(ds.split(split))
        assert set(batch) == {"image", "label"}
        assert batch["image"].shape == (16, 8, 8, 1) and batch["image"].dtype == np.float32
        assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
        assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
        assert 0 <= batch["label"].min() and batch["label"].max() <= 9
        for key, spec in ds.abstract_batch.items():
            assert (spec.shape, spec.dtype) == (batch[key].shape, batch[key].dtype)


def test_digits_is_deterministic_across_rebuilds():
    first = D.digits(batch_size=8)
    ids = {s: first.split(s).example_ids.copy() for s in lopt_core.SPLITS}
    batches = {s: next(first.split(s)) for s in lopt_core.SPLITS}
    lopt_core.clear_dataset_cache()
    second = D.digits(batch_size=8)
    assert second is not first
    for split in lopt_core.SPLITS:
        np.testing.assert_array_equal(second.split(split).example_ids, ids[split])
        again = next(second.split(split))
        np.testing.assert_array_equal(again["image"], batches[split]["image"])
        np.testing.assert_array_equal(again["label"], batches[split]["label"])


def test_digits_cache_returns_the_same_object_for_equal_arguments():
    ds = D.digits()
    assert D.digits(128) is ds
    assert D.digits(batch_size=128, image_size=[8, 8]) is ds  # lists are normalized to tuples
    assert D.digits(batch_size=64) is not ds
    D.digits.cache_clear()
    assert D.digits() is not ds


@pytest.mark.parametrize("size", [(16, 16), (28, 28)])
def test_digits_resizes_once_to_the_allowed_sizes(size):
    ds = D.digits(batch_size=4, image_size=size)
    batch = next(ds.train)
    assert batch["image"].shape == (4, *size, 1)
    assert ds.extra_info["image_shape"] == (*size, 1)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    # Upsampling keeps each image's mean brightness roughly where it was.
    images, _ = _source_digits()
    ids = ds.train.example_ids[:50]
    np.testing.assert_allclose(
        ds.train.data["image"][:50].mean(axis=(1, 2, 3)),
        images[ids].mean(axis=(1, 2)) / 16,
        atol=0.03,
    )


def test_digits_rejects_bad_arguments_with_clear_errors():
    with pytest.raises(ValueError, match=r"image_size must be one of .*\(8, 8\).*got \(10, 10\)"):
        D.digits(image_size=(10, 10))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        D.digits(batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 2.5"):
        D.digits(batch_size=2.5)


def test_random_batches_visit_every_example_once_per_epoch():
    data = {"x": np.arange(10) * 10}
    it = RandomBatches(data, np.arange(10), 4, lambda d: d, seed=(1, 2))
    drawn = np.concatenate([next(it)["x"] for _ in range(5)])  # 20 draws = two epochs
    assert all(next(it)["x"].shape == (4,) for _ in range(3))
    np.testing.assert_array_equal(np.sort(drawn[:10]), data["x"])
    np.testing.assert_array_equal(np.sort(drawn[10:]), data["x"])
    assert not np.array_equal(drawn[:10], drawn[10:])  # reshuffled between epochs


def test_random_batches_fill_a_batch_larger_than_the_split():
    it = RandomBatches({"x": np.arange(3)}, np.arange(3), 8, lambda d: d, seed=(0,))
    batch = next(it)["x"]
    assert batch.shape == (8,)
    counts = np.bincount(batch, minlength=3)
    assert counts.min() >= 2 and counts.max() <= 3  # epochs follow each other inside the batch


def test_lopt_register_registers_every_dataset_builder():
    calls = []

    class FakeRegistry:
        def register(self, kind, name, factory):
            calls.append((kind, name, factory))

    D.lopt_register(FakeRegistry())
    assert {kind for kind, _, _ in calls} == {"dataset"}
    registered = {name: factory for _, name, factory in calls}
    assert registered == {
        "digits": D.digits,
        "mnist": D.mnist,
        "fashion_mnist": D.fashion_mnist,
        "kmnist": D.kmnist,
        "cifar10": D.cifar10,
        "text": D.text,
        "wine": D.wine,
        "breast_cancer": D.breast_cancer,
        "iris": D.iris,
        "diabetes": D.diabetes,
    }
    assert len(calls) == len(registered)


def test_the_datasets_plugin_is_found_through_the_lopt_entry_point_group():
    (entry,) = [e for e in entry_points(group="lopt") if e.name == "datasets"]
    assert entry.load() is D
