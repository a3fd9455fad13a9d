"""The built-in suites: registered, buildable, and `small` held out from every built-in recipe."""

from __future__ import annotations

import jax
import numpy as np

from lopt_core.bench import SuiteTask, get_suite
from lopt_core.commands.recipes import shipped_recipes
from lopt_core.gin_config import parse_config
from lopt_core.registry import get_registry
from lopt_core.run_report import query_built
from lopt_core.task_distributions import FamilyMixture, TaskDistribution
from lopt_core.tasks import as_family
from lopt_plugins.datasets import digits

DRAWS = 300  # per recipe with a task distribution


def _generic_class(task) -> str:
    # Presets subclass a generic task class (CharLM_Text_LSTM64 -> CharLMTask).
    return next(c.__name__ for c in type(task).__mro__ if c.__name__.endswith("Task"))


def signature(task) -> tuple:
    """What makes a task the same problem: its generic class and its arguments (no paths)."""
    args = getattr(task, "_args", None)
    if args is None:
        return (_generic_class(task), repr(task))
    kept = tuple((k, repr(v)) for k, v in args if k not in ("path", "data_dir"))
    return (_generic_class(task), kept)


def _unwrap(family):
    while hasattr(family, "family"):  # augmentations wrap the family they change
        family = family.family
    return family


def _tasks_of(family, key) -> list:
    family = _unwrap(family)
    if hasattr(family, "task"):  # a single task's family
        return [family.task]
    cfgs = [family.sample(k) for k in jax.random.split(key, 4)]
    return [family.task_fn(cfg) for cfg in cfgs]


def recipe_training_tasks(path) -> set[tuple]:
    """Signatures of tasks the recipe at ``path`` meta-trains on (all draws we can see)."""
    parse_config([path])
    family = query_built("meta_train.task_family")
    families = query_built("meta_train.task_families")
    distribution = query_built("meta_train.task_distribution")
    if families is not None:
        distribution = FamilyMixture(families)
    key = jax.random.PRNGKey(0)
    if family is not None:
        return {signature(t) for t in _tasks_of(as_family(family), key)}
    assert isinstance(distribution, TaskDistribution), path
    seen = set()
    for k in jax.random.split(key, DRAWS):
        seen |= {signature(t) for t in _tasks_of(distribution.sample(k), k)}
    return seen


def test_small_is_held_out_from_every_built_in_recipe():
    suite = get_suite("small")
    assert suite.held_out
    held_out = {signature(_unwrap(task.build()).task): task.label for task in suite.tasks}
    recipes = shipped_recipes()
    assert {"quickstart", "digits_mlp_pes", "mixture_pes"} <= set(recipes)
    for name, path in recipes.items():
        trained = recipe_training_tasks(path)
        assert trained, name
        overlap = sorted(held_out[s] for s in held_out.keys() & trained)
        assert not overlap, f"recipe {name} trains on small-suite tasks {overlap}"


def test_signatures_tell_tasks_apart_and_match_equal_ones():
    registry = get_registry()
    lstm = registry.create("task", "CharLM_Text_LSTM64")
    same = registry.create(
        "task", "CharLMTask", cell="lstm", hidden_size=64, embed_size=32, batch_size=32,
        sequence_length=64,
    )  # fmt: skip
    assert signature(lstm) == signature(same)
    assert signature(lstm) != signature(registry.create("task", "CharLM_Text_GRU64"))


def test_built_in_suites_are_registered_and_their_tasks_build():
    registry = get_registry()
    assert {"tiny", "small", "zoo"} <= set(registry.names("suite"))
    for name in ("tiny", "small"):
        suite = get_suite(name)
        assert suite.baselines is not None and suite.baselines.is_dir()
        for task in suite.tasks:
            assert task.build().name
    zoo = get_suite("zoo")
    presets = {t.task for t in zoo.tasks}
    assert {t.task for t in get_suite("small").tasks} <= presets
    assert "ResNetTask" not in presets and len(presets) >= 50


def test_a_suite_task_reads_its_data_from_the_start_whatever_was_drawn_before():
    task = SuiteTask("ImageMLP_Digits8_Relu32")  # digits, batch 128, through the shared cache
    shared = digits(batch_size=128).train
    first = task.build().datasets.train
    expected = [next(first)["label"] for _ in range(2)]
    for _ in range(5):
        next(shared)  # what an earlier task or run drew
    again = task.build().datasets.train
    assert again is not first and again is not shared
    for batch in expected:
        np.testing.assert_array_equal(next(again)["label"], batch)
    assert digits(batch_size=128).train is shared  # the process-wide cache is left as it was
