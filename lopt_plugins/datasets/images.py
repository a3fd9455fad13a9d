"""Image classification datasets: digits, the MNIST family and CIFAR-10.

Batches are ``{"image": float32 [B, H, W, C] in [0, 1], "label": int32 [B]}``.
Files are read once, resized once, and kept in host memory; nothing is ever
downloaded.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lopt_core.datasets import SPLITS, Datasets, dataset_lru_cache
from lopt_core.validation import positive_int
from lopt_plugins.datasets._common import (
    data_dir_origin,
    image_size_arg,
    make_datasets,
    permuted_splits,
    resolve_data_dir,
    split_sizes,
)
from lopt_plugins.datasets._image_files import (
    CIFAR10_LAYOUT,
    MNIST_FILES,
    MNIST_LAYOUT,
    find_cifar10_files,
    find_mnist_files,
    load_idx_pair,
    read_cifar_batch,
)

DIGITS_SIZES: tuple[tuple[int, int], ...] = ((8, 8), (16, 16), (28, 28))
MNIST_SIZES: tuple[tuple[int, int], ...] = ((8, 8), (16, 16), (28, 28))
CIFAR10_SIZES: tuple[tuple[int, int], ...] = ((8, 8), (16, 16), (32, 32))

# Fractions of digits for inner_valid, outer_valid and test; train gets the rest (60%).
DIGITS_FRACTIONS = (0.1, 0.1, 0.2)
# inner_valid and outer_valid are each carved from the official train split: 1/12 of
# MNIST's 60,000 and 1/10 of CIFAR-10's 50,000 is 5,000 images each.
MNIST_VALID_DIVISOR = 12
CIFAR10_VALID_DIVISOR = 10


# --- resizing (once, at load time) -------------------------------------------------------------


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``[size_out, size_in]`` weights of a 1-D resize; rows sum to one."""
    if size_out == size_in:
        return np.eye(size_in, dtype=np.float64)
    if size_in % size_out == 0:  # integer factor: average each block of pixels (area resize)
        factor = size_in // size_out
        return np.kron(np.eye(size_out), np.full((1, factor), 1.0 / factor))
    # Otherwise bilinear, antialiased when shrinking: jax.image.resize is linear, so resizing
    # the columns of an identity matrix gives its weights.
    import jax
    import jax.numpy as jnp

    weights = np.asarray(
        jax.image.resize(jnp.eye(size_in), (size_out, size_in), "linear", antialias=True),
        np.float64,
    )
    return weights / weights.sum(axis=1, keepdims=True)  # undo float32 rounding of the sums


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize float ``[N, H, W, C]`` images in [0, 1] to ``size``: float32, still in [0, 1].

    Area averaging when ``size`` divides the image size, antialiased bilinear otherwise.
    """
    height, width = images.shape[1:3]
    if (height, width) == tuple(size):
        return images.astype(np.float32, copy=False)
    rows = _resize_matrix(height, size[0]).astype(np.float32)
    cols = _resize_matrix(width, size[1]).astype(np.float32)
    # Two tensordots, each one large matrix product: [N,H,W,C] -> [N,W,C,h] -> [N,C,h,w].
    out = np.tensordot(images.astype(np.float32, copy=False), rows, axes=([1], [1]))
    out = np.tensordot(out, cols, axes=([1], [1])).transpose(0, 2, 3, 1)
    out = np.ascontiguousarray(out)
    return np.clip(out, 0.0, 1.0, out=out)


# --- batches ------------------------------------------------------------------------------------


def _image_batch(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"image": data["image"], "label": data["label"]}


def _image_datasets(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    split_ids: dict[str, np.ndarray],
    batch_size: int,
    image_size: tuple[int, int],
    extra: dict | None = None,
) -> Datasets:
    """``images``: uint8 (0..255) or float32 in [0, 1], ``[N, H, W, C]``.

    Each split is stored as float32 in [0, 1] at its final size, so that a batch
    is a single gather. Converting split by split keeps the peak memory near the
    final size (plus the uint8 source).
    """

    def prepare(ids: np.ndarray) -> np.ndarray:
        split_images = images[ids]
        if split_images.dtype == np.uint8:
            split_images = split_images.astype(np.float32) / np.float32(255)
        return resize_images(split_images, image_size)

    labels = labels.astype(np.int32)
    split_data = {s: {"image": prepare(ids), "label": labels[ids]} for s, ids in split_ids.items()}
    info = {
        "num_classes": 10,
        "image_shape": (*image_size, images.shape[-1]),
        **(extra or {}),
    }
    return make_datasets(name, split_data, split_ids, batch_size, _image_batch, info)


def _carve_valid(num_train: int, divisor: int, seed: int, what: str) -> list[np.ndarray]:
    """Split official-train indices into train, inner_valid, outer_valid (1/divisor each)."""
    held = max(1, num_train // divisor)
    if num_train < 2 * held + 1:
        raise ValueError(
            f"{what} has {num_train} training examples; at least 3 are needed to carve "
            "inner_valid and outer_valid out of the train split."
        )
    return permuted_splits(num_train, [num_train - 2 * held, held, held], seed)


def _official_split_datasets(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    divisor: int,
    batch_size: int,
    image_size: tuple[int, int],
    extra: dict,
) -> Datasets:
    """A dataset with an official ``(images, labels)`` train and test split.

    The official test split is ``test``; 1/``divisor`` each of the official
    train split is carved out for ``inner_valid`` and ``outer_valid``.
    ``example_ids``: train index ``i`` is ``i``, test index ``j`` is ``num_train + j``.
    """
    (train_x, train_y), (test_x, test_y) = train, test
    num_train = len(train_x)
    train_ids, inner_valid, outer_valid = _carve_valid(num_train, divisor, 0, name)
    split_ids = {
        "train": train_ids,
        "inner_valid": inner_valid,
        "outer_valid": outer_valid,
        "test": num_train + np.arange(len(test_x)),
    }
    images = np.concatenate([train_x, test_x])
    labels = np.concatenate([train_y, test_y])
    return _image_datasets(name, images, labels, split_ids, batch_size, image_size, extra)


def _from_files(
    name: str,
    sizes: tuple[tuple[int, int], ...],
    layout: str,
    find_files: Callable[[str, str], object],
    cached: Callable[[int, tuple[int, int], str], Datasets],
    batch_size: int,
    image_size: tuple[int, int],
    data_dir: str | os.PathLike | None,
) -> Datasets:
    """The front of a builder that reads files: check the arguments, find the files, build.

    ``find_files(data_dir, origin)`` raises ``DatasetNotFoundError`` when files are
    missing; ``cached(batch_size, image_size, data_dir)`` builds through the cache.
    """
    size = image_size_arg(image_size, sizes, name)
    batch_size = positive_int(batch_size, "batch_size")
    resolved = resolve_data_dir(data_dir, name, layout)
    # Look before the cache so that the error can say where data_dir came from.
    find_files(resolved, data_dir_origin(data_dir))
    return cached(batch_size, size, resolved)


# --- digits -------------------------------------------------------------------------------------


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(images [1797, 8, 8] float64 0..16, labels [1797] int)``, as ``load_digits()`` gives.

    Read from the CSV file scikit-learn's wheel ships, found without importing
    scikit-learn (whose import, with scipy's, takes over a second: most of a warm
    ``lopt train``'s start); ``load_digits`` if the file is not where it was.
    """
    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits  # pragma: no cover - a relocated file

    bunch = load_digits()  # pragma: no cover
    return bunch.images, np.asarray(bunch.target)  # pragma: no cover


