"""Meta-gradient estimators: truncated PES, full-horizon ES and truncated backprop.

Each estimator is split into a host part, ``get_batches()`` (draws the data of
one estimate), and a pure part, ``estimate(worker_state, theta, key, batches)``,
that the learner jits together with the outer update. ``compute_gradient_estimate``
joins the two for callers that want one estimate at a time (e.g. remote workers).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lopt_core.jit import BackendJit
from lopt_core.outer.truncated_step import InnerState, VectorizedLOptTruncatedStep
from lopt_core.validation import positive_int

tree_map = jax.tree_util.tree_map


@struct.dataclass
class GradientEstimate:
    """One estimate of the meta-gradient: mean meta-loss, gradient (theta-shaped), metrics."""

    mean_loss: jax.Array
    grad: Any
    metrics: dict = struct.field(default_factory=dict)


class GradientEstimator:
    """Base class: turns unrolls of a ``VectorizedLOptTruncatedStep`` into meta-gradients."""

    truncated_step: VectorizedLOptTruncatedStep
    unroll_length: int

    @property
    def name(self) -> str:
        """A readable name; the class name."""
        return type(self).__name__

    def init_worker_state(self, theta: Any, key: jax.Array) -> Any:
        """The estimator's persistent state (e.g. the inner problems), a pytree."""
        raise NotImplementedError

    def get_batches(self) -> Any:
        """Host side: the data one estimate consumes."""
        return self.truncated_step.get_batches(self.unroll_length)

    def estimate(
        self, worker_state: Any, theta: Any, key: jax.Array, batches: Any
    ) -> tuple[Any, GradientEstimate]:
        """Pure: the next worker state and a gradient estimate."""
        raise NotImplementedError

    def compute_gradient_estimate(
        self, worker_state: Any, theta: Any, key: jax.Array
    ) -> tuple[Any, GradientEstimate]:
        """Draw data and compute one estimate (jitted, compiled once per estimator)."""
        return _jitted_estimate(self)(worker_state, theta, key, self.get_batches())

    def compiled_programs(self) -> int:
        """Programs ``compute_gradient_estimate`` has compiled (1 when nothing retraces)."""
        return _jitted_estimate(self)._cache_size()


@functools.cache
def _jitted_estimate(estimator: GradientEstimator):
    return BackendJit(estimator.estimate)


def _check_std(owner: str, std: float) -> float:
    if not isinstance(std, (int, float)) or not std > 0:
        raise ValueError(f"{owner}: std must be a positive number, got {std!r}.")
    return float(std)


def _check_truncated_step(owner: str, truncated_step: Any) -> None:
    if not isinstance(truncated_step, VectorizedLOptTruncatedStep):
        raise TypeError(
            f"{owner}: truncated_step must be a VectorizedLOptTruncatedStep, got "
            f"{type(truncated_step).__name__}."
        )


