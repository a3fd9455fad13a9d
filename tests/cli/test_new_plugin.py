"""`lopt new-plugin`: the package it writes installs with pip, passes its own test, and
`lopt plugins` lists it. Installed offline into a folder of its own (`pip --target`),
never into this environment."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from lopt_core.cli import main

DIST = "lopt-tasks-demo"


def _run(*argv: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True)


def test_the_template_installs_passes_its_test_and_is_listed(tmp_path, capsys):
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the package offline needs setuptools: pip install -e '.[test]'")
    assert main(["new-plugin", DIST, "--dir", str(tmp_path)]) == 0
    package = tmp_path / DIST
    assert (package / "lopt_tasks_demo" / "meta_train.gin").is_file()
    assert 'lopt_tasks_demo = "lopt_tasks_demo.plugin"' in (package / "pyproject.toml").read_text()
    capsys.readouterr()

    site = tmp_path / "site"
    install = _run(
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(package),
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOPT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])

    # Its own test, run from its folder as its author would (`pytest`).
    tests = _run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=package, env=env
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "4 passed" in tests.stdout

    listed = _run(sys.executable, "-m", "lopt_core.cli", "plugins", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    mine = {
        (e["kind"], e["name"])
        for e in json.loads(listed.stdout)["entries"]
        if e["distribution"] == DIST
    }
    assert mine == {
        ("dataset", "TasksDemoData"),
        ("task", "TasksDemoTask"),
        ("task_family", "TasksDemoFamily"),
    }


def test_new_plugin_refuses_a_bad_name_and_a_folder_in_use(tmp_path, capsys):
    assert main(["new-plugin", "2fast", "--dir", str(tmp_path)]) == 1
    assert "lopt: error: new-plugin: '2fast' is not a package name" in capsys.readouterr().err
    assert main(["new-plugin", DIST, "--dir", str(tmp_path)]) == 0
    assert main(["new-plugin", DIST, "--dir", str(tmp_path)]) == 1
    assert "already exists and is not empty" in capsys.readouterr().err


def test_docs_plugins_shows_the_template_as_written():
    from helpers import DOCS_DIR
    from lopt_core.plugin_template import plugin_files

    doc = (DOCS_DIR / "plugins.md").read_text()
    assert "lopt new-plugin lopt-tasks-foo" in doc
    for path in plugin_files("lopt-tasks-foo"):
        assert path.rsplit("/", 1)[-1] in doc, path
