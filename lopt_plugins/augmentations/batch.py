"""``SubsampleBatch``: tasks trained on a sampled fraction of each batch (smaller batches).

Shapes must stay static, so the batch keeps its size and a mask over its
leading (batch) axis keeps the first ``ceil(fraction * B)`` examples. The
wrapped task's loss takes no per-example weights, so the loss is computed per
example (``jax.vmap`` over the batch axis, each example as a batch of one) and
the kept examples' losses are averaged.

Cost: under ``vmap`` JAX folds the example axis back into the batch dimension
of matmuls and convolutions, so the compute is about that of one full-batch
loss (masked examples are computed too: nothing is saved, only the gradient
noise of a smaller batch is reproduced). What changes is meaning for losses
that are not a mean of independent per-example terms: batch statistics (batch
norm), or a loss normalized over the whole batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lopt_core import Task, TaskFamily
from lopt_core.tasks import Batch, ModelState, Params, TaskCfg
from lopt_plugins.augmentations._wrap import AugmentedFamily, AugmentedTask, Cfg, is_float, uniform


def _batch_size(batch: Batch, name: str) -> int:
    """The common leading-axis size of every leaf of ``batch`` (static), or a ValueError."""
    leaves = jax.tree_util.tree_leaves(batch)
    sizes = {x.shape[0] if x.ndim else None for x in leaves}
    if not leaves or len(sizes) != 1 or None in sizes:
        shapes = jax.tree_util.tree_map(lambda x: tuple(x.shape), batch)
        raise ValueError(
            f"SubsampleBatch({name}) needs batches whose leaves all share a leading batch axis; "
            f"got leaf shapes {shapes}. Wrap a task whose batches are examples stacked on axis 0."
        )
    return sizes.pop()


def _masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """Float leaves: the weighted mean over axis 0; other leaves: the first example's."""
    if not is_float(values):
        return values[0]
    w = weights.reshape(weights.shape + (1,) * (values.ndim - 1)).astype(values.dtype)
    return jnp.sum(w * values, axis=0)


class _SubsampleTask(AugmentedTask):
    """``inner`` on the first ``ceil(fraction * B)`` examples of each batch."""

    def __init__(self, inner: Task, fraction: jax.Array):
        super().__init__("SubsampleBatch", inner, {"fraction": fraction})
        self.fraction = fraction

    def loss_with_state_and_aux(
        self, params: Params, state: ModelState, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, ModelState, dict[str, jax.Array]]:
        size = _batch_size(batch, self.inner.name)
        # At least one example, at most all; the first example is therefore always kept.
        keep = jnp.clip(jnp.ceil(self.fraction * size), 1, size)
        weights = jnp.where(jnp.arange(size) < keep, 1.0 / keep, 0.0)

        def one(example: Batch, example_key: jax.Array):
            single = jax.tree_util.tree_map(lambda x: x[None], example)
            return self.inner.loss_with_state_and_aux(params, state, example_key, single)

        # One key per example: a random loss (e.g. label noise) draws independently for each.
        losses, states, aux = jax.vmap(one)(batch, jax.random.split(key, size))
        loss = jnp.sum(weights.astype(losses.dtype) * losses)
        # Model state: float leaves are the kept examples' mean, others the first example's.
        new_state = jax.tree_util.tree_map(lambda s: _masked_mean(s, weights), states)
        return loss, new_state, jax.tree_util.tree_map(lambda a: _masked_mean(a, weights), aux)


class SubsampleBatch(AugmentedFamily):
    """Tasks of ``family`` trained on a sampled fraction of each batch.

    Each task draws ``fraction`` uniform in ``[min_fraction, 1]`` (default
    ``min_fraction=0.25``); its loss is the mean of the per-example losses of
    the first ``ceil(fraction * B)`` examples of each batch of size ``B`` (the
    batch shape is unchanged). Per-example losses come from the wrapped task's
    loss on each example as a batch of one (see the module doc for the cost and
    for losses that are not per-example means), each with its own key split
    from the loss key. With ``fraction = 1`` the loss equals the wrapped loss up
    to float rounding for a deterministic loss that is a mean over examples.
    Model state: float leaves are averaged over the kept examples' updates,
    other leaves come from the first example. Extras (``aux``) are averaged
    over the kept examples likewise.

    The family must have data (``family.datasets``), and batches must be pytrees
    whose leaves share a leading batch axis. ``eval_task_fn`` is the wrapped
    family's evaluation task, unwrapped: evaluation sees whole batches. Note
    that meta-training computes its meta-loss with the training task, i.e. on a
    subsample too. cfg: ``{"inner": ..., "fraction": float32[]}``.
    """

    def __init__(self, family: TaskFamily | Task, min_fraction: float = 0.25):
        owner = type(self).__name__
        if (
            isinstance(min_fraction, bool)
            or not isinstance(min_fraction, (int, float))
            or not 0 < min_fraction <= 1
        ):
            raise ValueError(
                f"{owner}: min_fraction must be a number in (0, 1], got {min_fraction!r}; "
                "e.g. 0.25 trains on batches down to a quarter of the full size."
            )
        super().__init__(family, min_fraction=float(min_fraction))
        if self.datasets is None:
            raise ValueError(
                f"{owner}: {self.family.name} is data-free (its datasets is None), so it has no "
                "batch to subsample; wrap a family with data."
            )
        self.min_fraction = float(min_fraction)

    def sample_own(self, key: jax.Array, inner_cfg: TaskCfg) -> Cfg:
        """The fraction of each batch kept, uniform in ``[min_fraction, 1]``."""
        return {"fraction": uniform(key, (), self.min_fraction, 1.0)}

    def task_fn(self, cfg: Cfg) -> Task:
        """The wrapped task for ``cfg["inner"]`` on the first ``ceil(fraction * B)`` examples."""
        return _SubsampleTask(self.inner_task(cfg), cfg["fraction"])

    def eval_task_fn(self, cfg: Cfg) -> Task:
        """The wrapped family's evaluation task, on whole batches."""
        return self.inner_eval_task(cfg)
