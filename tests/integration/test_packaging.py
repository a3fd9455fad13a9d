"""A plain (non-editable) install ships the gin recipes, and `lopt train NAME` finds them."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from helpers import REPO_ROOT


def test_every_recipe_is_listed_as_package_data():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    listed = config["options.data_files"]["share/lopt/gin"].split()
    assert sorted(listed) == sorted(f"gin/{p.name}" for p in (REPO_ROOT / "gin").glob("*.gin"))


def test_a_non_editable_install_finds_its_recipes_from_another_folder(tmp_path):
    prefix = tmp_path / "prefix"
    # --ignore-installed: install beside this environment's lopt, never in place of it.
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--ignore-installed",
            "--prefix",
            str(prefix),
            str(REPO_ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    purelib = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import lopt_core, sys; from lopt_core.commands.recipes import find_recipe;"
        "print(lopt_core.__file__); print(find_recipe('quickstart'))"
    )
    env = {**os.environ, "PYTHONPATH": purelib}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    module, recipe = out.stdout.split()
    assert Path(module).is_relative_to(prefix)  # the installed copy, not the source tree
    assert Path(recipe) == prefix / "share" / "lopt" / "gin" / "quickstart.gin"
    assert "meta_train.task_family" in Path(recipe).read_text()
    # And `lopt train NAME` runs it there: the default job of the README, shortened.
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lopt_core.cli",
            "train",
            "quickstart",
            "--no-progress",
            "-p",
            "meta_train.num_steps = 2",
            "-p",
            "meta_train.num_tasks = 2",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "runs" / "quickstart" / "checkpoints" / "latest.msgpack").is_file()
