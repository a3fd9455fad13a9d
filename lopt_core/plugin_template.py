"""The package ``lopt new-plugin NAME`` writes: a complete, installable lopt plugin.

``plugin_files(name)`` returns its files (path -> text): ``pyproject.toml`` with
the ``lopt`` entry point, a module with a task, a task family and a dataset
registered through the ``lopt_register`` hook, a gin recipe that meta-trains
on the family, a README and a pytest test. ``write_plugin(name, folder)``
writes them. The package installs with pip and passes its own test as written.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from lopt_core.version import __version__

__all__ = ["PluginNames", "plugin_files", "plugin_names", "write_plugin"]

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*\Z")


class PluginNames:
    """The names a plugin package ``dist`` uses: its module and its class prefix."""

    def __init__(self, dist: str):
        self.dist = dist
        parts = [p.lower() for p in re.split(r"[-_.]+", dist)]
        self.module = "_".join(parts)
        self.camel = "".join(p.capitalize() for p in parts if p != "lopt") or "Lopt"
        self.snake = "_".join(p for p in parts if p != "lopt") or "lopt"


def plugin_names(name: str) -> PluginNames:
    """Check ``name`` (a distribution name such as ``lopt-tasks-foo``) and derive the others."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"new-plugin: {name!r} is not a package name: use letters, digits and single "
            "'-', '_' or '.' between them, starting with a letter, e.g. lopt-tasks-foo."
        )
    names = PluginNames(name)
    if keyword.iskeyword(names.module) or not names.module.isidentifier():
        raise ValueError(
            f"new-plugin: {name!r} gives the module name {names.module!r}, which "
            "Python cannot import; choose another name."
        )
    return names


PYPROJECT = """\
# A lopt plugin package, written by `lopt new-plugin {dist}` (lopt {version}).
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A lopt plugin: the {camel}Family task family and a recipe that meta-trains on it."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["lopt", "jax", "numpy"]

[project.optional-dependencies]
test = ["pytest"]

# What makes this a lopt plugin: an entry point in the group `lopt` naming the
# module whose @lopt_core.hookimpl function `lopt_register` fills the registry.
[project.entry-points.lopt]
{module} = "{module}.plugin"

[tool.setuptools]
packages = ["{module}"]

[tool.setuptools.package-data]
{module} = ["*.gin"]
"""

INIT = '''\
"""{dist}: a lopt plugin (kind task, task_family and dataset; see plugin.py)."""

from {module}.tasks import {camel}Family, {camel}Task, {snake}_data

__all__ = ["{camel}Family", "{camel}Task", "{snake}_data"]
__version__ = "0.1.0"
'''

PLUGIN = '''\
"""The module this package's `lopt` entry point names: lopt calls its hook once."""

import lopt_core
from {module}.tasks import {camel}Family, {camel}Task, {snake}_data


@lopt_core.hookimpl
def lopt_register(registry):
    """Register this package's factories; gin and `lopt plugins` know them by these names."""
    registry.register("dataset", "{camel}Data", {snake}_data)
    registry.register("task", "{camel}Task", {camel}Task)
    registry.register("task_family", "{camel}Family", {camel}Family)
'''

TASKS = '''\
"""{camel}: noisy linear regressions, a task family to replace with your own.

- `{snake}_data`: a `Datasets` of endless batches (`x` and label `noise`), one
  seeded stream per split, shared between tasks through `dataset_lru_cache`;
- `{camel}Task`: fit `w` to `y = x @ w_true + noise` (mean squared error);
- `{camel}Family`: tasks whose `w_true ~ N(0, I)` is drawn per task. The cfg is
  an array, so every task has the same graph and the family trains under `jax.vmap`.

To wrap a flax model instead, see `lopt_core.LinenTask` / `NNXTask` (docs/custom_tasks.md).
"""

import jax
import jax.numpy as jnp
import numpy as np

from lopt_core import Datasets, Task, TaskFamily, dataset_lru_cache


@dataset_lru_cache
def {snake}_data(dim: int = 8, batch_size: int = 32) -> Datasets:
    """Batches {{"x": [batch_size, dim], "noise": [batch_size]}} forever, one stream per split."""

    def split(index):
        rng = np.random.default_rng([dim, batch_size, index])
        while True:
            x = rng.standard_normal((batch_size, dim)).astype(np.float32)
            noise = 0.1 * rng.standard_normal(batch_size).astype(np.float32)
            yield {{"x": x, "noise": noise}}

    abstract = {{
        "x": jax.ShapeDtypeStruct((batch_size, dim), jnp.float32),
        "noise": jax.ShapeDtypeStruct((batch_size,), jnp.float32),
    }}
    splits = [split(i) for i in range(4)]
    return Datasets(*splits, extra_info={{"dim": dim}}, abstract_batch=abstract)


class {camel}Task(Task):
    """Least squares: fit `w` to `x @ w_true + noise`; `w_true` is all ones unless given."""

    def __init__(self, dim: int = 8, batch_size: int = 32, w_true=None):
        self.dim, self.batch_size = dim, batch_size
        self.w_true = jnp.ones(dim) if w_true is None else w_true
        self.datasets = {snake}_data(dim, batch_size)

    def init(self, key):
        return {{"w": 0.1 * jax.random.normal(key, (self.dim,))}}

    def loss(self, params, key, batch):
        y = batch["x"] @ self.w_true + batch["noise"]
        return jnp.mean((batch["x"] @ params["w"] - y) ** 2)

    def normalizer(self, loss):
        # Meta-training averages normalized losses over tasks: a log scale, clipped, and
        # NaN (a diverged run) mapped to the cap, so that no task dominates.
        return jnp.clip(jnp.nan_to_num(jnp.log(loss), nan=5.0), -5.0, 5.0)


class {camel}Family(TaskFamily):
    """`{camel}Task`s whose `w_true ~ N(0, I)` is drawn per task."""

    def __init__(self, dim: int = 8, batch_size: int = 32):
        self.dim, self.batch_size = dim, batch_size
        self.datasets = {snake}_data(dim, batch_size)

    def sample(self, key):
        return jax.random.normal(key, (self.dim,))

    def task_fn(self, cfg):
        return {camel}Task(self.dim, self.batch_size, w_true=cfg)
'''

