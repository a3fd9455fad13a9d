"""Shared fixtures: a fresh plugin registry and gin config, an empty dataset cache, and real
throwaway plugin packages."""

from __future__ import annotations

import gc
import os
import sys
import textwrap

# Tests run tiny programs where XLA's backend optimizations cost more compile time
# than they save (the suite runs about twice as fast without them). This must be
# set before jax initializes its backend, i.e. before any test computes anything.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

# The CLI turns on JAX's persistent compilation cache (lopt_core.compile_cache); tests call
# it in-process, and must neither read nor fill the user's cache.
os.environ.setdefault("LOPT_COMPILATION_CACHE", "off")

import gin  # noqa: E402  (after XLA_FLAGS on purpose)
import jax  # noqa: E402
import pytest  # noqa: E402

from lopt_core.datasets import clear_dataset_cache
from lopt_core.registry import ENV_DISABLE_AUTOLOAD, ENV_PLUGINS, ENV_STRICT, reset_registry


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every program XLA compiles for the CPU holds memory mappings of its machine code for as long
    as a jit cache refers to it. One pytest process compiles thousands of programs, and past
    the kernel's ``vm.max_map_count`` (65530) a mapping fails and XLA segfaults (the full
    suite did, at test 687 of 780). Clearing the caches between modules keeps the count low.
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def fresh_registry(monkeypatch):
    """No cached registry, no gin bindings and no LOPT_* plugin variables, before and after."""
    for name in (ENV_DISABLE_AUTOLOAD, ENV_PLUGINS, ENV_STRICT):
        monkeypatch.delenv(name, raising=False)
    reset_registry()
    gin.clear_config()
    yield
    reset_registry()
    gin.clear_config()


@pytest.fixture
def fresh_cache():
    """No datasets cached by dataset_lru_cache, before and after: builders really build."""
    clear_dataset_cache()
    yield
    clear_dataset_cache()


@pytest.fixture
def make_plugin_dist(tmp_path, monkeypatch):
    """Factory: write a real installed distribution onto ``sys.path``.

    ``make_plugin_dist("my-dist", {"my_mod": "source"}, {"ep_name": "my_mod"})``
    writes ``my_mod.py`` and ``my_dist-1.0.dist-info`` (METADATA and an
    ``entry_points.txt`` for group ``lopt``) into a fresh folder on ``sys.path``,
    exactly what pip leaves behind, so ``importlib.metadata`` finds it for real.
    The modules are dropped from ``sys.modules`` afterwards.
    """
    modules: list[str] = []

    def make(
        dist: str,
        sources: dict[str, str],
        entry_points: dict[str, str],
        version: str = "1.0",
        group: str = "lopt",
    ):
        root = tmp_path / f"site-{dist}"
        root.mkdir()
        for module, source in sources.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            modules.append(module)
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = [f"[{group}]"] + [f"{name} = {value}" for name, value in entry_points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        monkeypatch.syspath_prepend(str(root))  # also invalidates the import caches
        return root

    yield make
    for module in modules:
        sys.modules.pop(module, None)