@dataset_lru_cache
def _digits(batch_size: int, image_size: tuple[int, int]) -> Datasets:
    images, labels = digits_arrays()
    images = (images / 16.0).astype(np.float32)[..., None]  # pixel values are 0..16
    sizes = split_sizes(len(images), DIGITS_FRACTIONS, "digits")
    split_ids = dict(zip(SPLITS, permuted_splits(len(images), sizes, seed=0), strict=True))
    return _image_datasets("digits", images, labels, split_ids, batch_size, image_size)


def digits(batch_size: int = 128, image_size: tuple[int, int] = (8, 8)) -> Datasets:
    """scikit-learn's 8x8 handwritten digits: 1,797 images, 10 classes, no download.

    Splits (a fixed-seed permutation of the 1,797 images, ~60/10/10/20):
    train 1,078, inner_valid 180, outer_valid 180, test 359. ``example_ids`` of
    each split iterator index ``sklearn.datasets.load_digits()``. ``image_size``
    is one of (8, 8) (native), (16, 16), (28, 28) (bilinear upsampling).
    """
    size = image_size_arg(image_size, DIGITS_SIZES, "digits")
    return _digits(positive_int(batch_size, "batch_size"), size)


digits.cache_clear = _digits.cache_clear


# --- MNIST family: IDX files --------------------------------------------------------------------


