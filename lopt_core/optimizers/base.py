"""The ``Optimizer`` protocol shared by hand-designed and learned optimizers."""

from __future__ import annotations

from typing import Any

import jax

Params = Any
ModelState = Any
OptState = Any


class Optimizer:
    """An optimizer whose state is a pytree, so ``init``/``update`` jit and vmap.

    ``init`` wraps the parameters (and model state) in an optimizer state;
    ``update`` takes a gradient and returns the next state; ``get_params`` and
    ``get_state`` read the parameters and model state back out.
    """

    @property
    def name(self) -> str:
        """A readable name; the class name unless a subclass says otherwise."""
        return type(self).__name__

    def init(
        self,
        params: Params,
        model_state: ModelState = None,
        num_steps: int | None = None,
        key: jax.Array | None = None,
    ) -> OptState:
        """The initial optimizer state for ``params``.

        ``num_steps`` is the length of the planned run, which some learned
        optimizers use as a feature; ``key`` seeds any randomness of their own.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement init(params, ...).")

    def update(
        self,
        opt_state: OptState,
        grad: Params,
        loss: jax.Array | None = None,
        model_state: ModelState = None,
        key: jax.Array | None = None,
    ) -> OptState:
        """The state after one step along ``grad``; ``model_state`` replaces the stored one."""
        raise NotImplementedError(f"{type(self).__name__} must implement update(opt_state, grad).")

    def get_params(self, opt_state: OptState) -> Params:
        """The parameters held in ``opt_state``."""
        return opt_state.params

    def get_state(self, opt_state: OptState) -> ModelState:
        """The model state held in ``opt_state`` (None for stateless models)."""
        return opt_state.model_state

    def __repr__(self) -> str:
        return f"<Optimizer {self.name}>"
