"""The plugin registry: entry-point loading, lookups, and every error it reports."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

import lopt_core
from lopt_core import PluginConflictError, PluginLoadError, PluginLoadWarning, RegistrationError
from lopt_core.registry import KINDS, Registry, UnknownEntryError, get_registry, reset_registry

pytestmark = pytest.mark.usefixtures("fresh_registry")


def plugin(*registrations: str, body: str = "") -> str:
    """Source of a plugin module whose hook runs ``body`` then the given register calls."""
    calls = "".join(f"    registry.register{r}\n" for r in registrations)
    return (
        "import lopt_core\n\n"
        "class Thing:\n"
        "    def __init__(self, size=1):\n"
        "        self.size = size\n\n"
        "@lopt_core.hookimpl\n"
        "def lopt_register(registry):\n" + body + calls
    )


def load(*allow: str, strict: bool = False) -> Registry:
    """A registry of just the named plugins, as ``LOPT_PLUGINS`` would select them."""
    return Registry.from_entry_points(allow=list(allow), strict=strict)


def test_builtin_plugins_load_through_entry_points():
    registry = get_registry()
    assert get_registry() is registry  # cached
    assert {"Adam", "SGD", "AdamW"} <= set(registry.names("optimizer"))
    entry = registry.entry("optimizer", "Adam")
    assert entry.factory is lopt_core.Adam
    assert (entry.distribution, entry.version) == ("lopt", lopt_core.__version__)
    assert entry.plugin.entry_point == "optimizers = lopt_plugins.optimizers"
    assert registry.get("optimizer", "SGD") is lopt_core.SGD
    assert registry.create("optimizer", "SGD", learning_rate=0.5) == lopt_core.SGD(0.5)
    reset_registry()
    assert get_registry() is not registry


def test_core_does_not_import_builtin_plugins():
    code = (
        "import sys, lopt_core\n"
        "assert not [m for m in sys.modules if m.startswith('lopt_plugins')], 'imported early'\n"
        "lopt_core.get_registry()\n"
        "assert 'lopt_plugins.optimizers' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_plugin_entries_carry_their_distribution(make_plugin_dist):
    make_plugin_dist(
        "acme-tasks",
        {"acme_plugin": plugin('("task", "Widget", Thing)')},
        {"acme": "acme_plugin"},
        version="2.3",
    )
    registry = load("acme-tasks")
    entry = registry.entry("task", "Widget")
    assert (entry.distribution, entry.version) == ("acme-tasks", "2.3")
    assert entry.plugin.entry_point == "acme = acme_plugin"
    assert registry.create("task", "Widget", size=3).size == 3
    assert [p.name for p in registry.plugins] == ["acme"]
    assert registry.names("optimizer") == []  # the allow-list kept the built-ins out


def test_unknown_name_lists_close_matches_and_plugins(make_plugin_dist):
    source = plugin('("task", "Quadratic", Thing)', '("task_family", "Rosenbrock", Thing)')
    make_plugin_dist("acme-tasks", {"acme_close": source}, {"acme": "acme_close"})
    registry = load("acme-tasks")
    with pytest.raises(UnknownEntryError) as info:
        registry.get("task", "Quadratc")
    message = str(info.value)
    assert "No task named 'Quadratc'" in message
    assert "Quadratic (task, acme-tasks)" in message
    assert "Installed lopt plugins: acme-tasks 1.0 (acme)." in message
    with pytest.raises(UnknownEntryError, match="'Rosenbrock' is registered as: task_family"):
        registry.get("task", "Rosenbrock")
    assert [e.name for e in registry.close_matches("quadratic")] == ["Quadratic"]


def test_unknown_kind_is_rejected_with_the_kinds():
    registry = Registry()
    with pytest.raises(lopt_core.UnknownKindError) as info:
        registry.names("tsk")
    assert "Did you mean 'task'" in str(info.value)
    assert ", ".join(KINDS) in str(info.value)
    with pytest.raises(LookupError):
        registry.get("optimiser", "Adam")


def test_same_name_from_two_distributions_is_a_conflict(make_plugin_dist):
    make_plugin_dist(
        "alpha-dist",
        {"alpha_p": plugin('("task", "Same", Thing)', '("task", "A", Thing)')},
        {"alpha": "alpha_p"},
    )  # noqa: E501
    make_plugin_dist(
        "beta-dist",
        {"beta_p": plugin('("task", "Same", Thing)', '("task", "B", Thing)')},
        {"beta": "beta_p"},
    )  # noqa: E501
    with pytest.warns(PluginLoadWarning, match="registered by more than one plugin") as record:
        registry = load("alpha-dist", "beta-dist")
    assert "alpha-dist" in str(record[0].message) and "beta-dist" in str(record[0].message)
    with pytest.raises(PluginConflictError) as info:
        registry.get("task", "Same")
    assert "alpha-dist 1.0" in str(info.value) and "beta-dist 1.0" in str(info.value)
    assert registry.names("task") == ["A", "B"]  # everything else from both still loads
    assert [(c.kind, c.name) for c in registry.conflicts] == [("task", "Same")]
    with pytest.raises(PluginConflictError, match="alpha-dist"):
        load("alpha-dist", "beta-dist", strict=True)


def test_failing_import_warns_and_the_others_load(make_plugin_dist):
    make_plugin_dist(
        "broken-dist",
        {"broken_p": "import lopt_core\nraise ImportError('boom: needs libfoo')\n"},
        {"broken": "broken_p"},
    )  # noqa: E501
    make_plugin_dist(
        "good-dist", {"good_p": plugin('("dataset", "Fine", Thing)')}, {"good": "good_p"}
    )
    with pytest.warns(PluginLoadWarning) as record:
        registry = load("broken-dist", "good-dist")
    message = str(record[0].message)
    for expected in ("broken-dist 1.0", "entry point 'broken = broken_p'", "ImportError", "boom"):
        assert expected in message
    assert registry.names("dataset") == ["Fine"]
    [failure] = registry.failures
    assert failure.stage == "import" and failure.plugin.distribution == "broken-dist"
    assert isinstance(failure.cause, ImportError) and failure.error.__cause__ is failure.cause


def test_a_raising_hook_registers_nothing_and_is_reported(make_plugin_dist):
    source = plugin(
        '("task", "Half", Thing)', body="    registry.register('task', 'Early', Thing)\n"
    )
    source += "    raise RuntimeError('hook exploded')\n"
    make_plugin_dist("hooky-dist", {"hooky_p": source}, {"hooky": "hooky_p"})
    with pytest.warns(
        PluginLoadWarning, match="raised in lopt_register: RuntimeError: hook exploded"
    ):
        registry = load("hooky-dist")
    assert registry.names("task") == []  # 'Early' was registered before the raise: rolled back
    assert registry.failures[0].stage == "register"
    assert "hooky_p.py" in registry.failures[0].message  # where it failed


def test_strict_mode_makes_a_failure_fatal(make_plugin_dist, monkeypatch):
    make_plugin_dist(
        "broken-dist", {"broken_s": "raise ValueError('bad config')\n"}, {"broken": "broken_s"}
    )  # noqa: E501
    monkeypatch.setenv("LOPT_STRICT_PLUGINS", "1")
    monkeypatch.setenv("LOPT_PLUGINS", "broken-dist")
    with pytest.raises(PluginLoadError, match="broken-dist") as info:
        get_registry()
    assert isinstance(info.value.__cause__, ValueError)
    # A registry loaded leniently still fails when strictness is asked for later.
    monkeypatch.delenv("LOPT_STRICT_PLUGINS")
    with pytest.warns(PluginLoadWarning):
        lenient = get_registry()
    assert lenient.failures
    with pytest.raises(PluginLoadError):
        get_registry(strict=True)


def test_disable_autoload_and_allow_list(make_plugin_dist, monkeypatch):
    make_plugin_dist(
        "broken-dist", {"broken_a": "raise ImportError('x')\n"}, {"broken": "broken_a"}
    )
    make_plugin_dist(
        "Good_Dist", {"good_a": plugin('("optimizer", "Mine", Thing)')}, {"good": "good_a"}
    )  # noqa: E501
    monkeypatch.setenv("LOPT_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = get_registry()
    assert registry.plugins == [] and registry.entries() == [] and registry.failures == []
    registry.load_module("good_a", distribution="Good_Dist")  # plugins can still be added by hand
    assert registry.entry("optimizer", "Mine").distribution == "Good_Dist"

    reset_registry()
    monkeypatch.setenv("LOPT_PLUGINS", "good-dist,optimizers")  # dist names match normalized
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the broken plugin is not even imported
        registry = get_registry()
    assert sorted(p.name for p in registry.plugins) == ["good", "optimizers"]
    assert "Mine" in registry.names("optimizer") and "Adam" in registry.names("optimizer")

    reset_registry()
    monkeypatch.setenv("LOPT_PLUGINS", "good-dst")
    with pytest.warns(PluginLoadWarning, match="names 'good-dst'.*Good_Dist:good"):
        get_registry()


def test_bad_registrations_are_rejected_naming_the_plugin(make_plugin_dist):
    make_plugin_dist("kind-dist", {"kind_p": plugin('("tsk", "X", Thing)')}, {"kindp": "kind_p"})
    make_plugin_dist("call-dist", {"call_p": plugin('("task", "Y", 42)')}, {"callp": "call_p"})
    make_plugin_dist(
        "name-dist", {"name_p": plugin('("task", "my-task", Thing)')}, {"namep": "name_p"}
    )  # noqa: E501
    with pytest.warns(PluginLoadWarning):
        registry = load("kind-dist", "call-dist", "name-dist")
    messages = {f.plugin.distribution: f.message for f in registry.failures}
    assert "unknown kind 'tsk'. Did you mean 'task'?" in messages["kind-dist"]
    assert "'kindp' (kind-dist 1.0" in messages["kind-dist"]
    assert "factory that is not callable: int 42" in messages["call-dist"]
    assert "'callp' (call-dist 1.0" in messages["call-dist"]
    assert "not a Python identifier" in messages["name-dist"]
    assert all(isinstance(f.cause, RegistrationError) for f in registry.failures)

    # Registering by hand (outside a plugin) fails at once, naming the caller.
    with pytest.raises(RegistrationError, match=f"'{__name__}'.*not callable"):
        Registry().register("task", "Z", "not a factory")


def test_common_plugin_mistakes_are_diagnosed(make_plugin_dist):
    unmarked = "def lopt_register(registry):\n    registry.register('task', 'U', dict)\n"
    misspelt = "import lopt_core\n@lopt_core.hookimpl\ndef lopt_regster(registry):\n    pass\n"
    make_plugin_dist("unmarked-dist", {"unmarked_p": unmarked}, {"unmarked": "unmarked_p"})
    make_plugin_dist("misspelt-dist", {"misspelt_p": misspelt}, {"misspelt": "misspelt_p"})
    with pytest.warns(PluginLoadWarning):
        registry = load("unmarked-dist", "misspelt-dist")
    messages = {f.plugin.distribution: f.message for f in registry.failures}
    assert "decorate it with @lopt_core.hookimpl" in messages["unmarked-dist"]
    assert "unknown hook 'lopt_regster'. Did you mean 'lopt_register'?" in messages["misspelt-dist"]
    assert registry.entries() == []


def test_load_module_accepts_any_object_and_raises_on_failure():
    class Inline:
        @lopt_core.hookimpl
        def lopt_register(self, registry):
            registry.register("truncation_schedule", "Every10", lambda: 10)

    registry = Registry()
    info = registry.load_module(Inline(), "inline")
    entry = registry.entry("truncation_schedule", "Every10")
    assert entry.plugin == info and entry.distribution is None
    assert registry.create("truncation_schedule", "Every10") == 10
    assert registry.create("truncation_schedule", "Every10", expect=int) == 10
    with pytest.raises(TypeError, match="'Every10' returned a int, not a builtins.str"):
        registry.create("truncation_schedule", "Every10", expect=str)
    with pytest.raises(PluginLoadError, match="no_such_module_xyz") as err:
        registry.load_module("no_such_module_xyz")
    assert isinstance(err.value.__cause__, ModuleNotFoundError)
