"""Export a learned optimizer with trained ``theta`` as an optax transformation."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt_core.learned.base import LearnedOptimizer, MetaParams


class LearnedOptaxState(NamedTuple):
    """The learned optimizer's own state; its ``params`` are refreshed on every update."""

    opt_state: Any


def to_optax(
    learned_opt: LearnedOptimizer, theta: MetaParams, num_steps: int | None = None
) -> optax.GradientTransformationExtraArgs:
    """``learned_opt`` with meta-parameters ``theta`` as an optax transformation.

    Use it in any optax training loop. Pass the loss as an extra argument,
    ``tx.update(grads, state, params, loss=loss)`` (``value=`` works too, as
    optax names it); without it, features that need the loss are zero.
    ``num_steps`` is the planned length of training, for optimizers with
    features of training progress.
    """
    if not isinstance(learned_opt, LearnedOptimizer):
        raise TypeError(
            f"to_optax expects a LearnedOptimizer, got {type(learned_opt).__name__}: "
            f"{learned_opt!r}."
        )
    opt = learned_opt.opt_fn(theta, is_training=False)

    def init_fn(params):
        return LearnedOptaxState(opt.init(params, num_steps=num_steps))

    def update_fn(updates, state, params=None, *, loss=None, value=None, **extra_args):
        del extra_args  # other transformations' extra args (e.g. a line search's value_fn)
        if params is None:
            raise ValueError(
                "to_optax: the learned optimizer needs the current params; call "
                "tx.update(grads, state, params)."
            )
        loss = value if loss is None else loss
        loss = jnp.zeros((), jnp.float32) if loss is None else loss
        # The optimizer's state carries params; the caller owns them in optax, so sync first.
        inner = state.opt_state.replace(params=params)
        inner = opt.update(inner, updates, loss=loss)
        new_params = opt.get_params(inner)
        step = jax.tree_util.tree_map(lambda new, old: new - old, new_params, params)
        return step, LearnedOptaxState(inner)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
