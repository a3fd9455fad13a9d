"""Image classification datasets: digits, the MNIST family and CIFAR-10.

Batches are ``{"image": float32 [B, H, W, C] in [0, 1], "label": int32 [B]}``.
Files are read once, resized once, and kept in host memory; nothing is ever
downloaded.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib

import numpy as np

from lopt_core.datasets import SPLITS, Datasets, dataset_lru_cache
from lopt_core.validation import positive_int
from lopt_plugins.datasets._common import (
    DatasetNotFoundError,
    data_dir_origin,
    image_size_arg,
    make_datasets,
    permuted_splits,
    resolve_data_dir,
    split_sizes,
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


# --- digits -------------------------------------------------------------------------------------


@dataset_lru_cache
def _digits(batch_size: int, image_size: tuple[int, int]) -> Datasets:
    from sklearn.datasets import load_digits  # heavy import, only when digits are built

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]  # pixel values are 0..16
    labels = np.asarray(bunch.target)
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

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (``*.gz`` is decompressed) into a native-endian numpy array."""
    path = os.fspath(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{path} is not a valid gzip file ({e}); re-fetch or gunzip it.") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path} is not an IDX file: it starts with bytes {raw[:4].hex(' ')!r}, but an IDX "
            "file starts with 00 00, a type code (08 for unsigned bytes) and the number of dims."
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header of {ndim} dims is truncated ({len(raw)} bytes).")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} ({expected} bytes of data) but the file holds "
            f"{len(raw) - header} bytes after the header; the file is truncated or corrupt."
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

MNIST_SOURCES = {
    "mnist": (
        "the MNIST files from Yann LeCun's MNIST page (yann.lecun.com/exdb/mnist) or one of its "
        "mirrors; torchvision's cache holds the same files in <root>/MNIST/raw/"
    ),
    "fashion_mnist": (
        "Zalando Research's Fashion-MNIST release on GitHub (zalandoresearch/fashion-mnist, "
        "folder data/fashion/); torchvision's cache holds them in <root>/FashionMNIST/raw/"
    ),
    "kmnist": (
        "the ROIS-CODH KMNIST release (github.com/rois-codh/kmnist, the Kuzushiji-MNIST files "
        "in MNIST format); torchvision's cache holds them in <root>/KMNIST/raw/"
    ),
}

_MNIST_LAYOUT = "Its files are read from <data_dir>/{name}/: " + ", ".join(
    f + "[.gz]" for f in MNIST_FILES
)


def _find_mnist_files(name: str, data_dir: str, origin: str) -> dict[str, str]:
    """The path of each of ``MNIST_FILES`` in ``<data_dir>/<name>/`` (plain or gzipped)."""
    folder = os.path.join(data_dir, name)
    found, missing = {}, []
    for base in MNIST_FILES:
        candidates = [os.path.join(folder, base), os.path.join(folder, base + ".gz")]
        present = [c for c in candidates if os.path.isfile(c)]
        if present:
            found[base] = present[0]
        else:
            missing.append(base + "[.gz]")
    if missing:
        state = "" if os.path.isdir(folder) else " (the directory does not exist)"
        raise DatasetNotFoundError(
            f"{name}: searched {folder}{state}, with data_dir {data_dir} from {origin}. "
            f"Missing: {', '.join(missing)}. Expected there: "
            f"{', '.join(f + '[.gz]' for f in MNIST_FILES)} (plain or gzipped IDX files). "
            f"Get them from {MNIST_SOURCES[name]}. lopt never downloads data: copy or link the "
            f"files into {folder}, or set data_dir / LOPT_DATA_DIR to a directory that holds a "
            f"{name}/ folder."
        )
    return found


def _load_idx_pair(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{images_path}: expected uint8 images of shape [N, 28, 28], got {images.dtype} "
            f"{images.shape}."
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{labels_path}: expected {len(images)} labels (one per image in {images_path}), got "
            f"shape {labels.shape}."
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{labels_path}: labels must be 0..9, got {labels.min()}..{labels.max()}.")
    return images[..., None], labels


def _build_mnist_family(
    name: str, batch_size: int, image_size: tuple[int, int], data_dir: str
) -> Datasets:
    files = _find_mnist_files(name, data_dir, "the caller")
    train_x, train_y = _load_idx_pair(files[MNIST_FILES[0]], files[MNIST_FILES[1]])
    test_x, test_y = _load_idx_pair(files[MNIST_FILES[2]], files[MNIST_FILES[3]])
    num_train = len(train_x)
    train, inner_valid, outer_valid = _carve_valid(num_train, MNIST_VALID_DIVISOR, 0, name)
    split_ids = {
        "train": train,
        "inner_valid": inner_valid,
        "outer_valid": outer_valid,
        "test": num_train + np.arange(len(test_x)),
    }
    images = np.concatenate([train_x, test_x])
    labels = np.concatenate([train_y, test_y])
    extra = {"data_dir": data_dir, "files": tuple(files.values())}
    return _image_datasets(name, images, labels, split_ids, batch_size, image_size, extra)


_MNIST_CACHED = {}
for _name in MNIST_SOURCES:

    def _load(batch_size, image_size, data_dir, _name=_name):
        return _build_mnist_family(_name, batch_size, image_size, data_dir)

    _load.__qualname__ = _load.__name__ = f"_{_name}"
    _MNIST_CACHED[_name] = dataset_lru_cache(_load)


def _mnist_family(name: str, batch_size, image_size, data_dir) -> Datasets:
    size = image_size_arg(image_size, MNIST_SIZES, name)
    batch_size = positive_int(batch_size, "batch_size")
    resolved = resolve_data_dir(data_dir, name, _MNIST_LAYOUT.format(name=name))
    # Look before the cache so that the error can say where data_dir came from.
    _find_mnist_files(name, resolved, data_dir_origin(data_dir))
    return _MNIST_CACHED[name](batch_size, size, resolved)


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


def mnist(
    batch_size: int = 128,
    image_size: tuple[int, int] = (28, 28),
    data_dir: str | os.PathLike | None = None,
) -> Datasets:
    return _mnist_family("mnist", batch_size, image_size, data_dir)


def fashion_mnist(
    batch_size: int = 128,
    image_size: tuple[int, int] = (28, 28),
    data_dir: str | os.PathLike | None = None,
) -> Datasets:
    return _mnist_family("fashion_mnist", batch_size, image_size, data_dir)


def kmnist(
    batch_size: int = 128,
    image_size: tuple[int, int] = (28, 28),
    data_dir: str | os.PathLike | None = None,
) -> Datasets:
    return _mnist_family("kmnist", batch_size, image_size, data_dir)


for _fn, _title in ((mnist, "MNIST"), (fashion_mnist, "Fashion-MNIST"), (kmnist, "KMNIST")):
    _fn.__doc__ = _MNIST_DOC.format(title=_title, name=_fn.__name__)
    _fn.cache_clear = _MNIST_CACHED[_fn.__name__].cache_clear


# --- CIFAR-10: python pickle batches ------------------------------------------------------------

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR10_SOURCE = (
    "the CIFAR-10 python version (cifar-10-python.tar.gz) from Alex Krizhevsky's CIFAR page "
    "(www.cs.toronto.edu/~kriz/cifar.html), unpacked so that it creates the "
    f"{CIFAR10_FOLDER}/ folder (torchvision's cache unpacks to the same folder)"
)
_CIFAR10_LAYOUT = f"Its files are read from <data_dir>/{CIFAR10_FOLDER}/: " + ", ".join(
    CIFAR10_FILES
)

# The batches hold only dicts, lists, bytes and numpy arrays; refusing every other global
# means a stray or hostile file cannot run code when unpickled. (_codecs.encode is how
# pickle protocols < 3 write Python 3 bytes; it only re-encodes a string.)
_NUMPY_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays, "
            "lists and bytes"
        )


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        try:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        except Exception as e:
            raise ValueError(
                f"{path} is not a CIFAR-10 python batch ({type(e).__name__}: {e})."
            ) from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path}: expected a dict with b'data' and b'labels', got {keys}.")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: b'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}.")
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: expected {len(data)} labels, got shape {labels.shape}.")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be 0..9, got {labels.min()}..{labels.max()}.")
    # Rows are 1,024 red, then green, then blue values of a 32x32 image, row-major.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _find_cifar10_files(data_dir: str, origin: str) -> list[str]:
    folder = os.path.join(data_dir, CIFAR10_FOLDER)
    paths = [os.path.join(folder, f) for f in CIFAR10_FILES]
    missing = [f for f, p in zip(CIFAR10_FILES, paths, strict=True) if not os.path.isfile(p)]
    if missing:
        state = "" if os.path.isdir(folder) else " (the directory does not exist)"
        raise DatasetNotFoundError(
            f"cifar10: searched {folder}{state}, with data_dir {data_dir} from {origin}. "
            f"Missing: {', '.join(missing)}. Expected there: {', '.join(CIFAR10_FILES)}. "
            f"Get them from {CIFAR10_SOURCE}. lopt never downloads data: unpack the archive in "
            f"{data_dir}, or set data_dir / LOPT_DATA_DIR to the directory that holds "
            f"{CIFAR10_FOLDER}/."
        )
    return paths


