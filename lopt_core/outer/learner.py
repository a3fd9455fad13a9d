"""The learner: applies meta-gradients from one or more estimators to ``theta``.

Estimating (``GradientEstimator.estimate``, on workers) and applying
(``GradientLearner.apply_gradients``, on the learner) are separate steps, so the
estimates can come from other processes or machines. ``update`` runs both in
one process as a single jitted function.

Where the estimates come from is the executors' business
(``lopt_core.outer.executors``); the workers and their protocol are in
``lopt_core.outer.workers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from lopt_core.datasets import Datasets
from lopt_core.jit import BackendJit
from lopt_core.learned.base import LearnedOptimizer
from lopt_core.outer.gradient_estimators import GradientEstimate, GradientEstimator
from lopt_core.tasks import TaskFamily

tree_map = jax.tree_util.tree_map


@struct.dataclass
class LearnerState:
    """Everything a meta-training run needs to continue: theta, outer state, worker states."""

    theta: Any
    outer_opt_state: Any
    worker_states: tuple
    step: jax.Array  # int32: outer updates attempted so far
    num_nonfinite: jax.Array  # int32: updates skipped for a non-finite meta-gradient


class GradientLearner:
    """Meta-trains ``learned_opt`` with ``outer_optimizer`` on the mean of the estimators' grads.

    ``max_grad_norm`` clips the averaged meta-gradient by global norm (None: no
    clipping). A non-finite meta-gradient or meta-loss leaves ``theta`` and the
    outer state untouched and is counted in ``metrics["nonfinite_skipped"]``.
    """

    def __init__(
        self,
        learned_opt: LearnedOptimizer,
        estimators: Sequence[GradientEstimator],
        outer_optimizer: optax.GradientTransformation | None = None,
        max_grad_norm: float | None = 3.0,
    ):
        if isinstance(estimators, GradientEstimator):
            estimators = [estimators]
        estimators = tuple(estimators)
        if not estimators:
            raise ValueError("GradientLearner needs at least one gradient estimator, got none.")
        for e in estimators:
            if not isinstance(e, GradientEstimator):
                raise TypeError(f"estimators must be GradientEstimators, got {type(e).__name__}.")
            if e.truncated_step.learned_opt is not learned_opt:
                raise ValueError(
                    f"{e.name} was built for {e.truncated_step.learned_opt!r}, not for the "
                    f"learner's {learned_opt!r}; build its truncated step with the same object."
                )
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm!r}.")
        self.learned_opt = learned_opt
        self.estimators = estimators
        self.outer_optimizer = outer_optimizer or optax.adam(1e-3)
        self.max_grad_norm = max_grad_norm
        # BackendJit: jax.jit with lopt's compile options (CPU: XLA level 2, compiles ~2x faster).
        self._update_jit = BackendJit(self._update)

    @property
    def task_family(self) -> TaskFamily:
        """The task family the estimators train on (their first one's)."""
        return self.estimators[0].truncated_step.task_family

    @property
    def datasets(self) -> Datasets | None:
        """The datasets of ``task_family`` (None for a data-free family)."""
        return self.task_family.datasets

    def init(self, key: jax.Array) -> LearnerState:
        """Theta from the learned optimizer's ``init``, and fresh worker states."""
        theta_key, *worker_keys = jax.random.split(key, len(self.estimators) + 1)
        theta = self.learned_opt.init(theta_key)
        return LearnerState(
            theta=theta,
            outer_opt_state=self.outer_optimizer.init(theta),
            worker_states=self.init_worker_states(theta, worker_keys),
            step=jnp.zeros((), jnp.int32),
            num_nonfinite=jnp.zeros((), jnp.int32),
        )

    def init_worker_states(self, theta: Any, keys: Sequence[jax.Array]) -> tuple:
        """One worker state per estimator, for ``theta``."""
        return tuple(
            est.init_worker_state(theta, k) for est, k in zip(self.estimators, keys, strict=True)
        )

    def apply_gradients(
        self,
        state: LearnerState,
        estimates: Sequence[GradientEstimate],
        weights: jax.Array | None = None,
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        """Average ``estimates`` (weighted by ``weights``, one per estimate, when given),
        clip, take one outer step (pure: jit it or call it in jit)."""
        if weights is None:
            average = lambda xs: jnp.mean(jnp.stack(xs), axis=0)
        else:
            w = jnp.asarray(weights, jnp.float32) / jnp.sum(weights)
            average = lambda xs: jnp.tensordot(w, jnp.stack(xs), axes=1)
        grad = tree_map(lambda *g: average(g), *[e.grad for e in estimates])
        meta_loss = average([e.mean_loss for e in estimates])
        grad_norm = optax.tree.norm(grad)
        finite = jnp.isfinite(grad_norm) & jnp.isfinite(meta_loss)
        if self.max_grad_norm is not None:
            scale = jnp.minimum(1.0, self.max_grad_norm / (grad_norm + 1e-12))
            grad = tree_map(lambda g: g * scale, grad)
        # Zeros keep NaNs out of the (discarded) update branch's arithmetic.
        safe_grad = tree_map(lambda g: jnp.where(finite, g, 0.0), grad)
        updates, outer_opt_state = self.outer_optimizer.update(
            safe_grad, state.outer_opt_state, state.theta
        )
        new_theta = optax.apply_updates(state.theta, updates)
        keep = lambda new, old: tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
        state = state.replace(
            theta=keep(new_theta, state.theta),
            outer_opt_state=keep(outer_opt_state, state.outer_opt_state),
            step=state.step + 1,
            num_nonfinite=state.num_nonfinite + (~finite).astype(jnp.int32),
        )
        metrics = {
            "meta_loss": meta_loss,
            "grad_norm": grad_norm,
            "nonfinite_skipped": state.num_nonfinite,
        }
        # Estimators report different metrics (FullES has no "restarts"): average each
        # over the estimators that report it.
        for name in dict.fromkeys(name for e in estimates for name in e.metrics):
            values = [e.metrics[name] for e in estimates if name in e.metrics]
            metrics[name] = jnp.mean(jnp.stack(values))
        return state, metrics

    def _update(self, state: LearnerState, key: jax.Array, batches: tuple):
        keys = jax.random.split(key, len(self.estimators))
        worker_states, estimates = [], []
        for est, ws, k, b in zip(self.estimators, state.worker_states, keys, batches, strict=True):
            ws, estimate = est.estimate(ws, state.theta, k, b)
            worker_states.append(ws)
            estimates.append(estimate)
        state = state.replace(worker_states=tuple(worker_states))
        return self.apply_gradients(state, estimates)

    def update(self, state: LearnerState, key: jax.Array) -> tuple[LearnerState, dict]:
        """One outer step: draw data, estimate with every estimator, apply (one jitted call)."""
        batches = tuple(est.get_batches() for est in self.estimators)
        return self._update_jit(state, key, batches)
