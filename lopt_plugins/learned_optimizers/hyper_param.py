"""Learned hyper-parameters: SGD, SGDM and Adam whose constants are meta-learned.

Each constant lives in ``theta`` in log space (``log_lr``, and ``log(1 - beta)``
for decay rates), so gradient and ES steps on ``theta`` are scale-free and
every value of ``theta`` is a valid optimizer.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from lopt_core.learned import LearnedOptimizer
from lopt_core.optimizers import OptaxOptimizer, Optimizer
from lopt_core.validation import positive_float


class _LearnedOptaxOptimizer(OptaxOptimizer):
    """``OptaxOptimizer`` whose optax state keeps the dtypes it was initialized with.

    The hyper-parameters come from ``theta`` as float32 arrays, which would promote
    e.g. bfloat16 momenta to float32 on every update and break ``lax.scan`` loops
    (whose carry must keep its types). Parameters keep theirs through ``apply_updates``.
    """

    def update(self, opt_state, grad, loss=None, model_state=None, key=None):
        new = super().update(opt_state, grad, loss=loss, model_state=model_state, key=key)
        optax_state = jax.tree_util.tree_map(
            lambda n, o: n.astype(o.dtype), new.optax_state, opt_state.optax_state
        )
        return new.replace(optax_state=optax_state)


def _log(value: float, what: str, owner: str) -> jax.Array:
    return jnp.log(jnp.asarray(positive_float(value, what, owner=owner), jnp.float32))


def _log_one_minus(decay: float, what: str, owner: str) -> jax.Array:
    if not 0 <= decay < 1:
        raise ValueError(f"{owner}: {what} must be in [0, 1), got {decay!r}.")
    return jnp.log(jnp.asarray(1.0 - decay, jnp.float32))


class _LearnableHyperParams(LearnedOptimizer):
    """A hand-designed optimizer whose hyper-parameters ``theta`` holds in log space.

    Subclasses list them in ``THETA`` and build the optimizer in ``opt_fn``;
    ``init`` gives theta at the ``initial_*`` constructor arguments.
    """

    # (theta key, constructor argument, its map to log space), in theta's order.
    THETA: tuple[tuple[str, str, Callable[[float, str, str], jax.Array]], ...] = ()

    def __init__(self, **initial: float):
        for arg, value in initial.items():
            setattr(self, arg, value)
        self.init(None)  # validates the arguments now, not mid-run

    def init(self, key: jax.Array | None) -> dict[str, jax.Array]:
        """theta at the initial values (``key`` is not used: nothing is random)."""
        return {k: to_log(getattr(self, arg), arg, self.name) for k, arg, to_log in self.THETA}


class LearnableSGD(_LearnableHyperParams):
    """SGD with a learned learning rate: ``theta = {"log_lr"}``."""

    THETA = (("log_lr", "initial_lr", _log),)

    def __init__(self, initial_lr: float = 1e-2):
        super().__init__(initial_lr=initial_lr)

    def opt_fn(self, theta: dict, is_training: bool = False) -> Optimizer:
        return _LearnedOptaxOptimizer(optax.sgd(jnp.exp(theta["log_lr"])))


class LearnableSGDM(_LearnableHyperParams):
    """SGD with momentum; learns ``log_lr`` and ``log_one_minus_momentum``."""

    THETA = (
        ("log_lr", "initial_lr", _log),
        ("log_one_minus_momentum", "initial_momentum", _log_one_minus),
    )

    def __init__(self, initial_lr: float = 1e-2, initial_momentum: float = 0.9):
        super().__init__(initial_lr=initial_lr, initial_momentum=initial_momentum)

    def opt_fn(self, theta: dict, is_training: bool = False) -> Optimizer:
        momentum = 1.0 - jnp.exp(theta["log_one_minus_momentum"])
        return _LearnedOptaxOptimizer(optax.sgd(jnp.exp(theta["log_lr"]), momentum=momentum))


class LearnableAdam(_LearnableHyperParams):
    """Adam whose learning rate, betas and epsilon are learned (all in log space)."""

    THETA = (
        ("log_lr", "initial_lr", _log),
        ("log_one_minus_beta1", "initial_beta1", _log_one_minus),
        ("log_one_minus_beta2", "initial_beta2", _log_one_minus),
        ("log_epsilon", "initial_epsilon", _log),
    )

    def __init__(
        self,
        initial_lr: float = 1e-3,
        initial_beta1: float = 0.9,
        initial_beta2: float = 0.999,
        initial_epsilon: float = 1e-8,
    ):
        super().__init__(
            initial_lr=initial_lr,
            initial_beta1=initial_beta1,
            initial_beta2=initial_beta2,
            initial_epsilon=initial_epsilon,
        )

    def opt_fn(self, theta: dict, is_training: bool = False) -> Optimizer:
        return _LearnedOptaxOptimizer(
            optax.adam(
                jnp.exp(theta["log_lr"]),
                b1=1.0 - jnp.exp(theta["log_one_minus_beta1"]),
                b2=1.0 - jnp.exp(theta["log_one_minus_beta2"]),
                eps=jnp.exp(theta["log_epsilon"]),
            )
        )