@dataset_lru_cache
def _cifar10(batch_size: int, image_size: tuple[int, int], data_dir: str) -> Datasets:
    paths = _find_cifar10_files(data_dir, "the caller")
    loaded = [_read_cifar_batch(p) for p in paths]
    train_x = np.concatenate([x for x, _ in loaded[:-1]])
    train_y = np.concatenate([y for _, y in loaded[:-1]])
    test_x, test_y = loaded[-1]
    num_train = len(train_x)
    train, inner_valid, outer_valid = _carve_valid(num_train, CIFAR10_VALID_DIVISOR, 0, "cifar10")
    split_ids = {
        "train": train,
        "inner_valid": inner_valid,
        "outer_valid": outer_valid,
        "test": num_train + np.arange(len(test_x)),
    }
    images = np.concatenate([train_x, test_x])
    labels = np.concatenate([train_y, test_y])
    extra = {"data_dir": data_dir}
    return _image_datasets("cifar10", images, labels, split_ids, batch_size, image_size, extra)


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
    size = image_size_arg(image_size, CIFAR10_SIZES, "cifar10")
    batch_size = positive_int(batch_size, "batch_size")
    resolved = resolve_data_dir(data_dir, "cifar10", _CIFAR10_LAYOUT)
    _find_cifar10_files(resolved, data_dir_origin(data_dir))
    return _cifar10(batch_size, size, resolved)


cifar10.cache_clear = _cifar10.cache_clear