class _FlatTheta:
    """Theta's leaves laid end to end: ``[..., D]`` arrays instead of theta-shaped pytrees.

    Estimators keep perturbations, accumulators and gradients flat when every leaf
    of theta has one dtype (the usual case), so that each of their operations is one
    XLA kernel rather than one per leaf: compile time grows with the number of
    kernels, and an outer step's arithmetic on theta is tiny. ``flat`` is False for
    mixed dtypes; the estimators then keep pytrees.
    """

    def __init__(self, theta: Any):
        leaves, self.treedef = jax.tree_util.tree_flatten(theta)
        self.shapes = [tuple(jnp.shape(x)) for x in leaves]
        self.dtypes = [jnp.result_type(x) for x in leaves]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.flat = len(set(self.dtypes)) == 1
        self.size = sum(self.sizes)

    def unravel(self, flat: jax.Array) -> Any:
        """``[..., D]`` -> theta-shaped pytree whose leaves lead with ``...``."""
        lead = flat.shape[:-1]
        offsets = np.cumsum([0] + self.sizes)
        leaves = [
            flat[..., a:b].reshape(lead + shape)
            for a, b, shape in zip(offsets[:-1], offsets[1:], self.shapes, strict=True)
        ]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def normal(self, key: jax.Array, num: int, std: float) -> Any:
        """``num`` perturbations: ``[num, D]`` when flat, else a pytree (one draw per dtype)."""
        if self.flat:
            return std * jax.random.normal(key, (num, self.size), self.dtypes[0])
        groups = list(dict.fromkeys(self.dtypes))
        keys = jax.random.split(key, len(groups))
        noise: list[Any] = [None] * len(self.shapes)
        for dtype, dtype_key in zip(groups, keys, strict=True):
            idx = [i for i, d in enumerate(self.dtypes) if d == dtype]
            sizes = [self.sizes[i] for i in idx]
            draw = std * jax.random.normal(dtype_key, (num, sum(sizes)), dtype)
            offsets = np.cumsum([0] + sizes)
            for i, a, b in zip(idx, offsets[:-1], offsets[1:], strict=True):
                noise[i] = draw[:, a:b].reshape((num,) + self.shapes[i])
        return jax.tree_util.tree_unflatten(self.treedef, noise)

    def as_tree(self, x: Any) -> Any:
        """A flat ``[..., D]`` array as theta's pytree; a pytree unchanged."""
        return self.unravel(x) if self.flat else x

    def zeros(self, num: int) -> Any:
        """``num`` zero perturbations, flat or theta-shaped like ``normal``."""
        if self.flat:
            return jnp.zeros((num, self.size), self.dtypes[0])
        leaves = [jnp.zeros((num,) + s, d) for s, d in zip(self.shapes, self.dtypes, strict=True)]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def sample_perturbations(key: jax.Array, theta: Any, num: int, std: float) -> Any:
    """``num`` Gaussian perturbations of ``theta`` with standard deviation ``std``.

    One draw of ``[num, size of theta]`` normals cut into theta's leaves (one draw
    per dtype when the leaves' dtypes differ): each random call is a loop of
    kernels that XLA compiles separately, so one call instead of one per leaf makes
    an outer step compile faster.
    """
    layout = _FlatTheta(theta)
    return layout.as_tree(layout.normal(key, num, std))


def _antithetic(theta: Any, eps: Any) -> Any:
    """``[theta + eps; theta - eps]`` stacked along the particle axis."""
    return tree_map(lambda t, e: jnp.concatenate([t + e, t - e]), theta, eps)


def _weighted_mean(weights: jax.Array, tree: Any) -> Any:
    """``mean_i weights[i] * tree[i]`` over the leading axis."""
    return tree_map(
        lambda x: jnp.mean(weights.reshape((-1,) + (1,) * (x.ndim - 1)) * x, axis=0), tree
    )


