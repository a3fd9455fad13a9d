"""Hand-designed optimizers: SGD, SGDM, Adam, RMSProp and AdamW, built on optax.

Each is compared by its hyper-parameters: ``Adam(0.01) == Adam(0.01)``, so a
jitted training loop compiled for one is reused for an equal one.
"""

from __future__ import annotations

import jax
import optax

from lopt_core.optimizers.optax_adapter import OptaxOptimizer


class _HyperParamOptimizer(OptaxOptimizer):
    """An ``OptaxOptimizer`` defined by a few float hyper-parameters."""

    def __init__(self, tx: optax.GradientTransformation, **hyper_params: float):
        traced = any(isinstance(v, jax.core.Tracer) for v in hyper_params.values())
        if not traced:  # traced values (e.g. a learning-rate sweep under jit) can't be checked
            self._check(hyper_params)
        super().__init__(tx)
        self.hyper_params = hyper_params

    def _check(self, hyper_params: dict) -> None:
        for name, value in hyper_params.items():
            if not isinstance(value, (int, float)) or value != value:  # rejects NaN too
                raise TypeError(f"{type(self).__name__}: {name} must be a number, got {value!r}.")
        if hyper_params.get("learning_rate", 1.0) <= 0:
            raise ValueError(
                f"{type(self).__name__}: learning_rate must be positive, got "
                f"{hyper_params['learning_rate']!r}."
            )

    def _key(self) -> tuple:
        return (type(self), tuple(sorted(self.hyper_params.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _HyperParamOptimizer) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper_params.items())
        return f"{type(self).__name__}({args})"


class SGD(_HyperParamOptimizer):
    """Plain stochastic gradient descent."""

    def __init__(self, learning_rate: float = 0.01):
        super().__init__(optax.sgd(learning_rate), learning_rate=learning_rate)


class SGDM(_HyperParamOptimizer):
    """SGD with (heavy-ball) momentum."""

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.9):
        super().__init__(
            optax.sgd(learning_rate, momentum=momentum),
            learning_rate=learning_rate,
            momentum=momentum,
        )


class Adam(_HyperParamOptimizer):
    """Adam (Kingma and Ba, 2015); numerically ``optax.adam``."""

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
    ):
        super().__init__(
            optax.adam(learning_rate, b1=beta1, b2=beta2, eps=epsilon),
            learning_rate=learning_rate,
            beta1=beta1,
            beta2=beta2,
            epsilon=epsilon,
        )


class RMSProp(_HyperParamOptimizer):
    """RMSProp: steps scaled by a running root mean square of gradients."""

    def __init__(self, learning_rate: float = 1e-3, decay: float = 0.9, epsilon: float = 1e-8):
        super().__init__(
            optax.rmsprop(learning_rate, decay=decay, eps=epsilon),
            learning_rate=learning_rate,
            decay=decay,
            epsilon=epsilon,
        )


class AdamW(_HyperParamOptimizer):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019)."""

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        weight_decay: float = 1e-4,
    ):
        super().__init__(
            optax.adamw(learning_rate, b1=beta1, b2=beta2, eps=epsilon, weight_decay=weight_decay),
            learning_rate=learning_rate,
            beta1=beta1,
            beta2=beta2,
            epsilon=epsilon,
            weight_decay=weight_decay,
        )


class WarmupCosineAdamW(_HyperParamOptimizer):
    """AdamW whose learning rate warms up linearly from 0 for ``warmup_steps``, then decays
    to 0 along a cosine at ``total_steps`` (the usual schedule of tuned AdamW baselines)."""

    def __init__(
        self,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        total_steps: int = 1000,
        warmup_steps: int = 50,
    ):
        if isinstance(total_steps, int) and isinstance(warmup_steps, int):
            if not 0 <= warmup_steps < total_steps:
                raise ValueError(
                    f"WarmupCosineAdamW: need 0 <= warmup_steps < total_steps, got "
                    f"warmup_steps={warmup_steps}, total_steps={total_steps}."
                )
        # The unit schedule times the rate: optax's schedule refuses a traced peak value, and
        # tuning sweeps trace the learning rate.
        unit = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps, total_steps, 0.0)
        super().__init__(
            optax.adamw(lambda count: learning_rate * unit(count), weight_decay=weight_decay),
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            total_steps=total_steps,
            warmup_steps=warmup_steps,
        )
