"""Pretrained learned optimizers: a plugin kind, and one line to use one anywhere.

A ``pretrained`` plugin registers a factory returning a ``Pretrained``: a
learned optimizer, the file of its meta-trained theta and a model card. Then::

    tx = lopt_core.pretrained("normalized_mlp_v1")      # an optax GradientTransformation
    opt = lopt_core.load_pretrained("normalized_mlp_v1").optimizer()   # a lopt Optimizer

``export_theta`` writes the theta file from a ``lopt train`` checkpoint, so a
third-party package ships its own the same way (docs/pretrained.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import optax

from lopt_core.learned.base import LearnedOptimizer
from lopt_core.learned.to_optax import to_optax
from lopt_core.optimizers.base import Optimizer
from lopt_core.outer.checkpoints import load_theta, read_checkpoint, save_checkpoint


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A learned optimizer, its theta file and its model card (Markdown), by name."""

    name: str
    learned_optimizer: LearnedOptimizer
    theta_file: Path
    card: Path | None = None

    def __post_init__(self):
        if not isinstance(self.learned_optimizer, LearnedOptimizer):
            raise TypeError(
                f"pretrained {self.name!r}: learned_optimizer must be a LearnedOptimizer, got "
                f"{type(self.learned_optimizer).__name__}."
            )
        object.__setattr__(self, "theta_file", Path(self.theta_file))
        if not self.theta_file.is_file():
            raise FileNotFoundError(
                f"pretrained {self.name!r}: its theta file {self.theta_file} is missing (a broken "
                "install? reinstall the package that registers it)."
            )

    def theta(self) -> Any:
        """The meta-trained theta (checked against the learned optimizer's shapes)."""
        template = self.learned_optimizer.init(jax.random.PRNGKey(0))
        return load_theta(self.theta_file, template)[0]

    def metadata(self) -> dict[str, Any]:
        """The theta file's header: how it was made (recipe, commit, time, scores)."""
        return read_checkpoint(self.theta_file)[1]

    def optimizer(self) -> Optimizer:
        """The pretrained optimizer as a lopt ``Optimizer`` (``train``, ``train_family``)."""
        return self.learned_optimizer.opt_fn(self.theta())

    def transformation(self, num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
        """The pretrained optimizer as an optax transformation (see ``pretrained``)."""
        return to_optax(self.learned_optimizer, self.theta(), num_steps=num_steps)


def load_pretrained(name: str) -> Pretrained:
    """The registered pretrained optimizer ``name`` (close matches on a typo)."""
    from lopt_core.registry import get_registry

    return get_registry().create("pretrained", name, expect=Pretrained)


def pretrained(name: str, num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
    """The registered pretrained optimizer ``name`` as an optax ``GradientTransformation``.

    Works in ``optax.chain``, flax's ``TrainState`` and under ``jax.jit``, on any
    pytree of parameters (bfloat16 too: its own state is float32). Pass the loss
    as ``tx.update(grads, state, params, loss=loss)`` (or ``value=``, optax's
    name) if the optimizer uses it. ``num_steps`` is the planned length of
    training: optimizers with a schedule over training progress use it (without
    it, their default).
    """
    return load_pretrained(name).transformation(num_steps)


def export_theta(
    checkpoint: str | os.PathLike,
    learned_optimizer: LearnedOptimizer,
    output: str | os.PathLike,
    **metadata: Any,
) -> Path:
    """Write the theta of a ``lopt train`` checkpoint to ``output`` (a small theta-only file),
    with ``metadata`` (JSON values: recipe, commit, scores...) in its header."""
    template = learned_optimizer.init(jax.random.PRNGKey(0))
    theta, header = load_theta(checkpoint, template)
    json.dumps(metadata)  # fails early on values a header cannot hold
    info = {"source_step": header.get("step"), "learned_optimizer": learned_optimizer.name}
    return save_checkpoint(output, {"theta": theta}, {**info, **metadata})