def _finite_or_zero(delta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Zero the loss differences of diverged pairs (they carry no signal); count them."""
    finite = jnp.isfinite(delta)
    return jnp.where(finite, delta, 0.0), jnp.sum(~finite).astype(jnp.float32)


def _finite_mean(x: jax.Array) -> jax.Array:
    """Mean over finite entries; NaN when there are none (the learner then skips the step)."""
    finite = jnp.isfinite(x)
    return jnp.sum(jnp.where(finite, x, 0.0)) / jnp.where(jnp.any(finite), jnp.sum(finite), jnp.nan)


@struct.dataclass
class PESWorkerState:
    """The antithetic pairs' inner state (``2 * num_tasks`` particles) and PES accumulators."""

    inner: InnerState
    # The perturbations summed since each task slot's problem started: [num_tasks, D]
    # with theta's leaves laid end to end (tree_leaves order), or theta-shaped with a
    # leading num_tasks axis when theta's leaves have different dtypes.
    accumulator: Any


class TruncatedPES(GradientEstimator):
    """Persistent evolution strategies (Vicol et al. 2021), antithetic.

    Each task slot runs a ``+eps`` and a ``-eps`` copy of its inner problem for
    ``trunc_length`` steps. The accumulator sums the perturbations used since the
    problem started, which makes the estimate unbiased for the whole unroll;
    when a problem restarts, the steps after the restart are credited to the
    current perturbation only and the accumulator restarts from it.
    """

    def __init__(
        self, truncated_step: VectorizedLOptTruncatedStep, trunc_length: int = 10, std: float = 0.01
    ):
        _check_truncated_step(type(self).__name__, truncated_step)
        self.truncated_step = truncated_step
        self.unroll_length = positive_int(trunc_length, "trunc_length", owner=type(self).__name__)
        self.std = _check_std(type(self).__name__, std)
        n = truncated_step.num_tasks
        self._task_ids = np.concatenate([np.arange(n), np.arange(n)]).astype(np.int32)

    def init_worker_state(self, theta: Any, key: jax.Array) -> PESWorkerState:
        inner = self.truncated_step.init_state_jit(theta, key, jnp.asarray(self._task_ids))
        accumulator = _FlatTheta(theta).zeros(self.truncated_step.num_tasks)
        return PESWorkerState(inner=inner, accumulator=accumulator)

    def estimate(self, worker_state, theta, key, batches):
        n = self.truncated_step.num_tasks
        layout = _FlatTheta(theta)
        eps_key, unroll_key = jax.random.split(key)
        eps = layout.normal(eps_key, n, self.std)  # flat [n, D] (or theta-shaped)
        inner, out = self.truncated_step.unroll(
            _antithetic(theta, layout.as_tree(eps)),
            worker_state.inner,
            unroll_key,
            batches,
            self._task_ids,
            self.unroll_length,
            theta_axis=0,
        )
        delta, nonfinite = _finite_or_zero(out.meta_loss[:, :n] - out.meta_loss[:, n:])  # [T, n]
        restarted = out.restarted[:, :n]
        after_restart = jnp.cumsum(restarted, axis=0) > 0
        # Steps before a restart saw accumulator + eps; steps after it saw eps only.
        weight_all = jnp.mean(delta, axis=0) / (2 * self.std**2)
        weight_before = jnp.mean(jnp.where(after_restart, 0.0, delta), axis=0) / (2 * self.std**2)
        grad = tree_map(
            lambda a, e: a + e,
            _weighted_mean(weight_before, worker_state.accumulator),
            _weighted_mean(weight_all, eps),
        )
        grad = layout.as_tree(grad)
        any_restart = jnp.any(restarted, axis=0)
        accumulator = tree_map(
            lambda acc, e: jnp.where(any_restart.reshape((-1,) + (1,) * (e.ndim - 1)), e, acc + e),
            worker_state.accumulator,
            eps,
        )
        metrics = {
            "train_loss": _finite_mean(out.train_loss),
            "restarts": jnp.sum(restarted).astype(jnp.float32),
            "nonfinite_losses": nonfinite,
        }
        estimate = GradientEstimate(_finite_mean(out.meta_loss), grad, metrics)
        return PESWorkerState(inner, accumulator), estimate


@struct.dataclass
class EmptyWorkerState:
    """Worker state of estimators that keep nothing between estimates."""


class FullES(GradientEstimator):
    """Antithetic evolution strategies over whole inner runs, restarted every estimate.

    ``loss_type="avg"`` scores a run by its mean meta-loss over all steps,
    ``"last"`` by the meta-loss after its final step. The horizon is
    ``horizon`` or, by default, the schedule's ``fixed_length``.
    """

    def __init__(
        self,
        truncated_step: VectorizedLOptTruncatedStep,
        std: float = 0.01,
        loss_type: str = "avg",
        horizon: int | None = None,
    ):
        owner = type(self).__name__
        _check_truncated_step(owner, truncated_step)
        if loss_type not in ("avg", "last"):
            raise ValueError(f"{owner}: loss_type must be 'avg' or 'last', got {loss_type!r}.")
        if horizon is None:
            sched = truncated_step.trunc_sched
            horizon = sched.fixed_length
            if horizon is None:
                raise ValueError(
                    f"{owner} unrolls whole inner runs, so it needs a fixed horizon: pass "
                    f"horizon=N or use a schedule with a fixed_length such as "
                    f"ConstantTruncationSchedule (got {sched!r})."
                )
        self.truncated_step = truncated_step
        self.unroll_length = positive_int(horizon, "horizon", owner=owner)
        self.std = _check_std(owner, std)
        self.loss_type = loss_type
        n = truncated_step.num_tasks
        self._task_ids = np.concatenate([np.arange(n), np.arange(n)]).astype(np.int32)

    def init_worker_state(self, theta: Any, key: jax.Array) -> EmptyWorkerState:
        return EmptyWorkerState()

    def estimate(self, worker_state, theta, key, batches):
        n = self.truncated_step.num_tasks
        eps_key, init_key, unroll_key = jax.random.split(key, 3)
        layout = _FlatTheta(theta)
        eps = layout.normal(eps_key, n, self.std)
        thetas = _antithetic(theta, layout.as_tree(eps))
        task_ids = self._task_ids  # numpy: known when tracing (see unroll)
        inner = self.truncated_step.init_state(thetas, init_key, task_ids, theta_axis=0)
        # Whole runs: no random offset and no restart within the unroll (a run that
        # diverges stays diverged: its pair is dropped as non-finite).
        horizon = jnp.full_like(inner.horizon, self.unroll_length)
        inner = inner.replace(inner_step=jnp.zeros_like(inner.inner_step), horizon=horizon)
        _, out = self.truncated_step.unroll(
            thetas,
            inner,
            unroll_key,
            batches,
            task_ids,
            self.unroll_length,
            theta_axis=0,
            restarts=False,
        )
        losses = jnp.mean(out.meta_loss, axis=0) if self.loss_type == "avg" else out.meta_loss[-1]
        delta, nonfinite = _finite_or_zero(losses[:n] - losses[n:])
        grad = layout.as_tree(_weighted_mean(delta / (2 * self.std**2), eps))
        metrics = {"train_loss": _finite_mean(out.train_loss), "nonfinite_losses": nonfinite}
        return worker_state, GradientEstimate(_finite_mean(losses), grad, metrics)


class TruncatedGrad(GradientEstimator):
    """Backpropagation through each truncation of ``trunc_length`` steps.

    The inner state carried between truncations is not differentiated through
    (``stop_gradient``), which is what makes it cheap and biased.
    """

    def __init__(self, truncated_step: VectorizedLOptTruncatedStep, trunc_length: int = 10):
        _check_truncated_step(type(self).__name__, truncated_step)
        self.truncated_step = truncated_step
        self.unroll_length = positive_int(trunc_length, "trunc_length", owner=type(self).__name__)
        self._task_ids = np.arange(truncated_step.num_tasks, dtype=np.int32)

    def init_worker_state(self, theta: Any, key: jax.Array) -> InnerState:
        return self.truncated_step.init_state_jit(theta, key, jnp.asarray(self._task_ids))

    def estimate(self, worker_state, theta, key, batches):
        def mean_meta_loss(theta):
            inner, out = self.truncated_step.unroll(
                theta, worker_state, key, batches, self._task_ids, self.unroll_length
            )
            return jnp.mean(out.meta_loss), (inner, out)

        (loss, (inner, out)), grad = jax.value_and_grad(mean_meta_loss, has_aux=True)(theta)
        metrics = {
            "train_loss": jnp.mean(out.train_loss),
            "restarts": jnp.sum(out.restarted).astype(jnp.float32),
        }
        return jax.lax.stop_gradient(inner), GradientEstimate(loss, grad, metrics)