def _build_mnist_family(
    name: str, batch_size: int, image_size: tuple[int, int], data_dir: str
) -> Datasets:
    files = find_mnist_files(name, data_dir, "the caller")
    train = load_idx_pair(files[MNIST_FILES[0]], files[MNIST_FILES[1]])
    test = load_idx_pair(files[MNIST_FILES[2]], files[MNIST_FILES[3]])
    extra = {"data_dir": data_dir, "files": tuple(files.values())}
    return _official_split_datasets(
        name, train, test, MNIST_VALID_DIVISOR, batch_size, image_size, extra
    )


_MNIST_DOC = """{title} from the standard IDX files: 28x28 grayscale, 10 classes.

    Reads ``<data_dir>/{name}/`` with ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte`` (each plain or ``.gz``). ``data_dir`` defaults to
    ``$LOPT_DATA_DIR``; nothing is downloaded. Splits: the official 10,000 test
    images are ``test``; a fixed-seed permutation of the official train images
    gives 1/12 each (5,000 of 60,000) to ``inner_valid`` and ``outer_valid`` and
    the rest (50,000) to ``train``. ``example_ids``: train-file index ``i`` is
    ``i``, test-file index ``j`` is ``num_train + j``. ``image_size`` is one of
    (28, 28) (native), (16, 16), (8, 8) (antialiased bilinear, once at load).
"""


def _mnist_family_builder(name: str, title: str) -> Callable[..., Datasets]:
    """The public builder of one MNIST-format dataset (its files differ, nothing else)."""

    def load(batch_size: int, image_size: tuple[int, int], data_dir: str) -> Datasets:
        return _build_mnist_family(name, batch_size, image_size, data_dir)

    load.__qualname__ = load.__name__ = f"_{name}"
    cached = dataset_lru_cache(load)
    layout = MNIST_LAYOUT.format(name=name)
    find_files = functools.partial(find_mnist_files, name)

    def builder(
        batch_size: int = 128,
        image_size: tuple[int, int] = (28, 28),
        data_dir: str | os.PathLike | None = None,
    ) -> Datasets:
        return _from_files(
            name, MNIST_SIZES, layout, find_files, cached, batch_size, image_size, data_dir
        )

    # Named like a module-level function, so that it pickles and reads as one.
    builder.__qualname__ = builder.__name__ = name
    builder.__doc__ = _MNIST_DOC.format(title=title, name=name)
    builder.cache_clear = cached.cache_clear
    return builder


mnist = _mnist_family_builder("mnist", "MNIST")
fashion_mnist = _mnist_family_builder("fashion_mnist", "Fashion-MNIST")
kmnist = _mnist_family_builder("kmnist", "KMNIST")


# --- CIFAR-10: python pickle batches ------------------------------------------------------------


@dataset_lru_cache
def _cifar10(batch_size: int, image_size: tuple[int, int], data_dir: str) -> Datasets:
    paths = find_cifar10_files(data_dir, "the caller")
    loaded = [read_cifar_batch(p) for p in paths]
    train_x = np.concatenate([x for x, _ in loaded[:-1]])
    train_y = np.concatenate([y for _, y in loaded[:-1]])
    return _official_split_datasets(
        "cifar10",
        (train_x, train_y),
        loaded[-1],
        CIFAR10_VALID_DIVISOR,
        batch_size,
        image_size,
        {"data_dir": data_dir},
    )


def cifar10(
    batch_size: int = 128,
    image_size: tuple[int, int] = (32, 32),
    data_dir: str | os.PathLike | None = None,
) -> Datasets:
    """CIFAR-10 from the python pickle batches: 32x32 RGB, 10 classes.

    Reads ``<data_dir>/cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``
    and ``test_batch``); ``data_dir`` defaults to ``$LOPT_DATA_DIR``; nothing is
    downloaded. Splits: ``test_batch`` (10,000) is ``test``; a fixed-seed
    permutation of the 50,000 training images gives 5,000 each (1/10) to
    ``inner_valid`` and ``outer_valid`` and 40,000 to ``train``. ``example_ids``:
    training image ``i`` (data batches concatenated in order) is ``i``, test image
    ``j`` is ``num_train + j``. ``image_size`` is one of (32, 32), (16, 16), (8, 8)
    (area averaging, once at load).
    """
    return _from_files(
        "cifar10",
        CIFAR10_SIZES,
        CIFAR10_LAYOUT,
        find_cifar10_files,
        _cifar10,
        batch_size,
        image_size,
        data_dir,
    )


cifar10.cache_clear = _cifar10.cache_clear
