"""Reading the image datasets' files: IDX (the MNIST family) and CIFAR-10's python batches.

Each ``find_*`` function says where the files were looked for and how to get
them when some are missing; each reader checks what it read. lopt never
downloads data.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib

import numpy as np

from lopt_plugins.datasets._common import DatasetNotFoundError


def _not_found(
    name: str,
    folder: str,
    data_dir: str,
    origin: str,
    missing: list[str],
    expected: str,
    source: str,
    fix: str,
) -> DatasetNotFoundError:
    """The error for files ``missing`` from ``folder``: where lopt looked (and why there),
    what it expected, where to get the files and how to put them in place (``fix``)."""
    state = "" if os.path.isdir(folder) else " (the directory does not exist)"
    return DatasetNotFoundError(
        f"{name}: searched {folder}{state}, with data_dir {data_dir} from {origin}. "
        f"Missing: {', '.join(missing)}. Expected there: {expected}. "
        f"Get them from {source}. lopt never downloads data: {fix}."
    )


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

MNIST_LAYOUT = "Its files are read from <data_dir>/{name}/: " + ", ".join(
    f + "[.gz]" for f in MNIST_FILES
)


def find_mnist_files(name: str, data_dir: str, origin: str) -> dict[str, str]:
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
        raise _not_found(
            name,
            folder,
            data_dir,
            origin,
            missing,
            f"{', '.join(f + '[.gz]' for f in MNIST_FILES)} (plain or gzipped IDX files)",
            MNIST_SOURCES[name],
            f"copy or link the files into {folder}, or set data_dir / LOPT_DATA_DIR to a "
            f"directory that holds a {name}/ folder",
        )
    return found


def load_idx_pair(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[N, 28, 28, 1]`` and their labels (0..9) from two IDX files."""
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


# --- CIFAR-10: python pickle batches ------------------------------------------------------------

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR10_SOURCE = (
    "the CIFAR-10 python version (cifar-10-python.tar.gz) from Alex Krizhevsky's CIFAR page "
    "(www.cs.toronto.edu/~kriz/cifar.html), unpacked so that it creates the "
    f"{CIFAR10_FOLDER}/ folder (torchvision's cache unpacks to the same folder)"
)
CIFAR10_LAYOUT = f"Its files are read from <data_dir>/{CIFAR10_FOLDER}/: " + ", ".join(
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


def read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[N, 32, 32, 3]`` and labels (0..9) of one CIFAR-10 python batch file."""
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


def find_cifar10_files(data_dir: str, origin: str) -> list[str]:
    """The paths of ``CIFAR10_FILES`` in ``<data_dir>/cifar-10-batches-py/``, in that order."""
    folder = os.path.join(data_dir, CIFAR10_FOLDER)
    paths = [os.path.join(folder, f) for f in CIFAR10_FILES]
    missing = [f for f, p in zip(CIFAR10_FILES, paths, strict=True) if not os.path.isfile(p)]
    if missing:
        raise _not_found(
            "cifar10",
            folder,
            data_dir,
            origin,
            missing,
            ", ".join(CIFAR10_FILES),
            CIFAR10_SOURCE,
            f"unpack the archive in {data_dir}, or set data_dir / LOPT_DATA_DIR to the "
            f"directory that holds {CIFAR10_FOLDER}/",
        )
    return paths
