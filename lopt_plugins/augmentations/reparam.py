"""``ReparamWeights``: the optimizer sees the parameters divided by sampled scales.

For scales ``s`` the optimizer works on ``p' = p / s``: ``init`` returns the
wrapped task's initialization divided by ``s`` and ``loss(p') = inner_loss(p' * s)``.
The loss landscape is the same up to a diagonal change of variables, but the
gradient the optimizer sees is ``s * grad`` and a step of size ``lr`` moves the
real parameters by ``lr * s``: an optimizer that works across scales must adapt
to them (celo's main augmentation; ``learned_optimization``'s ``ReparamWeights``).
"""

from __future__ import annotations

from typing import Any

import jax

from lopt_core import Task, TaskFamily
from lopt_core.tasks import Batch, ModelState, Params, TaskCfg
from lopt_core.validation import one_of
from lopt_plugins.augmentations._wrap import (
    AugmentedFamily,
    AugmentedTask,
    Cfg,
    check_range,
    is_float,
    log_uniform,
)

LEVELS = ("global", "tensor", "parameter")


class _ReparamTask(AugmentedTask):
    """``inner`` seen through ``p' = p / s``; ``scales`` as ``ReparamWeights`` samples them."""

    def __init__(self, inner: Task, scales: Any, level: str):
        super().__init__("ReparamWeights", inner, {"scales": scales})
        self.scales, self.level = scales, level

    def _rescale(self, params: Params, multiply: bool) -> Params:
        leaves, treedef = jax.tree_util.tree_flatten(params)
        if self.level == "global":
            scales = [self.scales] * len(leaves)
        elif self.level == "tensor":
            scales = [self.scales[i] for i in range(self.scales.shape[0])]
        else:
            scales = list(self.scales)
        if len(scales) != len(leaves):
            raise ValueError(
                f"ReparamWeights: the cfg holds {len(scales)} scales for {len(leaves)} parameter "
                f"tensors of {self.inner.name}; its parameter tree must not change between tasks."
            )
        out = []
        for p, s in zip(leaves, scales, strict=True):
            if not is_float(p):  # integer "parameters" (e.g. a counter) are left alone
                out.append(p)
                continue
            # Cast back: float32 scales must not promote bfloat16 parameters.
            out.append((p * s if multiply else p / s).astype(p.dtype))
        return jax.tree_util.tree_unflatten(treedef, out)

    def init_with_state(self, key: jax.Array) -> tuple[Params, ModelState]:
        params, state = self.inner.init_with_state(key)
        return self._rescale(params, multiply=False), state

    def loss_with_state_and_aux(
        self, params: Params, state: ModelState, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, ModelState, dict[str, jax.Array]]:
        return self.inner.loss_with_state_and_aux(
            self._rescale(params, multiply=True), state, key, batch
        )


class ReparamWeights(AugmentedFamily):
    """Tasks of ``family`` whose parameters are rescaled by log-uniform scales.

    Each task draws scales ``s`` log-uniform in ``[min_scale, max_scale]``
    (default ``[1e-3, 1e3]``, the range of ``learned_optimization``) at
    ``level``: ``"global"`` one scalar for all parameters, ``"tensor"`` one per
    parameter tensor, ``"parameter"`` one per parameter entry. The optimizer
    sees ``p' = p / s``: ``init`` is the wrapped init divided by ``s`` and
    ``loss(p') = inner_loss(p' * s)`` (integer leaves are not scaled). With all
    scales 1 (``min_scale = max_scale = 1``) the tasks equal the wrapped ones
    bit for bit: init, loss and gradients.

    ``eval_task_fn`` wraps the wrapped family's evaluation task with the same
    scales: the optimizer's parameters are ``p'``, and evaluation reports the
    original loss of the original parameters ``p' * s``. The normalizer is the
    wrapped task's (loss values are unchanged).
    cfg: ``{"inner": ..., "scales": float32[] | float32[num_tensors] | [arrays like params]}``.
    """

    def __init__(
        self,
        family: TaskFamily | Task,
        level: str = "global",
        min_scale: float = 1e-3,
        max_scale: float = 1e3,
    ):
        owner = type(self).__name__
        level = one_of(level, "level", LEVELS, owner=owner)
        low, high = check_range(min_scale, max_scale, ("min_scale", "max_scale"), owner)
        super().__init__(family, level=level, min_scale=low, max_scale=high)
        self.level, self.min_scale, self.max_scale = level, low, high

    def sample_own(self, key: jax.Array, inner_cfg: TaskCfg) -> Cfg:
        """Log-uniform scales: one, one per parameter tensor, or one per entry."""
        if self.level == "global":
            return {"scales": log_uniform(key, (), self.min_scale, self.max_scale)}
        # The shapes are the same for every task of the family (one graph), so tracing
        # the wrapped init here fixes the cfg's shapes; nothing is computed.
        leaves = jax.tree_util.tree_leaves(self.param_shapes(inner_cfg, key))
        if self.level == "tensor":
            return {"scales": log_uniform(key, (len(leaves),), self.min_scale, self.max_scale)}
        if not leaves:
            return {"scales": []}
        keys = jax.random.split(key, len(leaves))
        return {
            "scales": [
                log_uniform(keys[i], leaf.shape, self.min_scale, self.max_scale)
                for i, leaf in enumerate(leaves)
            ]
        }

    def task_fn(self, cfg: Cfg) -> Task:
        """The wrapped task for ``cfg["inner"]``, reparameterized by ``cfg["scales"]``."""
        return _ReparamTask(self.inner_task(cfg), cfg["scales"], self.level)

    def eval_task_fn(self, cfg: Cfg) -> Task:
        """The wrapped evaluation task, reparameterized the same way (see the class doc)."""
        return _ReparamTask(self.inner_eval_task(cfg), cfg["scales"], self.level)
