"""Quadratic tasks and families: data-free, cheap, the classic testbed of learned optimizers.

All of them start from ``params ~ N(0, I)`` and normalize the loss by its
expected value at initialization (so the normalized loss is about 1 at step 0
and 0 at the optimum), clipped to ``[0, QUADRATIC_MAX]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from lopt_core import Task, TaskFamily
from lopt_core.validation import positive_int
from lopt_plugins.tasks._common import ArgsEquality, clipped

# Quadratics may overshoot early on and recover, so they tolerate more than classifiers.
QUADRATIC_MAX = 10.0


class QuadraticTask(ArgsEquality, Task):
    """``loss(p) = sum(p**2)`` with ``p ~ N(0, I)`` of size ``dim``; data-free.

    Normalizer: ``loss / dim`` (the expected loss at init), clipped to [0, 10].
    """

    datasets = None

    def __init__(self, dim: int = 10):
        self.dim = dim = positive_int(dim, "dim")
        self._args = (("dim", dim),)
        self.name = f"QuadraticTask_Dim{dim}"

    def init(self, key: jax.Array) -> jax.Array:
        """Parameters drawn from ``N(0, I)``."""
        return jax.random.normal(key, (self.dim,))

    def loss(self, params: jax.Array, key: jax.Array, batch: None) -> jax.Array:
        """``sum(params**2)``."""
        return jnp.sum(jnp.square(params))

    def normalizer(self, loss: jax.Array) -> jax.Array:
        """``loss / dim`` clipped to [0, 10]; NaN/inf map to 10."""
        return clipped(loss / self.dim, QUADRATIC_MAX)


class _TargetQuadratic(Task):
    """``sum((p - target)**2)``: one sample of ``FixedDimQuadraticFamily``."""

    datasets = None

    def __init__(self, target: jax.Array):
        self.target = target
        self.name = "FixedDimQuadraticFamily/sample"

    def init(self, key: jax.Array) -> jax.Array:
        return jax.random.normal(key, self.target.shape)

    def loss(self, params: jax.Array, key: jax.Array, batch: None) -> jax.Array:
        return jnp.sum(jnp.square(params - self.target))

    def normalizer(self, loss: jax.Array) -> jax.Array:
        # p - target ~ N(0, 2I) at init, so the expected initial loss is 2 * dim.
        return clipped(loss / (2 * self.target.shape[-1]), QUADRATIC_MAX)


class FixedDimQuadraticFamily(ArgsEquality, TaskFamily):
    """Quadratics ``sum((p - target)**2)`` of a fixed ``dim`` whose ``target ~ N(0, I)`` is sampled.

    cfg: ``{"target": float32[dim]}``. Normalizer: ``loss / (2 dim)``, the
    expected loss at init, clipped to [0, 10].
    """

    datasets = None

    def __init__(self, dim: int = 10):
        self.dim = dim = positive_int(dim, "dim")
        self._args = (("dim", dim),)
        self.name = f"FixedDimQuadraticFamily_Dim{dim}"

    def sample(self, key: jax.Array) -> dict[str, jax.Array]:
        """A target drawn from ``N(0, I)``."""
        return {"target": jax.random.normal(key, (self.dim,))}

    def task_fn(self, cfg: dict[str, jax.Array]) -> Task:
        """The quadratic centred on ``cfg["target"]``."""
        return _TargetQuadratic(cfg["target"])


class _NoisyConditionedQuadratic(Task):
    """One sample of ``NoisyConditionedQuadraticFamily``."""

    datasets = None

    def __init__(self, cfg: dict[str, jax.Array]):
        self.cfg = cfg
        self.name = "NoisyConditionedQuadraticFamily/sample"

    def init(self, key: jax.Array) -> jax.Array:
        return jax.random.normal(key, self.cfg["target"].shape)

    def loss(self, params: jax.Array, key: jax.Array, batch: None) -> jax.Array:
        cfg = self.cfg
        # A fresh noisy target each call: the gradient A (p - t - s e) is an unbiased,
        # noisy estimate of the clean one, like a minibatch gradient.
        noise = cfg["noise_std"] * jax.random.normal(key, params.shape)
        z = cfg["rotation"].T @ (params - cfg["target"] - noise)
        return 0.5 * jnp.sum(cfg["eigenvalues"] * jnp.square(z))

    def normalizer(self, loss: jax.Array) -> jax.Array:
        # E[loss at init] = 0.5 * E[d' A d] with d ~ N(0, 2I) (noise aside) = trace(A).
        return clipped(loss / jnp.sum(self.cfg["eigenvalues"]), QUADRATIC_MAX)


class NoisyConditionedQuadraticFamily(ArgsEquality, TaskFamily):
    """Quadratics with a sampled condition number, orientation and gradient noise.

    ``loss(p) = 0.5 (p - t - s e)' A (p - t - s e)`` where ``A = Q diag(lam) Q'``:
    the eigenvalues ``lam`` are geometrically spaced from 1 down to ``1/kappa``,
    ``log10(kappa) ~ U[min_log10_condition, max_log10_condition]``; ``Q`` is a
    uniformly random rotation (the identity when ``rotate=False``); the target
    ``t ~ N(0, I)``; ``e ~ N(0, I)`` is drawn afresh from the loss key at each
    step, with ``s ~ U[min_noise_std, max_noise_std]``.

    cfg: ``{"eigenvalues": [dim], "rotation": [dim, dim], "target": [dim],
    "noise_std": []}``. Normalizer: ``loss / trace(A)`` (the expected loss at
    init without noise), clipped to [0, 10]; noise leaves a floor of ``s**2 / 2``.
    """

    datasets = None

    def __init__(
        self,
        dim: int = 10,
        min_log10_condition: float = 0.0,
        max_log10_condition: float = 3.0,
        min_noise_std: float = 0.0,
        max_noise_std: float = 1.0,
        rotate: bool = True,
    ):
        self.dim = dim = positive_int(dim, "dim")
        for name, lo, hi in (
            ("log10_condition", min_log10_condition, max_log10_condition),
            ("noise_std", min_noise_std, max_noise_std),
        ):
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
                raise ValueError(
                    f"Need 0 <= min_{name} <= max_{name}, both finite; got {lo!r} and {hi!r}."
                )
        self.min_log10_condition = float(min_log10_condition)
        self.max_log10_condition = float(max_log10_condition)
        self.min_noise_std = float(min_noise_std)
        self.max_noise_std = float(max_noise_std)
        self.rotate = bool(rotate)
        self._args = (
            ("dim", dim),
            ("min_log10_condition", self.min_log10_condition),
            ("max_log10_condition", self.max_log10_condition),
            ("min_noise_std", self.min_noise_std),
            ("max_noise_std", self.max_noise_std),
            ("rotate", self.rotate),
        )
        self.name = f"NoisyConditionedQuadraticFamily_Dim{dim}"

    def sample(self, key: jax.Array) -> dict[str, jax.Array]:
        """Draw condition number, rotation, target and noise level."""
        cond_key, rot_key, target_key, noise_key = jax.random.split(key, 4)
        log10_cond = jax.random.uniform(
            cond_key, (), minval=self.min_log10_condition, maxval=self.max_log10_condition
        )
        spacing = jnp.linspace(0.0, 1.0, self.dim) if self.dim > 1 else jnp.zeros(1)
        eigenvalues = 10.0 ** (-log10_cond * spacing)
        if self.rotate:
            # QR of a Gaussian matrix, with R's diagonal signs folded in, is Haar-uniform.
            q, r = jnp.linalg.qr(jax.random.normal(rot_key, (self.dim, self.dim)))
            rotation = q * jnp.sign(jnp.diagonal(r))
        else:
            rotation = jnp.eye(self.dim)
        return {
            "eigenvalues": eigenvalues,
            "rotation": rotation,
            "target": jax.random.normal(target_key, (self.dim,)),
            "noise_std": jax.random.uniform(
                noise_key, (), minval=self.min_noise_std, maxval=self.max_noise_std
            ),
        }

    def task_fn(self, cfg: dict[str, jax.Array]) -> Task:
        """The noisy quadratic that ``cfg`` describes."""
        return _NoisyConditionedQuadratic(cfg)
