"""The core tests run without ``lopt_plugins``: they and the toys they use import none of it.

(Some core tests load the built-in plugins on purpose, through the registry's entry
points: the registry's and gin's. That is the engine at work, not an import here.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from helpers import TESTS_DIR

CORE_DIR = TESTS_DIR / "core"
# What the core tests import or run: their files, the shared modules and the root conftest.
SOURCES = sorted(CORE_DIR.glob("*.py")) + [TESTS_DIR / f for f in ("toys.py", "helpers.py")]
SOURCES.append(TESTS_DIR / "conftest.py")
# An import statement, in code or in a script a test runs in a subprocess.
PLUGIN_IMPORT = re.compile(r"^\s*(?:from|import)\s+lopt_plugins\b", re.MULTILINE)


def test_no_core_test_file_imports_a_plugin():
    offenders = [path.name for path in SOURCES if PLUGIN_IMPORT.search(path.read_text())]
    assert offenders == [], f"these import lopt_plugins: {offenders}"


def test_importing_the_toys_and_every_core_test_module_loads_no_plugin():
    modules = ["toys", "helpers"] + sorted(p.stem for p in CORE_DIR.glob("test_*.py"))
    code = (
        "import importlib, sys\n"
        "import lopt_core, lopt_core.learned, lopt_core.outer, lopt_core.evaluation\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'lopt_plugins')\n"
        "assert not loaded, loaded\n"
        "print('OK', len(sys.modules))\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    paths = (str(TESTS_DIR), str(CORE_DIR), env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
