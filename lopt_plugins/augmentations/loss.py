"""``LossTransform``: tasks whose loss is transformed (an affine map, or a log).

An optimizer that reads the loss value (many learned optimizers do) or whose
steps depend on the gradient's magnitude meets losses on other scales:
``"affine"`` gives ``a * loss + b`` (gradients scaled by ``a``), ``"log"``
gives ``log(loss + eps)`` (gradients divided by ``loss + eps``). The
normalizer inverts the transform before calling the wrapped normalizer, so
meta-losses stay on the original scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lopt_core import Task, TaskFamily
from lopt_core.tasks import Batch, ModelState, Params, TaskCfg
from lopt_core.validation import one_of, positive_float
from lopt_plugins.augmentations._wrap import (
    AugmentedFamily,
    AugmentedTask,
    Cfg,
    check_range,
    log_uniform,
    uniform,
)

TRANSFORMS = ("affine", "log")


class _LossTransformTask(AugmentedTask):
    """``inner`` with its loss transformed; ``cfg`` holds ``scale``/``shift`` for affine."""

    def __init__(self, inner: Task, cfg: Cfg, transform: str, eps: float):
        super().__init__("LossTransform", inner, cfg)
        self.transform, self.eps = transform, eps

    def forward(self, loss: jax.Array) -> jax.Array:
        """The transformed loss."""
        if self.transform == "log":
            return jnp.log(loss + self.eps)
        return self.cfg["scale"] * loss + self.cfg["shift"]

    def inverse(self, loss: jax.Array) -> jax.Array:
        """The original loss of a transformed one."""
        if self.transform == "log":
            return jnp.exp(loss) - self.eps
        return (loss - self.cfg["shift"]) / self.cfg["scale"]

    def loss_with_state_and_aux(
        self, params: Params, state: ModelState, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, ModelState, dict[str, jax.Array]]:
        loss, state, aux = self.inner.loss_with_state_and_aux(params, state, key, batch)
        return self.forward(loss).astype(loss.dtype), state, aux

    def normalizer(self, loss: jax.Array) -> jax.Array:
        # Meta-training normalizes the training task's loss: undo the transform first.
        return self.inner.normalizer(self.inverse(loss))


class LossTransform(AugmentedFamily):
    """Tasks of ``family`` whose loss is transformed, with the normalizer on the original scale.

    ``transform="affine"`` (default): ``loss' = a * loss + b``, ``a`` log-uniform
    in ``[min_scale, max_scale]`` (default ``[0.1, 10]``), ``b`` uniform in
    ``[min_shift, max_shift]`` (default ``[-1, 1]``); ``a = 1, b = 0`` is the
    wrapped loss exactly. ``transform="log"``: ``loss' = log(loss + eps)``
    (default ``eps=1e-6``; the loss must be non-negative, else NaN); the
    affine arguments then play no part and nothing is sampled.

    ``normalizer(loss')`` is the wrapped normalizer of the inverted loss
    (``(loss' - b) / a``, or ``exp(loss') - eps``: equal to the original up to
    rounding), so meta-losses keep the original scale. Extras (``aux``) and
    model state pass through. ``eval_task_fn`` is the wrapped family's
    evaluation task, unwrapped: evaluation losses are on the original scale
    (``train_family``'s ``train_loss`` is transformed, its eval losses are not).
    cfg: ``{"inner": ..., "scale": float32[], "shift": float32[]}`` (affine),
    ``{"inner": ...}`` (log).
    """

    def __init__(
        self,
        family: TaskFamily | Task,
        transform: str = "affine",
        min_scale: float = 0.1,
        max_scale: float = 10.0,
        min_shift: float = -1.0,
        max_shift: float = 1.0,
        eps: float = 1e-6,
    ):
        owner = type(self).__name__
        transform = one_of(transform, "transform", TRANSFORMS, owner=owner)
        low, high = check_range(min_scale, max_scale, ("min_scale", "max_scale"), owner)
        shifts = check_range(
            min_shift, max_shift, ("min_shift", "max_shift"), owner, positive=False
        )
        eps = positive_float(eps, "eps", owner=owner)
        super().__init__(
            family,
            transform=transform,
            min_scale=low,
            max_scale=high,
            min_shift=shifts[0],
            max_shift=shifts[1],
            eps=eps,
        )
        self.transform, self.eps = transform, eps
        self.min_scale, self.max_scale = low, high
        self.min_shift, self.max_shift = shifts

    def sample_own(self, key: jax.Array, inner_cfg: TaskCfg) -> Cfg:
        """Affine: a log-uniform scale and a uniform shift; log: nothing."""
        if self.transform == "log":
            return {}
        scale_key, shift_key = jax.random.split(key)
        return {
            "scale": log_uniform(scale_key, (), self.min_scale, self.max_scale),
            "shift": uniform(shift_key, (), self.min_shift, self.max_shift),
        }

    def task_fn(self, cfg: Cfg) -> Task:
        """The wrapped task for ``cfg["inner"]`` with its loss transformed."""
        return _LossTransformTask(self.inner_task(cfg), cfg, self.transform, self.eps)

    def eval_task_fn(self, cfg: Cfg) -> Task:
        """The wrapped family's evaluation task, on the original scale."""
        return self.inner_eval_task(cfg)
