"""Tests for lopt_core.datasets: Datasets, dataset_lru_cache and batch stacking."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lopt_core import SPLITS, Datasets, clear_dataset_cache, dataset_lru_cache, fresh_datasets
from lopt_core.datasets import stack_batches, stack_task_batches


def counting_batches(offset: float = 0.0, shape: tuple[int, ...] = (2, 3)):
    """Endless batches whose values say which batch they are: batch i is full of offset + i."""
    for i in itertools.count():
        yield {
            "x": np.full(shape, offset + i, np.float32),
            "y": np.full(shape[:1], offset + i, np.int32),
        }


def make_datasets(**kwargs) -> Datasets:
    return Datasets(
        train=counting_batches(0),
        inner_valid=counting_batches(1000),
        outer_valid=counting_batches(2000),
        test=counting_batches(3000),
        **kwargs,
    )


# Datasets ---------------------------------------------------------------------------------


def test_splits_are_the_four_documented_names():
    assert SPLITS == ("train", "inner_valid", "outer_valid", "test")


def test_split_returns_the_iterator_of_that_name():
    ds = make_datasets()
    for name, offset in zip(SPLITS, (0, 1000, 2000, 3000), strict=True):
        assert ds.split(name) is getattr(ds, name)
        assert next(ds.split(name))["x"][0, 0] == offset


def test_split_iterators_are_endless_and_keep_their_position():
    ds = make_datasets()
    firsts = [next(ds.train)["x"][0, 0] for _ in range(5)]
    assert firsts == [0, 1, 2, 3, 4]
    # Going through .split() reads the same iterator, not a fresh copy.
    assert next(ds.split("train"))["x"][0, 0] == 5


def test_unknown_split_raises_and_lists_the_splits():
    ds = make_datasets()
    with pytest.raises(ValueError, match="'valid'.*train, inner_valid, outer_valid, test"):
        ds.split("valid")


def test_extra_info_and_abstract_batch():
    ds = make_datasets()
    assert ds.extra_info == {}
    assert ds.abstract_batch is None
    info = {"num_classes": 10}
    abstract = {"x": np.zeros((2, 3), np.float32)}
    ds = make_datasets(extra_info=info, abstract_batch=abstract)
    assert ds.extra_info == {"num_classes": 10}
    # extra_info is copied, so the caller's dict cannot change it afterwards.
    info["num_classes"] = 3
    assert ds.extra_info["num_classes"] == 10
    assert ds.abstract_batch is abstract
    assert "num_classes" in repr(ds)


# dataset_lru_cache ------------------------------------------------------------------------


@pytest.fixture
def counted_builder():
    calls = []

    @dataset_lru_cache
    def build(batch_size: int, offset: float = 0.0) -> Datasets:
        """Build counting datasets."""
        calls.append((batch_size, offset))
        return Datasets(
            *(counting_batches(offset + 1000 * k, (batch_size,)) for k in range(4)),
            extra_info={"batch_size": batch_size},
        )

    yield build, calls
    build.cache_clear()


def test_lru_cache_returns_the_same_object_for_equal_arguments(counted_builder):
    build, calls = counted_builder
    a = build(4)
    b = build(4)
    assert a is b
    assert calls == [(4, 0.0)]
    # Shared object means shared iterators: drawing from one advances the other.
    assert next(a.train)["y"][0] == 0
    assert next(b.train)["y"][0] == 1


def test_lru_cache_distinguishes_different_arguments(counted_builder):
    build, calls = counted_builder
    a, b, c = build(4), build(8), build(4, offset=0.5)
    assert a is not b and a is not c and b is not c
    assert len(calls) == 3
    assert build(4, offset=0.5) is c
    assert len(calls) == 3


def test_lru_cache_keyword_order_does_not_matter():
    @dataset_lru_cache
    def build(a: int = 0, b: int = 0) -> Datasets:
        return make_datasets(extra_info={"a": a, "b": b})

    try:
        assert build(a=1, b=2) is build(b=2, a=1)
    finally:
        build.cache_clear()


def test_lru_cache_binds_arguments_to_the_signature(counted_builder):
    # Positional, keyword and defaulted spellings of one call are one cache entry.
    build, calls = counted_builder
    a = build(4)
    assert build(batch_size=4) is a
    assert build(4, 0.0) is a
    assert build(4, offset=0.0) is a
    assert calls == [(4, 0.0)]


def test_lru_cache_lets_the_builder_report_a_bad_call(counted_builder):
    build, calls = counted_builder
    with pytest.raises(TypeError, match="batch_size"):
        build()
    with pytest.raises(TypeError, match="unexpected keyword argument 'size'"):
        build(size=4)
    assert calls == []


def test_lru_cache_keeps_name_and_docstring(counted_builder):
    build, _ = counted_builder
    assert build.__name__ == "build"
    assert build.__doc__ == "Build counting datasets."


def test_cache_clear_forgets_only_its_own_builder(counted_builder):
    build, calls = counted_builder

    @dataset_lru_cache
    def other() -> Datasets:
        return make_datasets()

    try:
        a, o = build(4), other()
        build.cache_clear()
        a2 = build(4)
        assert a2 is not a
        assert calls == [(4, 0.0), (4, 0.0)]
        assert other() is o
    finally:
        other.cache_clear()


def test_clear_dataset_cache_forgets_every_builder(counted_builder):
    build, calls = counted_builder

    @dataset_lru_cache
    def other() -> Datasets:
        return make_datasets()

    a, o = build(4), other()
    clear_dataset_cache()
    assert build(4) is not a
    assert other() is not o
    assert len(calls) == 2
    other.cache_clear()


def test_fresh_datasets_start_at_the_beginning_and_leave_the_cache_as_it_was(counted_builder):
    build, calls = counted_builder
    outside = build(4)
    assert [int(next(outside.train)["y"][0]) for _ in range(3)] == [0, 1, 2]
    with fresh_datasets():
        inside = build(4)
        assert inside is not outside and build(4) is inside  # shared inside the block
        assert int(next(inside.train)["y"][0]) == 0  # not 3: the start of the data
    assert build(4) is outside
    assert int(next(outside.train)["y"][0]) == 3  # the block did not draw from it
    with fresh_datasets():
        assert int(next(build(4).train)["y"][0]) == 0  # and the next block starts anew
    assert len(calls) == 3


def test_lru_cache_rejects_unhashable_arguments_with_advice(counted_builder):
    build, calls = counted_builder
    with pytest.raises(TypeError, match=r"build.*hashable.*\[4\].*tuples"):
        build([4])
    assert calls == []


# stack_batches ----------------------------------------------------------------------------


def test_stack_batches_stacks_n_batches_in_order_on_a_new_leading_axis():
    it = counting_batches()
    stacked = stack_batches(it, 3)
    assert stacked["x"].shape == (3, 2, 3)
    assert stacked["y"].shape == (3, 2)
    assert stacked["x"].dtype == np.float32 and stacked["y"].dtype == np.int32
    np.testing.assert_array_equal(stacked["x"][:, 0, 0], [0, 1, 2])
    np.testing.assert_array_equal(stacked["y"][:, 1], [0, 1, 2])
    # Exactly n batches were consumed.
    assert next(it)["x"][0, 0] == 3


def test_stack_batches_of_one_keeps_a_leading_axis():
    stacked = stack_batches(counting_batches(), 1)
    assert stacked["x"].shape == (1, 2, 3)


def test_stack_batches_rejects_non_positive_n():
    with pytest.raises(ValueError, match="at least 1.*got 0"):
        stack_batches(counting_batches(), 0)


def test_stack_batches_rejects_batches_of_different_shapes():
    def ragged():
        yield np.zeros((4, 2), np.float32)
        yield np.zeros((3, 2), np.float32)  # a partial last batch

    with pytest.raises(ValueError, match="fixed shape.*drop or pad"):
        stack_batches(ragged(), 2)


def test_stack_batches_rejects_batches_of_different_structure():
    def changing():
        yield {"x": np.zeros(2)}
        yield {"x": np.zeros(2), "y": np.zeros(2)}

    with pytest.raises(ValueError, match="Batch 1 has structure.*fixed structure"):
        stack_batches(changing(), 2)


# stack_task_batches -----------------------------------------------------------------------


def test_stack_task_batches_gives_each_task_its_own_consecutive_batches():
    it = counting_batches()
    stacked = stack_task_batches(it, num_tasks=3, n=2)
    assert stacked["x"].shape == (3, 2, 2, 3)
    assert stacked["y"].shape == (3, 2, 2)
    np.testing.assert_array_equal(stacked["x"][:, :, 0, 0], [[0, 1], [2, 3], [4, 5]])
    assert next(it)["x"][0, 0] == 6


def test_stack_task_batches_rejects_non_positive_sizes():
    with pytest.raises(ValueError, match="num_tasks.*got 0"):
        stack_task_batches(counting_batches(), 0, 2)
    with pytest.raises(ValueError, match="n must be at least 1"):
        stack_task_batches(counting_batches(), 2, 0)