RECIPE = """\
# Meta-train a learned optimizer on {camel}Family:
#     lopt train {module}/meta_train.gin -o runs/{snake}
# (from the package's folder; this file is also installed next to {module}/plugin.py).
# Every name is a registry entry: {camel}Family is this package's, LearnableAdam and
# TruncatedPES are lopt's built-ins.

meta_train.task_family = @{camel}Family()
{camel}Family.dim = 8
{camel}Family.batch_size = 32

meta_train.learned_optimizer = @LearnableAdam()
meta_train.gradient_estimator = @TruncatedPES
TruncatedPES.trunc_length = 5
meta_train.truncation_schedule = @ConstantTruncationSchedule()
ConstantTruncationSchedule.length = 20
meta_train.num_tasks = 4
meta_train.outer_learning_rate = 1e-2
meta_train.num_steps = 100
meta_train.checkpoint_every = 50
"""

README = """\
# {dist}

A [lopt](https://github.com/) plugin, written by `lopt new-plugin {dist}`. It
registers, through the `lopt` entry point in `pyproject.toml`:

| kind | name | what |
|---|---|---|
| dataset | `{camel}Data` | endless batches of a noisy linear regression |
| task | `{camel}Task` | least squares on them |
| task_family | `{camel}Family` | tasks whose true weights are drawn per task |

Replace `{module}/tasks.py` with your own tasks (and register them in
`{module}/plugin.py`).

```sh
pip install -e .                 # or: pip install .
lopt plugins --kind task_family  # lists {camel}Family, from {dist}
lopt train {module}/meta_train.gin -o runs/{snake}   # meta-train on it
pytest                           # the package's own test
```

After editing the entry points in `pyproject.toml`, reinstall; editing Python
code needs no reinstall with `pip install -e`.
"""

TEST = '''\
"""{dist}'s own test: the hook registers, a task trains, the recipe meta-trains."""

from pathlib import Path

import jax
import lopt_core
from lopt_core.gin_config import configured, parse_config

import {module}
import {module}.plugin

RECIPE = Path({module}.__file__).parent / "meta_train.gin"
NAMES = {{"dataset": ["{camel}Data"], "task": ["{camel}Task"], "task_family": ["{camel}Family"]}}


def test_the_hook_registers_every_factory():
    registry = lopt_core.Registry()
    registry.load_module({module}.plugin)  # raises PluginLoadError if the hook fails
    assert {{kind: registry.names(kind) for kind in NAMES}} == NAMES


def test_the_installed_plugin_is_found_through_its_entry_point():
    registry = lopt_core.Registry.from_entry_points(allow=["{dist}"], strict=True)
    assert registry.entry("task_family", "{camel}Family").distribution == "{dist}"


def test_a_task_trains_and_the_family_samples():
    task = {module}.{camel}Task()
    result = lopt_core.train(task, lopt_core.Adam(0.05), jax.random.PRNGKey(0), num_steps=60)
    assert result.train_loss[-1] < 0.2 * result.train_loss[0]
    family = {module}.{camel}Family()
    assert family.sample_tasks(jax.random.PRNGKey(1), 4).shape == (4, family.dim)


def test_the_recipe_meta_trains(tmp_path):
    bindings = ["meta_train.num_steps = 2", "meta_train.checkpoint_every = 2"]
    parse_config(RECIPE, bindings)
    result = configured("meta_train")(output_dir=tmp_path / "run", progress=False)
    assert result.last_metrics["step"] == 2
    assert (tmp_path / "run" / "checkpoints" / "latest.msgpack").is_file()
'''


def plugin_files(name: str) -> dict[str, str]:
    """The files of the plugin package ``name``: relative path -> text."""
    n = plugin_names(name)
    fields = {
        "dist": n.dist,
        "module": n.module,
        "camel": n.camel,
        "snake": n.snake,
        "version": __version__,
    }
    return {
        "pyproject.toml": PYPROJECT.format(**fields),
        "README.md": README.format(**fields),
        f"{n.module}/__init__.py": INIT.format(**fields),
        f"{n.module}/plugin.py": PLUGIN.format(**fields),
        f"{n.module}/tasks.py": TASKS.format(**fields),
        f"{n.module}/meta_train.gin": RECIPE.format(**fields),
        f"tests/test_{n.snake}.py": TEST.format(**fields),
    }


def write_plugin(name: str, folder: str | Path) -> list[Path]:
    """Write the package ``name`` into ``folder`` (which must not exist, or be empty)."""
    files = plugin_files(name)
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(
            f"new-plugin: {folder} already exists and is not empty; choose another --dir "
            "or remove it."
        )
    written = []
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
