"""The ``lopt`` command line, and a real third-party plugin installed with pip, end to end."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import pytest

import lopt_core
from helpers import DOCS_DIR, FIXTURES_DIR
from lopt_core import cli, gin_config
from lopt_core.registry import get_registry, reset_registry

pytestmark = pytest.mark.usefixtures("fresh_registry")

EXAMPLE = FIXTURES_DIR / "lopt_example_plugin"
EXAMPLE_DIST = "lopt-example-plugin"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_and_subcommands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"lopt {lopt_core.__version__}"
    subparsers = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert {"config", "plugins"} <= set(subparsers.choices)
    assert run_cli(capsys)[0] == 0  # no command: help


def test_plugins_prints_an_aligned_table(capsys):
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "DISTRIBUTION", "VERSION", "PLUGIN"]
    adam = next(line for line in lines if re.match(r"optimizer\s+Adam\s", line))
    assert adam.split() == ["optimizer", "Adam", "lopt", lopt_core.__version__, "optimizers"]
    column = lines[0].index("DISTRIBUTION")
    assert adam[column:].startswith("lopt ")  # columns line up
    code, out, _ = run_cli(capsys, "plugins", "--kind", "optimizer")
    assert {line.split()[0] for line in out.splitlines()[2:] if line.strip()} == {"optimizer"}


def test_plugins_json_reports_failures(capsys, make_plugin_dist, monkeypatch):
    make_plugin_dist(
        "broken-dist", {"broken_c": "raise ImportError('needs libfoo')\n"}, {"broken": "broken_c"}
    )  # noqa: E501
    monkeypatch.setenv("LOPT_PLUGINS", "broken-dist,optimizers")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the report lists the failure; no warning repeats it
        code, out, _ = run_cli(capsys, "plugins", "--json")
    assert code == 0
    data = json.loads(out)
    assert {e["name"] for e in data["entries"]} >= {"Adam", "SGD"}
    [failure] = data["failures"]
    assert failure["distribution"] == "broken-dist"
    assert failure["entry_point"] == "broken = broken_c"
    assert (failure["error_type"], failure["error"]) == ("ImportError", "needs libfoo")
    assert data["allow"] == ["broken-dist", "optimizers"]

    _, out, _ = run_cli(capsys, "plugins")
    assert "Failed plugins (1):" in out and "broken-dist 1.0" in out


def test_strict_plugins_flag_fails_with_the_traceback(capsys, make_plugin_dist, monkeypatch):
    make_plugin_dist(
        "broken-dist", {"broken_t": "raise ImportError('needs libfoo')\n"}, {"broken": "broken_t"}
    )  # noqa: E501
    monkeypatch.setenv("LOPT_PLUGINS", "broken-dist")
    code, _, err = run_cli(capsys, "--strict-plugins", "plugins")
    assert code == 1
    assert "Traceback" in err and "broken_t.py" in err
    assert "lopt: error: lopt plugin 'broken' (broken-dist 1.0" in err


def test_config_prints_the_resolved_config_or_the_error(capsys, tmp_path):
    config = tmp_path / "exp.gin"
    config.write_text("train.optimizer = @Adam()\nAdam.learning_rate = 0.1\n")
    code, out, _ = run_cli(capsys, "config", str(config), "--gin-param", "Adam.learning_rate = 0.3")
    assert code == 0
    assert "Adam.learning_rate = 0.3" in out and "train.optimizer = @Adam()" in out

    config.write_text("train.optimizer = @Adam()\nAdam.lr = 0.1\n")
    code, out, err = run_cli(capsys, "config", str(config))
    assert code == 1 and out == ""
    assert f"{config}:2: 'Adam' has no parameter 'lr'" in err


# ------------------------------------------------------------ a real plugin, installed with pip


def _pip(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout}{result.stderr}"


def _can_build_offline() -> str | None:
    """Why the example cannot be built without network, or None if it can."""
    if importlib.util.find_spec("pip") is None:
        return "pip is not installed in this environment"
    try:
        version = tuple(int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
    except importlib.metadata.PackageNotFoundError:
        version = (0, 0)
    has_wheel = importlib.util.find_spec("wheel") is not None
    if version < (70, 1) and not (version >= (64, 0) and has_wheel):
        return "building the example offline needs setuptools>=70.1: pip install -e '.[test]'"
    return None


def _forget_example_modules() -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "lopt_example_plugin"]:
        del sys.modules[name]


@contextlib.contextmanager
def pip_installed(source: Path, dist: str):
    """``pip install`` ``source`` into this interpreter; ``pip uninstall`` it on the way out."""
    _pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(source))
    try:
        importlib.invalidate_caches()
        reset_registry()
        yield
    finally:
        _pip("uninstall", "--yes", dist)
        importlib.invalidate_caches()
        _forget_example_modules()
        reset_registry()


def _lopt_command() -> list[str]:
    script = shutil.which("lopt", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "lopt_core.cli"]


def test_example_plugin_end_to_end(tmp_path, capsys):
    reason = _can_build_offline()
    if reason:
        pytest.skip(reason)
    try:
        importlib.metadata.distribution(EXAMPLE_DIST)
        pytest.skip(f"{EXAMPLE_DIST} is already installed; uninstall it to run this test")
    except importlib.metadata.PackageNotFoundError:
        pass
    source = tmp_path / "lopt_example_plugin"  # a copy: building leaves build/ and egg-info
    shutil.copytree(EXAMPLE, source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOPT_")}

    with pip_installed(source, EXAMPLE_DIST):
        # `lopt plugins`, in a new process, lists the plugin with its distribution.
        result = subprocess.run(
            [*_lopt_command(), "plugins", "--json"], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr
        mine = [
            e for e in json.loads(result.stdout)["entries"] if e["distribution"] == EXAMPLE_DIST
        ]
        assert {(e["kind"], e["name"]) for e in mine} == {
            ("dataset", "ExampleRegressionData"),
            ("task", "ExampleLinearRegression"),
            ("task_family", "ExampleLinearRegressionFamily"),
        }
        assert {(e["version"], e["entry_point"]) for e in mine} == {
            ("0.1.0", "example = lopt_example_plugin.plugin")
        }
        code, out, _ = run_cli(capsys, "plugins", "--kind", "task")
        row = next(line for line in out.splitlines() if "ExampleLinearRegression" in line)
        assert row.split() == ["task", "ExampleLinearRegression", EXAMPLE_DIST, "0.1.0", "example"]

        # Its task, configured from a .gin file, trains.
        gin_config.parse_config(source / "example.gin")  # the config docs/plugins.md shows
        result = gin_config.configured("train")(key=jax.random.PRNGKey(0))
        assert float(result.test_loss[-1]) < 0.2 * float(result.test_loss[0])
        operative = gin_config.write_operative_config(tmp_path / "run").read_text()
        assert "ExampleLinearRegression.dim = 3" in operative
        assert f"{EXAMPLE_DIST} 0.1.0" in operative

        family = get_registry().create("task_family", "ExampleLinearRegressionFamily", dim=3)
        assert lopt_core.sample_cfgs(family, jax.random.PRNGKey(1), 4).shape == (4,)

    # Uninstalled: a fresh registry no longer has it.
    assert "ExampleLinearRegression" not in get_registry().names("task")
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution(EXAMPLE_DIST)


def test_docs_show_the_example_plugin_verbatim():
    """docs/plugins.md's worked example is this package: its files must appear unchanged."""
    doc = (DOCS_DIR / "plugins.md").read_text()
    for name in (
        "pyproject.toml",
        "example.gin",
        "lopt_example_plugin/plugin.py",
        "lopt_example_plugin/regression.py",
    ):
        assert (EXAMPLE / name).read_text() in doc, f"docs/plugins.md is out of date with {name}"
