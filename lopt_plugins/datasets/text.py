"""A byte-level language-modelling dataset from any text file or folder.

The vocabulary is the 256 byte values (UTF-8 text is modelled byte by byte), so
there is no vocabulary file to keep and any corpus gives the same
``vocab_size``. Batches are ``{"obs": int32 [B, T], "target": int32 [B, T]}``
with ``target[:, t] == obs[:, t + 1]`` inside one window of ``T + 1`` bytes.
"""

from __future__ import annotations

import os
import sysconfig

import numpy as np

from lopt_core.datasets import SPLITS, Datasets, dataset_lru_cache
from lopt_core.validation import positive_int
from lopt_plugins.datasets._common import make_datasets, permuted_splits, split_sizes

VOCAB_SIZE = 256
# The default corpus: the standard library's .py files, sorted by path, cut at this size.
DEFAULT_CORPUS_BYTES = 4 * 2**20
# Directories never read for the default corpus: installed packages differ between machines,
# test suites are left out by some distributions, and encodings/ is mostly code-page tables.
_DEFAULT_SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "__pycache__", "test", "tests", "encodings"}
)
# Splits are made of blocks of about this many contiguous bytes, assigned by a fixed-seed
# permutation (at least _MIN_BLOCKS blocks when the corpus allows), so no two splits share text.
BLOCK_BYTES = 16 * 2**10
_MIN_BLOCKS = 20
# Fractions of blocks for inner_valid, outer_valid and test; train gets the rest (80%).
TEXT_FRACTIONS = (0.05, 0.05, 0.1)


def default_corpus_files() -> list[str]:
    """The standard library's ``.py`` files, sorted by their path inside the library."""
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _DEFAULT_SKIP_DIRS and d[0] != "."]
        files.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(".py"))
    return sorted(files, key=lambda p: os.path.relpath(p, root).split(os.sep))


def _read_default_corpus() -> tuple[bytes, int]:
    chunks, total = [], 0
    for path in default_corpus_files():
        with open(path, "rb") as f:
            chunks.append(f.read() + b"\n")
        total += len(chunks[-1])
        if total >= DEFAULT_CORPUS_BYTES:
            break
    if not chunks:
        root = sysconfig.get_paths()["stdlib"]
        raise FileNotFoundError(
            f"text: the default corpus is the standard library's .py files, but none were found "
            f"under {root} (an embedded or zipped Python?). Pass path= a text file or folder."
        )
    return b"".join(chunks)[:DEFAULT_CORPUS_BYTES], len(chunks)


def _read_path(path: str) -> tuple[bytes, int]:
    if os.path.isfile(path):
        files = [path]
    else:
        files = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if d[0] != "."]
            files.extend(os.path.join(dirpath, f) for f in filenames if f[0] != ".")
        files.sort(key=lambda p: os.path.relpath(p, path).split(os.sep))
    chunks = []
    for file in files:
        with open(file, "rb") as f:
            content = f.read()
        if b"\0" not in content:  # skip binary files in a folder: text never holds NUL bytes
            chunks.append(content + b"\n")
    if not chunks:
        raise ValueError(f"text: {path} holds no text files (only binary or hidden ones).")
    return b"".join(chunks), len(chunks)


def _text_batch(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    window = data["window"]
    return {"obs": window[:, :-1].astype(np.int32), "target": window[:, 1:].astype(np.int32)}


@dataset_lru_cache
def _text(batch_size: int, sequence_length: int, path: str | None) -> Datasets:
    corpus, num_files = _read_default_corpus() if path is None else _read_path(path)
    source = "the Python standard library's .py files" if path is None else path
    window = sequence_length + 1
    num_windows = len(corpus) // window
    if num_windows < len(SPLITS):
        raise ValueError(
            f"text: {source} holds {len(corpus)} bytes, only {num_windows} windows of "
            f"sequence_length + 1 = {window} bytes; at least {len(SPLITS)} are needed (one per "
            "split). Use a longer text or a shorter sequence_length."
        )
    windows = np.frombuffer(corpus, np.uint8, count=num_windows * window).reshape(-1, window)
    num_blocks = max(min(num_windows, _MIN_BLOCKS), num_windows // max(1, BLOCK_BYTES // window))
    blocks = np.array_split(np.arange(num_windows), num_blocks)
    sizes = split_sizes(num_blocks, TEXT_FRACTIONS, f"text blocks of {source}")
    block_ids = permuted_splits(num_blocks, sizes, seed=0)
    split_ids = {
        s: np.concatenate([blocks[b] for b in ids])
        for s, ids in zip(SPLITS, block_ids, strict=True)
    }
    split_data = {s: {"window": windows[ids]} for s, ids in split_ids.items()}
    info = {
        "vocab_size": VOCAB_SIZE,
        "sequence_length": sequence_length,
        "source": source,
        "num_files": num_files,
        "corpus_bytes": len(corpus),
    }
    return make_datasets("text", split_data, split_ids, batch_size, _text_batch, info)


def text(
    batch_size: int = 32, sequence_length: int = 64, path: str | os.PathLike | None = None
) -> Datasets:
    """Byte-level text: windows of ``sequence_length + 1`` bytes from a file or folder.

    ``path`` is a text file, or a folder whose non-hidden, non-binary files are
    read in sorted order; ``None`` is the built-in corpus: the standard library's
    ``.py`` files (no test suites), sorted by path and cut at 4 MiB, identical on
    every run of one Python. ``vocab_size`` is 256 (bytes). The corpus is cut into
    non-overlapping windows (``example_ids`` index them: window ``i`` starts at
    byte ``i * (sequence_length + 1)``); contiguous blocks of ~16 KiB of windows go
    to the splits by a fixed-seed permutation, ~80/5/5/10.
    """
    batch_size = positive_int(batch_size, "batch_size")
    sequence_length = positive_int(sequence_length, "sequence_length")
    if path is not None:
        path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"text: path {path} does not exist; pass a text file or a folder of text files, "
                "or path=None for the built-in corpus (the Python standard library's source)."
            )
    return _text(batch_size, sequence_length, path)


text.cache_clear = _text.cache_clear
