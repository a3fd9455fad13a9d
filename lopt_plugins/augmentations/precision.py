"""``LowPrecision``: tasks whose parameters are stored, or whose loss is computed, in 16 bits.

- ``where="params"``: parameters are cast to the low-precision dtype at init
  and stay in it (the optimizer's updates are rounded to it, as in pure
  bfloat16 training); the loss upcasts them to float32 and computes as the
  wrapped task does, so only storage and update precision change.
- ``where="compute"``: parameters stay float32; the loss casts them and the
  batch's float leaves to the low-precision dtype, runs the wrapped loss in it
  and returns a float32 loss (mixed-precision training without loss scaling).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lopt_core import Task, TaskFamily
from lopt_core.tasks import Batch, ModelState, Params
from lopt_core.validation import one_of
from lopt_plugins.augmentations._wrap import AugmentedFamily, AugmentedTask, cast_floats, is_float

DTYPES = {"bfloat16": jnp.bfloat16, "float16": jnp.float16}
WHERE = ("params", "compute")


def _restore_dtypes(new: Any, old: Any) -> Any:
    """``new`` with each float leaf cast to the dtype of the matching leaf of ``old``."""
    return jax.tree_util.tree_map(
        lambda n, o: n.astype(o.dtype) if is_float(n) and hasattr(o, "dtype") else n, new, old
    )


class _LowPrecisionTask(AugmentedTask):
    """``inner`` with parameters (``where="params"``) or compute (``"compute"``) in ``dtype``."""

    def __init__(self, inner: Task, dtype: Any, where: str):
        super().__init__("LowPrecision", inner, {})
        self.dtype, self.where = dtype, where

    def init_with_state(self, key: jax.Array) -> tuple[Params, ModelState]:
        params, state = self.inner.init_with_state(key)
        if self.where == "params":
            params = cast_floats(params, self.dtype)
        return params, state

    def loss_with_state_and_aux(
        self, params: Params, state: ModelState, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, ModelState, dict[str, jax.Array]]:
        if self.where == "params":
            # Gradients flow back through the cast: they arrive in the parameters' dtype.
            return self.inner.loss_with_state_and_aux(
                cast_floats(params, jnp.float32), state, key, batch
            )
        loss, new_state, aux = self.inner.loss_with_state_and_aux(
            cast_floats(params, self.dtype), state, key, cast_floats(batch, self.dtype)
        )
        # The state keeps its dtypes (a training loop's carry must not change type).
        if state is not None:
            new_state = _restore_dtypes(new_state, state)
        return loss.astype(jnp.float32), new_state, cast_floats(aux, jnp.float32)


class LowPrecision(AugmentedFamily):
    """Tasks of ``family`` with low-precision parameters or compute (nothing sampled).

    ``dtype``: ``"bfloat16"`` (default) or ``"float16"``. ``where="params"``
    (default): ``init`` returns the wrapped init with float leaves cast to
    ``dtype``, and the parameters stay in ``dtype`` through training (optimizers
    built on optax cast their updates back to the parameters' dtype); the loss
    upcasts them to float32, so losses are the wrapped task's at the rounded
    parameters and gradients arrive in ``dtype``. ``where="compute"``: the
    parameters stay in the wrapped task's dtype; the loss casts them and the
    batch's float leaves to ``dtype``, computes the wrapped loss in it and
    returns a float32 loss (extras float32 too; a model state keeps its dtypes).
    Integer leaves (labels, tokens) are never cast.

    ``eval_task_fn``: for ``"params"`` the wrapped evaluation task behind the
    same upcast (it must accept the low-precision parameters); for
    ``"compute"`` the wrapped evaluation task itself, so evaluation computes in
    full precision. The normalizer is the wrapped one. Learned optimizers must
    accept parameters in ``dtype`` to train ``"params"`` tasks.
    cfg: ``{"inner": ...}``.
    """

    def __init__(self, family: TaskFamily | Task, dtype: str = "bfloat16", where: str = "params"):
        owner = type(self).__name__
        dtype = one_of(dtype, "dtype", tuple(DTYPES), owner=owner)
        where = one_of(where, "where", WHERE, owner=owner)
        super().__init__(family, dtype=dtype, where=where)
        self.dtype, self.where = dtype, where

    def task_fn(self, cfg: dict) -> Task:
        """The wrapped task for ``cfg["inner"]`` in low precision."""
        return _LowPrecisionTask(self.inner_task(cfg), DTYPES[self.dtype], self.where)

    def eval_task_fn(self, cfg: dict) -> Task:
        """See the class doc: upcast for ``"params"``, the wrapped task itself for ``"compute"``."""
        if self.where == "compute":
            return self.inner_eval_task(cfg)
        return _LowPrecisionTask(self.inner_eval_task(cfg), DTYPES[self.dtype], self.where)
