"""``OptaxOptimizer``: any optax ``GradientTransformation`` as an lopt ``Optimizer``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from lopt_core.optimizers.base import ModelState, Optimizer, Params


@struct.dataclass
class OptaxState:
    """Parameters, model state, the optax state and the step count."""

    params: Any
    model_state: Any
    optax_state: Any
    iteration: jax.Array


class OptaxOptimizer(Optimizer):
    """Adapts an optax ``GradientTransformation`` (plain or ``ExtraArgs``) to ``Optimizer``."""

    def __init__(self, tx: optax.GradientTransformation):
        if not (hasattr(tx, "init") and hasattr(tx, "update")):
            raise TypeError(
                f"OptaxOptimizer needs an optax GradientTransformation (with init and update), "
                f"got {type(tx).__name__}: {tx!r}."
            )
        self.tx = tx

    def init(
        self,
        params: Params,
        model_state: ModelState = None,
        num_steps: int | None = None,
        key: jax.Array | None = None,
    ) -> OptaxState:
        return OptaxState(
            params=params,
            model_state=model_state,
            optax_state=self.tx.init(params),
            iteration=jnp.zeros((), jnp.int32),
        )

    def update(
        self,
        opt_state: OptaxState,
        grad: Params,
        loss: jax.Array | None = None,
        model_state: ModelState = None,
        key: jax.Array | None = None,
    ) -> OptaxState:
        extra_args = {}
        if loss is not None and isinstance(self.tx, optax.GradientTransformationExtraArgs):
            extra_args["value"] = loss  # optax's name for the loss (e.g. reduce_on_plateau)
        updates, optax_state = self.tx.update(
            grad, opt_state.optax_state, opt_state.params, **extra_args
        )
        return OptaxState(
            params=optax.apply_updates(opt_state.params, updates),
            model_state=model_state,
            optax_state=optax_state,
            iteration=opt_state.iteration + 1,
        )
