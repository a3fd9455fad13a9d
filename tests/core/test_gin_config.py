"""gin wiring: registry entries as configurables, includes, overrides, errors, operative config."""

from __future__ import annotations

import gin
import pytest

import lopt_core
from lopt_core import gin_config
from lopt_core.gin_config import GinConfigError, configurable_core, parse_config
from lopt_core.registry import Registry, reset_registry

pytestmark = pytest.mark.usefixtures("fresh_registry")


def _probe(value=None, other=None):
    """Returns what gin bound: lets a test see what a .gin file builds."""
    return value, other


probe = configurable_core(_probe, name="probe", module="lopt_test")


def write(path, text: str):
    path.write_text(text.lstrip("\n"))
    return path


def test_registry_entries_are_configurables_under_their_names():
    parse_config(
        bindings=[
            "probe.value = @Adam()",
            "Adam.learning_rate = 0.5",
            "probe.other = @lopt.optimizer.SGD()",  # the full selector works too
            "lopt.optimizer.SGD.learning_rate = 0.25",
        ]
    )
    adam, sgd = probe()
    assert type(adam) is lopt_core.Adam and adam == lopt_core.Adam(learning_rate=0.5)
    assert sgd == lopt_core.SGD(0.25)


def test_include_relative_to_the_file_and_command_line_override(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    configs.mkdir()
    write(configs / "base.gin", "probe.value = @Adam()\nAdam.learning_rate = 0.1\n")
    top = write(configs / "exp.gin", "include 'base.gin'\nAdam.beta1 = 0.8\n")
    monkeypatch.chdir(tmp_path)  # the include resolves next to exp.gin, not in the cwd
    parse_config("configs/exp.gin", ["Adam.learning_rate = 0.3"])
    assert probe()[0] == lopt_core.Adam(learning_rate=0.3, beta1=0.8)
    parse_config([top])  # without the override
    assert probe()[0] == lopt_core.Adam(learning_rate=0.1, beta1=0.8)


def test_unknown_configurable_names_file_line_and_close_matches(tmp_path):
    write(tmp_path / "base.gin", "probe.other = 1\n\nprobe.value = @Adamm()\n")
    top = write(tmp_path / "exp.gin", "probe.other = 2\ninclude 'base.gin'\n")
    with pytest.raises(GinConfigError) as info:
        parse_config(top)
    error = info.value
    assert error.file.endswith("base.gin") and error.line == 3  # the included file's line
    assert error.statement == "probe.value = @Adamm()"
    assert "Adam (optimizer, lopt " in error.suggestions[0]
    assert f"{error.file}:3: unknown reference 'Adamm'" in str(error)
    assert "Installed lopt plugins:" in str(error)
    assert gin.config_str() == ""  # nothing half-parsed is left behind


def test_unknown_parameter_suggests_the_real_ones(tmp_path):
    path = write(tmp_path / "exp.gin", "probe.value = @Adam()\nAdam.learnig_rate = 0.1\n")
    with pytest.raises(GinConfigError) as info:
        parse_config(path)
    assert (info.value.line, info.value.suggestions) == (2, ["learning_rate"])
    assert "Parameters of Adam: learning_rate, beta1, beta2, epsilon." in str(info.value)


def test_unknown_names_in_bindings_and_other_errors(tmp_path):
    with pytest.raises(GinConfigError) as info:
        parse_config(bindings=["probe.value = 1", "SGDD.learning_rate = 0.1"])
    assert info.value.file is None and info.value.statement == "SGDD.learning_rate = 0.1"
    assert any(s.startswith("SGD (optimizer") for s in info.value.suggestions)

    with pytest.raises(GinConfigError, match="gin config file not found"):
        parse_config(tmp_path / "missing.gin")
    bad = write(tmp_path / "bad.gin", "probe.value = 1\nprobe.other = 1 2\n")
    with pytest.raises(GinConfigError) as info:
        parse_config(bad)
    assert info.value.line == 2 and info.value.file.endswith("bad.gin")
    lopt_core.get_registry().register("task", "Shared", dict)
    lopt_core.get_registry().register("dataset", "Shared", dict)
    with pytest.raises(GinConfigError, match="'Shared' is ambiguous"):
        parse_config(bindings=["probe.value = @Shared()"])
    parse_config(bindings=["probe.value = @lopt.dataset.Shared()"])


def test_operative_config_is_written_and_reproduces_the_run(tmp_path):
    parse_config(bindings=["probe.value = @Adam()", "Adam.learning_rate = 0.3"])
    built = probe()
    path = gin_config.write_operative_config(tmp_path / "run")
    assert path == tmp_path / "run" / "operative_config.gin"
    text = path.read_text()
    assert "Adam.learning_rate = 0.3" in text and "Adam.beta2 = 0.999" in text  # defaults too
    assert f"# lopt {lopt_core.__version__}; plugin distributions: lopt " in text
    gin.clear_config()
    parse_config(path)
    assert probe() == built


def test_rebuilt_registry_updates_the_configurables(make_plugin_dist):
    make_plugin_dist(
        "one-dist",
        {
            "one_p": "import lopt_core\n@lopt_core.hookimpl\ndef lopt_register(registry):\n"
            "    registry.register('task', 'Gadget', lambda: 'one')\n"
        },
        {"one": "one_p"},
    )
    make_plugin_dist(
        "two-dist",
        {
            "two_p": "import lopt_core\n@lopt_core.hookimpl\ndef lopt_register(registry):\n"
            "    registry.register('task', 'Gadget', lambda: 'two')\n"
        },
        {"two": "two_p"},
    )
    binding = ["probe.value = @Gadget()"]
    parse_config(bindings=binding, registry=Registry.from_entry_points(allow=["one-dist"]))
    assert probe()[0] == "one"
    # Same name, another factory: replaced, not a gin "already exists" error.
    parse_config(bindings=binding, registry=Registry.from_entry_points(allow=["two-dist"]))
    assert probe()[0] == "two"
    # Gone from the registry (plugin uninstalled): gone from gin too.
    with pytest.raises(GinConfigError, match="unknown reference 'Gadget'"):
        parse_config(bindings=binding, registry=Registry.from_entry_points(allow=["optimizers"]))
    reset_registry()


def test_core_entry_points_are_configurables():
    core = gin_config.core_configurables()
    assert {"train", "train_family", "meta_train"} <= set(core)
    assert core["train"] is gin_config.configured("train")
    assert core["train"] is not lopt_core.train  # the wrapper, not the plain function
    parse_config(bindings=["train.num_steps = 7", "lopt.train_family.num_tasks = 3"])
    assert gin.query_parameter("train.num_steps") == 7
    assert gin.query_parameter("train_family.num_tasks") == 3
    # Registering the same function again is a no-op returning the same wrapper.
    assert configurable_core(lopt_core.train, name="train") is gin_config.configured("train")
    with pytest.raises(KeyError, match="Did you mean meta_train"):
        gin_config.configured("meta_trian")
