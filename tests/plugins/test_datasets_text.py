"""The byte-level text dataset: from a file, a folder, and the built-in corpus."""

import numpy as np
import pytest

import lopt_core
import lopt_plugins.datasets as D

pytestmark = pytest.mark.usefixtures("fresh_cache")


def _corpus(num_bytes=5000, seed=0):
    # Random bytes 32..255 (not all valid UTF-8: the vocabulary is bytes), so that every
    # 17-byte window occurs once in the corpus.
    rng = np.random.default_rng(seed)
    return bytes(rng.integers(32, 256, num_bytes, dtype=np.uint8))


def test_text_windows_round_trip_and_splits_do_not_share_text(tmp_path):
    corpus = _corpus()
    (tmp_path / "corpus.txt").write_bytes(corpus)
    ds = D.text(batch_size=8, sequence_length=16, path=tmp_path / "corpus.txt")
    window = 17
    num_windows = (len(corpus) + 1) // window  # the reader appends one newline per file
    assert ds.extra_info["vocab_size"] == 256 and ds.extra_info["sequence_length"] == 16
    ids = {s: ds.split(s).example_ids for s in lopt_core.SPLITS}
    assert {s: len(v) for s, v in ids.items()} == ds.extra_info["num_examples"]
    np.testing.assert_array_equal(
        np.sort(np.concatenate(list(ids.values()))), np.arange(num_windows)
    )
    # Splits are made of contiguous runs of windows (blocks), not scattered single windows.
    assert all(np.sum(np.diff(v) != 1) < len(v) // 2 for v in ids.values())
    full = corpus + b"\n"
    for split, split_ids in ids.items():
        it = ds.split(split)
        for i, w in zip(split_ids[:5], it.data["window"][:5], strict=True):
            assert bytes(w) == full[i * window : (i + 1) * window]
        batch = next(it)
        assert batch["obs"].shape == (8, 16) and batch["obs"].dtype == np.int32
        assert batch["target"].shape == (8, 16) and batch["target"].dtype == np.int32
        np.testing.assert_array_equal(batch["obs"][:, 1:], batch["target"][:, :-1])
        for obs, target in zip(batch["obs"], batch["target"], strict=True):
            seq = bytes(np.concatenate([obs, target[-1:]]).astype(np.uint8))
            start = full.find(seq)
            assert start % window == 0 and start // window in split_ids
    for spec, key in [(ds.abstract_batch["obs"], "obs"), (ds.abstract_batch["target"], "target")]:
        assert spec.shape == (8, 16) and spec.dtype == np.int32, key


def test_text_reads_a_folder_in_sorted_order_skipping_binary_and_hidden_files(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"second file " * 40)
    (tmp_path / "a.txt").write_bytes(b"first file " * 40)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.md").write_bytes(b"third file " * 40)
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    (tmp_path / ".hidden").write_bytes(b"HIDDEN " * 40)
    ds = D.text(batch_size=2, sequence_length=7, path=str(tmp_path))
    assert ds.extra_info["num_files"] == 3
    windows = np.concatenate([ds.split(s).data["window"] for s in lopt_core.SPLITS])
    order = np.argsort(np.concatenate([ds.split(s).example_ids for s in lopt_core.SPLITS]))
    text = bytes(windows[order].reshape(-1))
    expected = b"first file " * 40 + b"\n" + b"second file " * 40 + b"\n" + b"third file " * 40
    assert text == (expected + b"\n")[: len(text)]
    assert len(text) > len(expected) - 8


def test_text_default_corpus_is_the_standard_library_and_deterministic():
    ds = D.text(batch_size=4, sequence_length=32)
    assert ds.extra_info["corpus_bytes"] == 4 * 2**20
    assert ds.extra_info["num_files"] > 10
    sizes = ds.extra_info["num_examples"]
    assert sum(sizes.values()) == 4 * 2**20 // 33
    assert sizes["train"] > 0.75 * sum(sizes.values()) and min(sizes.values()) > 1000
    first = {s: ds.split(s).example_ids.copy() for s in lopt_core.SPLITS}
    train_bytes = ds.train.data["window"].tobytes()
    assert b"def " in train_bytes and b"import " in train_bytes  # it is Python source
    lopt_core.clear_dataset_cache()
    again = D.text(batch_size=4, sequence_length=32)
    assert again is not ds
    assert again.train.data["window"].tobytes() == train_bytes
    for split in lopt_core.SPLITS:
        np.testing.assert_array_equal(again.split(split).example_ids, first[split])
    assert D.text(4, 32, None) is again


def test_text_errors_say_what_was_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"path .*nowhere.txt does not exist"):
        D.text(path=tmp_path / "nowhere.txt")
    (tmp_path / "tiny.txt").write_bytes(b"too short")
    with pytest.raises(ValueError, match=r"holds 10 bytes, only 0 windows of .* 65 bytes"):
        D.text(path=tmp_path / "tiny.txt")
    with pytest.raises(ValueError, match="sequence_length must be a positive integer, got -1"):
        D.text(sequence_length=-1)
