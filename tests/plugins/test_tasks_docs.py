"""docs/tasks.md lists every built-in task, family and dataset, with right numbers, and runs."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest
from test_tasks_image_zoo import zoo_param_counts  # a sibling test module (tests/plugins)

from helpers import DOCS_DIR
from lopt_plugins import datasets
from lopt_plugins.tasks import TASK_FAMILIES, TASKS, char_lm, conv, image_mlp, transformer_lm

DOC = DOCS_DIR / "tasks.md"
TEXT = DOC.read_text(encoding="utf-8")
KEY = jax.random.PRNGKey(0)


def _documented_params() -> dict[str, int]:
    """``{name: parameter count}`` from the task tables' rows ``| `Name` | ... | 1,234 | batch``."""
    rows = re.findall(r"^\| `(\w+)` \|.*?\| ([\d,]+) \| `(?:image|obs)", TEXT, re.MULTILINE)
    return {name: int(count.replace(",", "")) for name, count in rows}


def _num_params(module, *inputs) -> int:
    shapes = jax.eval_shape(lambda k: module.init(k, *inputs), KEY)
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(shapes))


@pytest.mark.parametrize("name", sorted([*TASKS, *TASK_FAMILIES, *datasets.BUILDERS]))
def test_every_registered_name_is_documented(name):
    assert f"`{name}`" in TEXT or f"`{name}(" in TEXT or f"**`{name}(" in TEXT


def test_documented_parameter_counts_are_right():
    documented = _documented_params()
    channels = {"digits": 1, "mnist": 1, "fashion_mnist": 1, "kmnist": 1, "cifar10": 3}
    expected = {}
    for name, dataset, size, hidden, _ in image_mlp._PRESETS:
        images = jnp.zeros((1, *size, channels[dataset]))
        expected[name] = _num_params(image_mlp.MLP(hidden, 10), images, jax.nn.relu)
    for name, dataset, size, chans in conv._PRESETS:
        images = jnp.zeros((1, *size, channels[dataset]))
        expected[name] = _num_params(conv.ConvNet(chans, 10), images, jax.nn.relu)
    tokens = jnp.zeros((1, 1), jnp.int32)
    expected["CharLM_Text_LSTM64"] = _num_params(char_lm.CharRNN(256, 32, 64, "lstm"), tokens)
    expected["CharLM_Text_GRU64"] = _num_params(char_lm.CharRNN(256, 32, 64, "gru"), tokens)
    for name, cell, hidden, layers in (
        ("CharLM_Text_LSTM64x2", "lstm", 64, 2),
        ("CharLM_Text_LSTM128x2", "lstm", 128, 2),
        ("CharLM_Text_GRU64x3", "gru", 64, 3),
        ("CharLM_Text_GRU128x2", "gru", 128, 2),
    ):
        expected[name] = _num_params(char_lm.CharRNN(256, 32, hidden, cell, layers), tokens)
    expected.update(zoo_param_counts())  # the image zoo's presets, counted without data
    for name, preset in transformer_lm.PRESETS.items():
        task = preset()
        expected[name] = _num_params(task.module, jnp.zeros((1, task.sequence_length), jnp.int32))
    assert documented == expected


def test_python_blocks_run():
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", TEXT, re.DOTALL | re.MULTILINE)
    assert blocks, "docs/tasks.md lost its example"
    namespace: dict = {"__name__": "docs_tasks"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"tasks.md (python block {i + 1})", "exec"), namespace)  # noqa: S102
    losses = namespace["result"].inner_valid_loss
    assert abs(float(losses[0]) - 2.30) < 0.3 and losses[1] < losses[0]
    assert namespace["results"].train_loss.shape == (8, 20)
