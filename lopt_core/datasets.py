"""Datasets: four endless iterators of fixed-shape batches, and batch stacking.

A batch is a pytree of numpy arrays whose shapes never change, so that the
batches of ``n`` steps can be stacked along a new leading axis and consumed by
one ``lax.scan``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

SPLITS: tuple[str, ...] = ("train", "inner_valid", "outer_valid", "test")

Batch = Any  # a pytree of numpy arrays with fixed shapes


class Datasets:
    """The four splits of a dataset, each an endless iterator of batches.

    ``train`` feeds inner training, ``inner_valid`` tunes during inner training,
    ``outer_valid`` is what meta-training optimizes and ``test`` is for the
    final evaluation of a learned optimizer.
    """

    def __init__(
        self,
        train: Iterator[Batch],
        inner_valid: Iterator[Batch],
        outer_valid: Iterator[Batch],
        test: Iterator[Batch],
        extra_info: Mapping[str, Any] | None = None,
        abstract_batch: Any = None,
    ):
        self.train = train
        self.inner_valid = inner_valid
        self.outer_valid = outer_valid
        self.test = test
        self.extra_info = dict(extra_info or {})
        self.abstract_batch = abstract_batch

    def split(self, name: str) -> Iterator[Batch]:
        """The iterator of split ``name`` (one of ``SPLITS``)."""
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; the splits are {', '.join(SPLITS)}.")
        return getattr(self, name)

    def __repr__(self) -> str:
        return f"Datasets(extra_info={self.extra_info!r}, abstract_batch={self.abstract_batch!r})"


_BUILT: dict[Any, Datasets] = {}


def dataset_lru_cache(builder: Callable[..., Datasets]) -> Callable[..., Datasets]:
    """Decorator: equal arguments to ``builder`` return the very same ``Datasets``.

    Tasks built from the same data then share one set of iterators instead of
    each holding its own copy of the arrays. Arguments are bound to the
    builder's signature with defaults filled in, so ``f(4)``, ``f(dim=4)`` and
    ``f(4, 8)`` (when 8 is the default) are one entry. ``clear_dataset_cache()``
    empties the cache of every decorated builder; ``builder.cache_clear()`` just its own.
    """
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # e.g. some builtins have no signature
        signature = None

    @functools.wraps(builder)
    def cached(*args, **kwargs):
        call_args, call_kwargs = args, kwargs
        if signature is not None:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return builder(*args, **kwargs)  # let the builder report its own bad call
            bound.apply_defaults()
            call_args, call_kwargs = bound.args, bound.kwargs
        try:
            cache_key = (builder, call_args, tuple(sorted(call_kwargs.items())))
            hash(cache_key)
        except TypeError as e:
            raise TypeError(
                f"{builder.__qualname__} is wrapped in dataset_lru_cache, so its arguments must be "
                f"hashable (defaults included); got args={call_args!r} kwargs={call_kwargs!r}. "
                "Pass tuples instead of lists."
            ) from e
        if cache_key not in _BUILT:
            _BUILT[cache_key] = builder(*args, **kwargs)
        return _BUILT[cache_key]

    def cache_clear() -> None:
        for cache_key in [k for k in _BUILT if k[0] is builder]:
            del _BUILT[cache_key]

    cached.cache_clear = cache_clear
    return cached


def clear_dataset_cache() -> None:
    """Forget every ``Datasets`` built through ``dataset_lru_cache``."""
    _BUILT.clear()


@contextlib.contextmanager
def fresh_datasets() -> Iterator[None]:
    """Inside, ``dataset_lru_cache`` builders make new ``Datasets``, at their iterators' start.

    What is built inside is shared inside only; the cache of outside is left as
    it was, and its iterators are not drawn from. Whatever was drawn before, a
    task built inside therefore reads the same batches (for seeded iterators,
    as every built-in dataset's): what makes a benchmark reproducible.
    """
    global _BUILT
    outside, _BUILT = _BUILT, {}
    try:
        yield
    finally:
        _BUILT = outside


def stack_batches(iterator: Iterator[Batch], n: int) -> Batch:
    """Draw ``n`` batches and stack them along a new leading (step) axis."""
    if n < 1:
        raise ValueError(f"n must be at least 1 to stack batches, got {n}.")
    batches = [next(iterator) for _ in range(n)]
    first = jax.tree_util.tree_structure(batches[0])
    for i, batch in enumerate(batches[1:], start=1):
        if jax.tree_util.tree_structure(batch) != first:
            raise ValueError(
                f"Batch {i} has structure {jax.tree_util.tree_structure(batch)} but batch 0 has "
                f"{first}; a dataset iterator must yield batches of one fixed structure."
            )
    try:
        return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *batches)
    except ValueError as e:
        shapes = [jax.tree_util.tree_map(np.shape, b) for b in batches[:3]]
        raise ValueError(
            f"Could not stack {n} batches: their shapes differ (first ones: {shapes}). A dataset "
            "iterator must yield batches of fixed shape (drop or pad the last partial batch)."
        ) from e


def stack_task_batches(iterator: Iterator[Batch], num_tasks: int, n: int) -> Batch:
    """Draw ``n`` batches for each of ``num_tasks`` tasks: leaves get shape ``[num_tasks, n, ...]``.

    Every task gets its own batches, drawn one after another from the shared iterator.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be at least 1, got {num_tasks}.")
    per_task = [stack_batches(iterator, n) for _ in range(num_tasks)]
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *per_task)


