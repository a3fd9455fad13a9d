"""What every built-in dataset shares: split assignment, the batch iterator, argument checks.

Data is loaded once into host numpy arrays; a batch is a fancy-indexed copy of
one split's arrays, so its host cost is one gather of ``batch_size`` rows.
"""

from __future__ import annotations

import operator
import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from lopt_core.datasets import SPLITS, Datasets

DATA_DIR_ENV = "LOPT_DATA_DIR"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where lopt looked; the message says where to get them."""


class RandomBatches(Iterator[dict[str, np.ndarray]]):
    """An endless iterator of fixed-shape random batches drawn from one split's arrays.

    Sampling walks through a permutation of the whole split and reshuffles when
    it is used up (a shuffle buffer as large as the split), continuing into the
    next permutation mid-batch. Every example is therefore seen once per epoch
    whoever consumes the iterator, no partial batch is ever dropped or padded,
    and a split smaller than ``batch_size`` still yields full batches (an
    example then appears more than once in a batch).

    ``example_ids`` identifies the split's examples inside the source data (see
    each builder's docstring), so that split membership can be checked.
    """

    def __init__(
        self,
        data: Mapping[str, np.ndarray],
        example_ids: np.ndarray,
        batch_size: int,
        to_batch: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
        seed: Sequence[int],
    ):
        self.data = dict(data)
        self.example_ids = np.asarray(example_ids)
        self.batch_size = int(batch_size)
        self._to_batch = to_batch
        self._num = len(self.example_ids)
        if self._num == 0:
            raise ValueError("A split must hold at least one example to sample batches from.")
        for key, value in self.data.items():
            if len(value) != self._num:
                raise ValueError(f"data[{key!r}] has {len(value)} rows, expected {self._num}.")
        self._rng = np.random.default_rng(list(seed))
        self._perm = self._rng.permutation(self._num)
        self._pos = 0

    def __len__(self) -> int:
        """Number of examples in the split (not batches: the iterator never ends)."""
        return self._num

    def __iter__(self) -> RandomBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        end = self._pos + self.batch_size
        if end <= self._num:  # the usual case: one slice of the current permutation
            rows = self._perm[self._pos : end]
            self._pos = end
        else:
            rows = np.empty(self.batch_size, np.int64)
            filled = 0
            while filled < self.batch_size:
                if self._pos == self._num:
                    self._perm = self._rng.permutation(self._num)
                    self._pos = 0
                take = min(self.batch_size - filled, self._num - self._pos)
                rows[filled : filled + take] = self._perm[self._pos : self._pos + take]
                self._pos += take
                filled += take
        return self._to_batch({key: value[rows] for key, value in self.data.items()})


def split_sizes(num: int, fractions: Sequence[float], what: str) -> list[int]:
    """Sizes of the four splits of ``num`` examples; every split but the first gets at least one.

    ``fractions`` are those of ``inner_valid``, ``outer_valid``, ``test``; train gets the rest.
    """
    held_out = [max(1, round(f * num)) for f in fractions]
    train = num - sum(held_out)
    if train < 1:
        raise ValueError(
            f"{what} has only {num} examples, too few to give each of the splits "
            f"{', '.join(SPLITS)} at least one; it needs at least {sum(held_out) + 1}."
        )
    return [train, *held_out]


def permuted_splits(num: int, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Cut a fixed-seed permutation of ``range(num)`` into consecutive pieces of ``sizes``.

    Each piece comes back sorted. The permutation depends only on ``num`` and
    ``seed``, so split membership is the same on every run and every machine.
    """
    if sum(sizes) != num:
        raise ValueError(f"split sizes {list(sizes)} do not add up to {num} examples.")
    perm = np.random.default_rng(seed).permutation(num)
    bounds = np.cumsum([0, *sizes])
    return [np.sort(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def make_datasets(
    name: str,
    split_data: Mapping[str, Mapping[str, np.ndarray]],
    split_ids: Mapping[str, np.ndarray],
    batch_size: int,
    to_batch: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    extra_info: Mapping[str, Any],
) -> Datasets:
    """Wrap per-split arrays in ``RandomBatches`` and a ``Datasets`` with its abstract batch."""
    base_seed = zlib.crc32(name.encode())  # fixed per dataset, independent of PYTHONHASHSEED
    iterators = {
        split: RandomBatches(
            split_data[split], split_ids[split], batch_size, to_batch, (base_seed, i)
        )
        for i, split in enumerate(SPLITS)
    }
    # One example through to_batch gives the batch's structure and dtypes without sampling.
    train_data = split_data["train"]
    example = to_batch({key: value[:1] for key, value in train_data.items()})
    abstract_batch = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct((batch_size, *x.shape[1:]), x.dtype), example
    )
    info = {
        "name": name,
        "batch_size": batch_size,
        "num_examples": {split: len(iterators[split]) for split in SPLITS},
        **extra_info,
    }
    return Datasets(**iterators, extra_info=info, abstract_batch=abstract_batch)


def image_size_arg(value: Any, allowed: Sequence[tuple[int, int]], dataset: str) -> tuple[int, int]:
    """``value`` as an ``(height, width)`` tuple, checked against the sizes ``dataset`` offers."""
    try:
        size = tuple(operator.index(v) for v in value)
    except TypeError:
        size = None
    if size not in allowed:
        choices = ", ".join(str(s) for s in allowed)
        raise ValueError(f"{dataset}: image_size must be one of {choices}; got {value!r}.")
    return size


def resolve_data_dir(data_dir: str | os.PathLike | None, dataset: str, layout: str) -> str:
    """The absolute data directory: the ``data_dir`` argument, else ``$LOPT_DATA_DIR``.

    ``layout`` describes the files expected below it, for the error raised when
    neither is given.
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        raise DatasetNotFoundError(
            f"{dataset} reads its files from a data directory, but none was given: pass "
            f"data_dir=... (in a gin file: `{dataset}.data_dir = '/path/to/data'`) or set the "
            f"{DATA_DIR_ENV} environment variable. {layout} lopt never downloads data."
        )
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def data_dir_origin(data_dir_arg: str | os.PathLike | None) -> str:
    """Where the data directory came from, for error messages."""
    if data_dir_arg is None:
        return f"the {DATA_DIR_ENV} environment variable"
    return "the data_dir argument"
