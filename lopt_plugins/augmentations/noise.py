"""``GradientNoise``: tasks whose gradients carry extra Gaussian noise, loss values unchanged.

The loss becomes ``loss + (dot - stop_gradient(dot))`` with
``dot = sum(noise * params)``: the added term is exactly 0 in value, and its
gradient is ``noise``, so ``d loss' / d params = grad + noise`` (scaled, like
any gradient, by the cotangent of the loss). The noise is redrawn at every
step from the loss key, with a standard deviation sampled per task.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lopt_core import Task, TaskFamily
from lopt_core.tasks import Batch, ModelState, Params, TaskCfg
from lopt_plugins.augmentations._wrap import (
    AugmentedFamily,
    AugmentedTask,
    Cfg,
    check_range,
    is_float,
    log_uniform,
)


class _GradientNoiseTask(AugmentedTask):
    """``inner`` whose gradients get ``N(0, std^2)`` noise on every float parameter."""

    def __init__(self, inner: Task, std: jax.Array):
        super().__init__("GradientNoise", inner, {"std": std})
        self.std = std

    def noise_dot(self, params: Params, key: jax.Array) -> jax.Array:
        """``sum(noise * params)`` over the float leaves, with fresh noise from ``key``."""
        leaves = [p for p in jax.tree_util.tree_leaves(params) if is_float(p)]
        dot = jnp.zeros((), jnp.float32)
        for leaf, leaf_key in zip(leaves, jax.random.split(key, max(len(leaves), 1)), strict=False):
            noise = self.std * jax.random.normal(leaf_key, leaf.shape, jnp.float32)
            dot = dot + jnp.vdot(noise, leaf.astype(jnp.float32))
        return dot

    def loss_with_state_and_aux(
        self, params: Params, state: ModelState, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, ModelState, dict[str, jax.Array]]:
        # Split rather than reuse the loss key: the noise is independent of the task's own draws.
        inner_key, noise_key = jax.random.split(key)
        loss, state, aux = self.inner.loss_with_state_and_aux(params, state, inner_key, batch)
        dot = self.noise_dot(params, noise_key)
        # Exactly 0 in value while dot is finite; the guard keeps an overflowing dot (huge
        # parameters) from turning a finite loss into NaN, at the price of no noise then.
        zero = jnp.where(jnp.isfinite(dot), dot - jax.lax.stop_gradient(dot), 0.0)
        return loss + zero.astype(loss.dtype), state, aux


class GradientNoise(AugmentedFamily):
    """Tasks of ``family`` whose gradients get added Gaussian noise; loss values unchanged.

    Each task draws ``std`` log-uniform in ``[min_std, max_std]`` (default
    ``[1e-3, 1e-1]``, an absolute standard deviation, not relative to the
    gradient's size); at every loss evaluation fresh noise ``N(0, std^2)`` is
    drawn for each float parameter entry from the loss key, and the gradient
    becomes ``grad + noise`` while the loss value is exactly the wrapped one
    (see the module doc). The loss key is split: the wrapped task receives one
    half, the noise the other, so a random wrapped loss sees another key than
    it would unwrapped (the same distribution). Model state and extras pass
    through, the normalizer is the wrapped one.

    ``eval_task_fn`` is the wrapped family's evaluation task, unwrapped (values
    are the same; no noise is computed). Meta-gradient estimators that use loss
    values only (ES, PES) see no difference in the meta-loss; truncated
    backpropagation differentiates the meta-loss through the parameters and so
    sees the noise term of the meta-loss step too.
    cfg: ``{"inner": ..., "std": float32[]}``.
    """

    def __init__(self, family: TaskFamily | Task, min_std: float = 1e-3, max_std: float = 1e-1):
        owner = type(self).__name__
        low, high = check_range(min_std, max_std, ("min_std", "max_std"), owner)
        super().__init__(family, min_std=low, max_std=high)
        self.min_std, self.max_std = low, high

    def sample_own(self, key: jax.Array, inner_cfg: TaskCfg) -> Cfg:
        """The task's noise standard deviation, log-uniform in ``[min_std, max_std]``."""
        return {"std": log_uniform(key, (), self.min_std, self.max_std)}

    def task_fn(self, cfg: Cfg) -> Task:
        """The wrapped task for ``cfg["inner"]`` with noisy gradients."""
        return _GradientNoiseTask(self.inner_task(cfg), cfg["std"])

    def eval_task_fn(self, cfg: Cfg) -> Task:
        """The wrapped family's evaluation task (the same loss values, without noise)."""
        return self.inner_eval_task(cfg)