class CountingIterator:
    """Wraps an iterator and counts the items drawn, so a run can skip them when resumed."""

    def __init__(self, iterator: Iterator[Batch]):
        self.iterator = iterator
        self.count = 0

    def __iter__(self) -> CountingIterator:
        return self

    def __next__(self) -> Batch:
        item = next(self.iterator)
        self.count += 1
        return item

    def skip(self, n: int) -> None:
        """Draw and drop ``n`` items."""
        for _ in range(int(n)):
            next(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.iterator, name)  # e.g. a dataset's own example_ids


def count_draws(datasets: Datasets) -> dict[str, CountingIterator]:
    """Make every split of ``datasets`` count its draws (in place; idempotent).

    Returns the counting iterators by split. Everyone sharing this ``Datasets``
    (e.g. through ``dataset_lru_cache``) draws through them from now on.
    """
    counters = {}
    for split in SPLITS:
        iterator = datasets.split(split)
        if not isinstance(iterator, CountingIterator):
            iterator = CountingIterator(iterator)
            setattr(datasets, split, iterator)
        counters[split] = iterator
    return counters


class DrawPositions:
    """Per split, how many batches were drawn from ``datasets`` since this object was made.

    The one way lopt counts data positions (resume, workers, validation draws):
    the splits count their draws in place (``count_draws``), so the counts see
    every reader of a shared ``Datasets``; positions are relative to the counts
    when this object was made (or last ``rebase``d), because the iterators may
    already have been drawn from (e.g. by an earlier run sharing them through
    ``dataset_lru_cache``). A data-free family (``datasets=None``) has no splits.
    """

    def __init__(self, datasets: Datasets | None):
        self.counters = {} if datasets is None else count_draws(datasets)
        self.rebase()

    @property
    def splits(self) -> tuple[str, ...]:
        """The counted splits (none for a data-free family)."""
        return tuple(self.counters)

    def rebase(self) -> None:
        """Count positions from the iterators' current state."""
        self._base = {split: c.count for split, c in self.counters.items()}

    def drawn(self) -> dict[str, int]:
        """Batches drawn per split since the base."""
        return {split: c.count - self._base[split] for split, c in self.counters.items()}

    def skip(self, split: str, n: int) -> None:
        """Draw and drop ``n`` batches of ``split``."""
        self.counters[split].skip(n)
