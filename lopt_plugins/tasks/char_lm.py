"""Character-level language models (a small flax RNN) on a text dataset.

Batches are ``{"obs": int32 [B, T], "target": int32 [B, T]}`` (the target is
the observation shifted by one character). Loss: mean token cross-entropy;
extras: ``accuracy``. Normalizer: ``loss / log(vocab_size)`` (about 1 at
init), clipped to [0, 1.5] with NaN/inf mapped to 1.5.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lopt_core import Datasets, Task
from lopt_core.validation import positive_int
from lopt_plugins.tasks._common import (
    ArgsEquality,
    classification_loss_and_aux,
    classification_normalizer,
    orthogonal_init,
)
from lopt_plugins.tasks._data import build_dataset, display_name, extra_int, given_datasets_tag

CELLS: dict[str, type[nn.RNNCellBase]] = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}


class CharRNN(nn.Module):
    """Embed characters, run one recurrent layer over time, project to vocabulary logits."""

    vocab_size: int
    embed_size: int
    hidden_size: int
    cell: str
    num_layers: int = 1

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = nn.Embed(self.vocab_size, self.embed_size, name="embed")(tokens)
        # nn.RNN is a lax.scan over time: one compiled step, whatever the sequence length.
        for layer in range(self.num_layers):
            name = "rnn" if layer == 0 else f"rnn_{layer}"
            # The recurrent kernels are orthogonal, as flax's default, without its QR
            # (which can hang a vmapped init on a 2-core CPU; see orthogonal_init).
            cell = CELLS[self.cell](self.hidden_size, recurrent_kernel_init=orthogonal_init)
            x = nn.RNN(cell, name=name)(x)
        return nn.Dense(self.vocab_size, name="logits")(x)


class CharLMTask(ArgsEquality, Task):
    """A character RNN language model of ``num_layers`` stacked ``cell`` layers (lstm or gru).

    ``dataset`` is the name of a registered dataset (``"text"``, the built-in
    ``lopt_plugins.datasets.text``, or a plugin's), built with ``batch_size``,
    ``sequence_length`` and ``path`` (left out when None and the builder takes
    no ``path``), or a ``lopt_core.Datasets`` of text batches (``batch_size``,
    ``sequence_length`` and ``path`` then play no part: the batches are the
    Datasets'). Either way the data needs ``extra_info["vocab_size"]``. The data
    is built when the task is constructed.
    """

    def __init__(
        self,
        dataset: str | Datasets = "text",
        cell: str = "lstm",
        hidden_size: int = 64,
        embed_size: int = 32,
        batch_size: int = 32,
        sequence_length: int = 64,
        path: str | None = None,
        num_layers: int = 1,
    ):
        if cell not in CELLS:
            raise ValueError(f"Unknown cell {cell!r}; the known cells are {', '.join(CELLS)}.")
        hidden_size = positive_int(hidden_size, "hidden_size")
        embed_size = positive_int(embed_size, "embed_size")
        batch_size = positive_int(batch_size, "batch_size")
        sequence_length = positive_int(sequence_length, "sequence_length")
        num_layers = positive_int(num_layers, "num_layers")
        if isinstance(dataset, Datasets):
            self.datasets, self.dataset_tag = dataset, given_datasets_tag(dataset)
        else:
            self.datasets = build_dataset(
                dataset, "text", batch_size=batch_size, sequence_length=sequence_length, path=path
            )
            self.dataset_tag = display_name(dataset)
        self.vocab_size = extra_int(self.datasets, "vocab_size", "CharLMTask")
        self.cell, self.hidden_size, self.embed_size = cell, hidden_size, embed_size
        self.batch_size, self.sequence_length = batch_size, sequence_length
        self.num_layers = num_layers
        self.module = CharRNN(self.vocab_size, embed_size, hidden_size, cell, num_layers)
        self._args = (
            ("dataset", dataset),
            ("cell", cell),
            ("hidden_size", hidden_size),
            ("embed_size", embed_size),
            ("batch_size", batch_size),
            ("sequence_length", sequence_length),
            ("path", path),
            ("num_layers", num_layers),
        )
        layers = "" if num_layers == 1 else f"x{num_layers}"
        self.name = f"CharLM_{self.dataset_tag}_{cell.upper()}{hidden_size}{layers}"

    def init(self, key: jax.Array) -> Any:
        """Flax's default initialization of the embedding, the cell and the output layer."""
        return self.module.init(key, jnp.zeros((1, 1), jnp.int32))

    def loss_and_aux(
        self, params: Any, key: jax.Array, batch: dict[str, jax.Array]
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean next-character cross-entropy over all tokens, and ``accuracy``."""
        logits = self.module.apply(params, batch["obs"])
        return classification_loss_and_aux(logits, batch["target"])

    def normalizer(self, loss: jax.Array) -> jax.Array:
        """``loss / log(vocab_size)`` clipped to [0, 1.5]; NaN/inf map to 1.5."""
        return classification_normalizer(loss, self.vocab_size)


def _char_lm_preset(
    name: str, cell: str, hidden_size: int, embed_size: int, num_layers: int = 1
) -> type[CharLMTask]:
    def __init__(self, batch_size: int = 32, sequence_length: int = 64, path: str | None = None):
        CharLMTask.__init__(
            self,
            "text",
            cell,
            hidden_size,
            embed_size,
            batch_size,
            sequence_length,
            path,
            num_layers,
        )
        self.name = name

    layers = "One-layer" if num_layers == 1 else f"{num_layers}-layer"
    doc = (
        f"{layers} {cell.upper()} ({hidden_size} units, {embed_size}-dim embedding) character "
        "LM on the text dataset; normalized loss = cross-entropy / log(vocab_size)."
    )
    return type(
        name,
        (CharLMTask,),
        {
            "__init__": __init__,
            "__doc__": doc,
            "__module__": __name__,
            "__qualname__": name,
        },
    )


PRESETS: dict[str, type[CharLMTask]] = {
    "CharLM_Text_LSTM64": _char_lm_preset("CharLM_Text_LSTM64", "lstm", 64, 32),
    "CharLM_Text_GRU64": _char_lm_preset("CharLM_Text_GRU64", "gru", 64, 32),
    # Stacked RNNs, all with a 32-dim embedding.
    "CharLM_Text_LSTM64x2": _char_lm_preset("CharLM_Text_LSTM64x2", "lstm", 64, 32, 2),
    "CharLM_Text_LSTM128x2": _char_lm_preset("CharLM_Text_LSTM128x2", "lstm", 128, 32, 2),
    "CharLM_Text_GRU64x3": _char_lm_preset("CharLM_Text_GRU64x3", "gru", 64, 32, 3),
    "CharLM_Text_GRU128x2": _char_lm_preset("CharLM_Text_GRU128x2", "gru", 128, 32, 2),
}
# Module attributes, so that presets import and pickle by name.
globals().update(PRESETS)
