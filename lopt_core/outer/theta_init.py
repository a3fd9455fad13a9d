"""Meta-training from another run's theta, with part of theta frozen.

``ThetaFromCheckpoint`` is a learned optimizer whose ``init`` reads theta from a
checkpoint (a ``lopt train`` checkpoint or a theta file); ``frozen_outer_optimizer``
masks the outer optimizer's updates of the named parts of theta to zero (celo's
two-phase training: first the update rule, then the schedule).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import optax

from lopt_core.learned.base import LearnedOptimizer
from lopt_core.optimizers.base import Optimizer
from lopt_core.outer.checkpoints import load_theta


class ThetaFromCheckpoint(LearnedOptimizer):
    """``learned_optimizer`` whose initial theta is read from the checkpoint at ``path``."""

    def __init__(self, learned_optimizer: LearnedOptimizer, path: str | os.PathLike):
        if not isinstance(learned_optimizer, LearnedOptimizer):
            raise TypeError(
                f"ThetaFromCheckpoint wraps a LearnedOptimizer, got "
                f"{type(learned_optimizer).__name__}."
            )
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"initial_theta: no checkpoint at {path} (give a checkpoint of `lopt train`, e.g. "
                "runs/<run>/checkpoints/best.msgpack, or a shipped theta file)."
            )
        self.learned_optimizer = learned_optimizer
        self.path = path

    @property
    def name(self) -> str:
        """The wrapped learned optimizer's name."""
        return self.learned_optimizer.name

    def init(self, key: jax.Array) -> Any:
        """The checkpoint's theta (shaped like the wrapped optimizer's ``init``)."""
        theta, _ = load_theta(self.path, self.learned_optimizer.init(key))
        return theta

    def opt_fn(self, theta: Any, is_training: bool = False) -> Optimizer:
        return self.learned_optimizer.opt_fn(theta, is_training)


def _path_names(path: tuple) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]


def frozen_mask(theta: Any, frozen: Sequence[str]) -> Any:
    """A pytree of bools like ``theta``: True where a leaf's path starts with a frozen prefix.

    Prefixes are ``/``-separated keys, e.g. ``"mlp"`` or ``"mlp/params/Dense_0"``.
    """
    prefixes = [tuple(p.strip("/").split("/")) for p in frozen]

    def is_frozen(path, _):
        names = tuple(_path_names(path))
        return any(names[: len(p)] == p for p in prefixes)

    return jax.tree_util.tree_map_with_path(is_frozen, theta)


def check_frozen(theta: Any, frozen: Sequence[str]) -> None:
    """Raise if a prefix of ``frozen`` names no part of ``theta``, listing what there is."""
    mask = frozen_mask(theta, frozen)
    paths = ["/".join(_path_names(p)) for p, _ in jax.tree_util.tree_leaves_with_path(theta)]
    for prefix in frozen:
        if not any(jax.tree_util.tree_leaves(frozen_mask(theta, [prefix]))):
            raise ValueError(
                f"frozen_theta: {prefix!r} names no part of theta; its parts are "
                f"{', '.join(sorted(paths))}."
            )
    if all(jax.tree_util.tree_leaves(mask)):
        raise ValueError(f"frozen_theta {list(frozen)} freezes all of theta: nothing would train.")


def frozen_outer_optimizer(
    outer: optax.GradientTransformation, frozen: Sequence[str]
) -> optax.GradientTransformation:
    """``outer`` with the updates of the ``frozen`` parts of theta set to zero."""
    if not frozen:
        return outer
    frozen = tuple(frozen)
    return optax.chain(
        optax.masked(optax.set_to_zero(), lambda theta: frozen_mask(theta, frozen)), outer
    )
