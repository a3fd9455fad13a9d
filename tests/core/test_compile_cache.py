"""The command line's persistent compilation cache: where it goes, and how to turn it off."""

from __future__ import annotations

import jax

from lopt_core.compile_cache import compilation_cache_dir, enable_compilation_cache


def test_the_cache_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LOPT_COMPILATION_CACHE", str(tmp_path / "jax"))
    assert compilation_cache_dir() == tmp_path / "jax"
    for off in ("off", "0", "False", "no"):
        monkeypatch.setenv("LOPT_COMPILATION_CACHE", off)
        assert compilation_cache_dir() is None and enable_compilation_cache() is None
    monkeypatch.delenv("LOPT_COMPILATION_CACHE")
    monkeypatch.setenv("LOPT_CACHE_DIR", str(tmp_path / "lopt"))
    assert compilation_cache_dir() == tmp_path / "lopt" / "jax"


def test_enabling_points_jax_at_the_folder_and_an_unusable_one_leaves_it_off(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LOPT_COMPILATION_CACHE", str(blocker / "jax"))
    assert enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == before
    monkeypatch.setenv("LOPT_COMPILATION_CACHE", str(tmp_path / "jax"))
    try:
        assert enable_compilation_cache() == tmp_path / "jax"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax")
        assert (tmp_path / "jax").is_dir()
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
