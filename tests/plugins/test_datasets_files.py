"""MNIST-family IDX files and CIFAR-10 pickle batches, written small and real into tmp_path."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

import lopt_core
import lopt_plugins.datasets as D

FAMILY = ["mnist", "fashion_mnist", "kmnist"]


@pytest.fixture(autouse=True)
def no_data_dir_variable(monkeypatch, fresh_cache):
    """No LOPT_DATA_DIR from the environment, and no cached datasets."""
    monkeypatch.delenv("LOPT_DATA_DIR", raising=False)


def _write_idx(path, array, gz):
    # The IDX format: 00 00, type code 0x08 (unsigned byte), ndim, big-endian uint32 dims, data.
    raw = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    raw += np.ascontiguousarray(array, np.uint8).tobytes()
    opener = gzip.open if gz else open
    with opener(str(path) + (".gz" if gz else ""), "wb") as f:
        f.write(raw)


def _write_mnist(root, name, num_train=30, num_test=10, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, num_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, num_test, dtype=np.uint8),
    }
    for file, array in arrays.items():
        _write_idx(folder / file, array, gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", FAMILY)
def test_mnist_family_reads_idx_files_back_exactly(tmp_path, name, gz):
    arrays = _write_mnist(tmp_path, name, gz=gz)
    ds = getattr(D, name)(batch_size=8, data_dir=tmp_path)
    assert ds.extra_info["num_examples"] == {
        "train": 26,
        "inner_valid": 2,
        "outer_valid": 2,
        "test": 10,
    }
    images = np.concatenate([arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]])
    labels = np.concatenate([arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"]])
    ids = {s: ds.split(s).example_ids for s in lopt_core.SPLITS}
    np.testing.assert_array_equal(ids["test"], 30 + np.arange(10))
    everything = np.concatenate(list(ids.values()))
    np.testing.assert_array_equal(np.sort(everything), np.arange(40))  # disjoint, complete
    for split, split_ids in ids.items():
        batch = next(ds.split(split))
        assert batch["image"].shape == (8, 28, 28, 1) and batch["image"].dtype == np.float32
        assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
        # Each batch row is one of its split's images, scaled to [0, 1], with its own label.
        source = images[split_ids].reshape(len(split_ids), -1).astype(np.float32) / 255
        for image, label in zip(batch["image"], batch["label"], strict=True):
            (row,) = np.flatnonzero(np.all(source == image.reshape(-1), axis=1))
            assert label == labels[split_ids[row]]
    # Content disjointness too: no image of one split is in another.
    hashes = {s: {images[i].tobytes() for i in v} for s, v in ids.items()}
    assert sum(len(h) for h in hashes.values()) == len(set().union(*hashes.values()))


def test_mnist_split_assignment_is_deterministic(tmp_path):
    _write_mnist(tmp_path, "mnist", num_train=60)
    first = {
        s: D.mnist(batch_size=4, data_dir=tmp_path).split(s).example_ids for s in lopt_core.SPLITS
    }
    lopt_core.clear_dataset_cache()
    second = D.mnist(batch_size=4, data_dir=str(tmp_path))
    for split in lopt_core.SPLITS:
        np.testing.assert_array_equal(second.split(split).example_ids, first[split])


def test_mnist_reads_the_data_dir_from_the_environment(tmp_path, monkeypatch):
    _write_mnist(tmp_path, "mnist")
    monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path))
    ds = D.mnist(batch_size=4)
    assert ds.extra_info["data_dir"] == str(tmp_path)
    assert D.mnist(batch_size=4, data_dir=tmp_path) is ds  # same resolved directory, same object


@pytest.mark.parametrize("size", [(8, 8), (16, 16)])
def test_mnist_resizes_once_at_load(tmp_path, size):
    import jax

    arrays = _write_mnist(tmp_path, "mnist")
    arrays["train-images-idx3-ubyte"][0] = 255  # a white image stays white
    _write_idx(
        tmp_path / "mnist" / "train-images-idx3-ubyte", arrays["train-images-idx3-ubyte"], False
    )
    ds = D.mnist(batch_size=4, image_size=size, data_dir=tmp_path)
    assert next(ds.train)["image"].shape == (4, *size, 1)
    assert ds.abstract_batch["image"].shape == (4, *size, 1)
    assert ds.extra_info["image_shape"] == (*size, 1)
    stored, ids = ds.train.data["image"], ds.train.example_ids
    assert stored.dtype == np.float32 and 0.0 <= stored.min() and stored.max() <= 1.0
    if 0 in ids:
        np.testing.assert_allclose(stored[list(ids).index(0)], 1.0, atol=1e-6)
    # Same result as jax's antialiased bilinear resize of the original image.
    source = arrays["train-images-idx3-ubyte"][ids[1]].astype(np.float32)[..., None] / 255
    expected = jax.image.resize(source, (*size, 1), "linear", antialias=True)
    np.testing.assert_allclose(stored[1], np.asarray(expected), atol=1e-5)


def test_mnist_rejects_sizes_it_does_not_offer(tmp_path):
    _write_mnist(tmp_path, "mnist")
    with pytest.raises(ValueError, match=r"mnist: image_size must be one of .*got \(32, 32\)"):
        D.mnist(image_size=(32, 32), data_dir=tmp_path)


@pytest.mark.parametrize("name", FAMILY)
def test_missing_idx_files_name_the_directory_the_files_and_the_source(tmp_path, name):
    _write_mnist(tmp_path, name)
    os.remove(tmp_path / name / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError) as info:
        getattr(D, name)(data_dir=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, D.DatasetNotFoundError)
    assert str(tmp_path / name) in message
    assert "Missing: t10k-labels-idx1-ubyte[.gz]." in message
    for file in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        assert file in message
    source = {"mnist": "LeCun", "fashion_mnist": "zalandoresearch", "kmnist": "rois-codh"}[name]
    assert source in message and "never downloads" in message
    assert "from the data_dir argument" in message


def test_no_data_dir_anywhere_explains_both_ways_to_give_one():
    with pytest.raises(FileNotFoundError, match="pass data_dir=.*or set the LOPT_DATA_DIR") as info:
        D.kmnist()
    assert "<data_dir>/kmnist/" in str(info.value)


def test_missing_directory_from_the_environment_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="does not exist.*LOPT_DATA_DIR environment"):
        D.mnist()


def test_read_idx_rejects_files_that_are_not_idx(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x1f\x8bnot idx at all")
    with pytest.raises(ValueError, match="is not an IDX file"):
        D.read_idx(bad)
    _write_idx(bad, np.zeros((3, 28, 28), np.uint8), gz=False)
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"shape \(3, 28, 28\).*truncated"):
        D.read_idx(bad)


# --- CIFAR-10 -----------------------------------------------------------------------------------


def _write_cifar(root, per_batch=6, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for file in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {
            b"batch_label": file.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [b"img%d.png" % i for i in range(per_batch)],
        }
        with open(folder / file, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[file] = (data, labels)
    return written


def test_cifar10_reads_pickle_batches_back_exactly(tmp_path):
    written = _write_cifar(tmp_path)
    ds = D.cifar10(batch_size=4, data_dir=tmp_path)
    assert ds.extra_info["num_examples"] == {
        "train": 24,
        "inner_valid": 3,
        "outer_valid": 3,
        "test": 6,
    }
    assert ds.extra_info["image_shape"] == (32, 32, 3)
    data = np.concatenate([d for d, _ in written.values()])
    labels = np.concatenate([lab for _, lab in written.values()])
    ids = {s: ds.split(s).example_ids for s in lopt_core.SPLITS}
    np.testing.assert_array_equal(np.sort(np.concatenate(list(ids.values()))), np.arange(36))
    np.testing.assert_array_equal(ids["test"], 30 + np.arange(6))
    for split, split_ids in ids.items():
        it = ds.split(split)
        np.testing.assert_array_equal(it.data["label"], labels[split_ids])
        # Pixel (row r, column c) of channel k is byte k*1024 + r*32 + c of the row.
        image, row = it.data["image"][0], data[split_ids[0]]
        for k, r, c in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
            assert image[r, c, k] == np.float32(row[k * 1024 + r * 32 + c]) / np.float32(255)
        batch = next(it)
        assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
        assert batch["label"].dtype == np.int32
        assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0


def test_cifar10_split_assignment_is_deterministic_and_resizes(tmp_path):
    _write_cifar(tmp_path)
    first = {s: D.cifar10(data_dir=tmp_path).split(s).example_ids for s in lopt_core.SPLITS}
    lopt_core.clear_dataset_cache()
    small = D.cifar10(batch_size=2, image_size=(8, 8), data_dir=tmp_path)
    full = D.cifar10(batch_size=2, data_dir=tmp_path)
    for split in lopt_core.SPLITS:
        np.testing.assert_array_equal(small.split(split).example_ids, first[split])
    assert next(small.train)["image"].shape == (2, 8, 8, 3)
    # 32 -> 8 is an exact 4x4 area average of the [0, 1] image.
    expected = full.train.data["image"][0].reshape(8, 4, 8, 4, 3).mean((1, 3))
    np.testing.assert_allclose(small.train.data["image"][0], expected, atol=1e-6)


def test_cifar10_missing_files_name_the_folder_and_the_source(tmp_path):
    _write_cifar(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(FileNotFoundError) as info:
        D.cifar10(data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "Missing: data_batch_3." in message and "test_batch" in message
    assert "cifar-10-python.tar.gz" in message and "never downloads" in message


def test_cifar10_refuses_pickles_that_would_run_code(tmp_path):
    _write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="test_batch is not a CIFAR-10 python batch.*refusing"):
        D.cifar10(data_dir=tmp_path)


def test_cifar10_reads_batches_pickled_by_old_numpy(tmp_path):
    # The real files were pickled by Python 2 and numpy 1.x, which name numpy.core.multiarray.
    written = _write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw or b"numpy.core.multiarray" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    ds = D.cifar10(batch_size=2, data_dir=tmp_path)
    np.testing.assert_array_equal(ds.test.data["label"], written["test_batch"][1])
