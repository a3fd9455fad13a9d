"""What every augmentation shares: the wrapping family and task, and the argument checks.

An augmented family's cfg is ``{"inner": <the wrapped family's cfg>, **own}``,
where ``own`` holds the augmentation's sampled arrays, so cfgs stay pytrees of
arrays and ``jax.vmap`` still trains many tasks in one graph. A subclass of
``AugmentedFamily`` draws ``own`` (``sample_own``) and builds its task
(``task_fn``); a subclass of ``AugmentedTask`` overrides the stateful forms
(``init_with_state``, ``loss_with_state_and_aux``) and ``normalizer``, which
delegate to the wrapped task unless overridden.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from lopt_core import Task, TaskFamily
from lopt_core.tasks import Batch, ModelState, Params, TaskCfg, as_family
from lopt_core.validation import positive_float
from lopt_plugins.tasks._common import ArgsEquality

Cfg = dict[str, Any]


def check_range(
    low: Any, high: Any, names: tuple[str, str], owner: str, *, positive: bool = True
) -> tuple[float, float]:
    """``(low, high)`` as floats if ``low <= high`` (both positive unless ``positive=False``)."""
    if positive:
        low, high = (
            positive_float(low, names[0], owner=owner),
            positive_float(high, names[1], owner=owner),
        )
    else:
        for value, name in ((low, names[0]), (high, names[1])):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}.")
        low, high = float(low), float(high)
    if low > high:
        raise ValueError(
            f"{owner}: {names[0]} must be at most {names[1]}, got {names[0]}={low!r} > "
            f"{names[1]}={high!r}; swap them (equal values give a constant)."
        )
    return low, high


def log_uniform(key: jax.Array, shape: tuple[int, ...], low: float, high: float) -> jax.Array:
    """float32 draws whose log is uniform in ``[log(low), log(high)]``.

    ``low == high`` gives exactly ``low`` (no exp/log round trip), so a range of
    ``(1, 1)`` yields scales that are exactly 1.
    """
    if low == high:
        return jnp.full(shape, low, jnp.float32)
    return jnp.exp(jax.random.uniform(key, shape, minval=math.log(low), maxval=math.log(high)))


def uniform(key: jax.Array, shape: tuple[int, ...], low: float, high: float) -> jax.Array:
    """float32 draws uniform in ``[low, high]`` (exactly ``low`` when they are equal)."""
    if low == high:
        return jnp.full(shape, low, jnp.float32)
    return jax.random.uniform(key, shape, minval=low, maxval=high)


def is_float(x: Any) -> bool:
    """Whether ``x`` (an array or a shape/dtype struct) holds floating-point numbers."""
    return jnp.issubdtype(x.dtype, jnp.floating)


def cast_floats(tree: Any, dtype: Any) -> Any:
    """``tree`` with its floating-point leaves cast to ``dtype`` (other leaves untouched)."""
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if is_float(x) else x, tree)


class AugmentedTask(Task):
    """A task that wraps ``inner``; every method delegates to it unless overridden.

    Subclasses override the stateful forms only: the stateless ``init``,
    ``loss`` and ``loss_and_aux`` call them (with model state ``None``, as for
    any stateless task), so model state always flows through the wrapper.
    """

    def __init__(self, wrapper: str, inner: Task, cfg: Cfg):
        self.inner = inner
        self.cfg = cfg
        self.datasets = inner.datasets
        self.name = f"{wrapper}({inner.name})"

    def init(self, key: jax.Array) -> Params:
        return self.init_with_state(key)[0]

    def init_with_state(self, key: jax.Array) -> tuple[Params, ModelState]:
        return self.inner.init_with_state(key)

    def loss_and_aux(
        self, params: Params, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        loss, _, aux = self.loss_with_state_and_aux(params, None, key, batch)
        return loss, aux

    def loss_with_state_and_aux(
        self, params: Params, state: ModelState, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, ModelState, dict[str, jax.Array]]:
        return self.inner.loss_with_state_and_aux(params, state, key, batch)

    def normalizer(self, loss: jax.Array) -> jax.Array:
        return self.inner.normalizer(loss)


class AugmentedFamily(ArgsEquality, TaskFamily):
    """A family of perturbed tasks of ``family`` (a ``TaskFamily``, or a ``Task`` wrapped as one).

    ``datasets`` is the wrapped family's (the same object), the name is
    ``"<Wrapper>(<inner name>)"``, and equality and hash go by type and
    constructor arguments (the wrapped family included), so equal wrappers of
    equal families share compiled programs.
    """

    def __init__(self, family: TaskFamily | Task, **args: Any):
        self.family = as_family(family, f"{type(self).__name__}: family")
        self.datasets = self.family.datasets
        self._args = (("family", self.family), *args.items())
        self.name = f"{type(self).__name__}({self.family.name})"

    def sample(self, key: jax.Array) -> Cfg:
        """``{"inner": the wrapped family's cfg, **sample_own(...)}``."""
        inner_key, own_key = jax.random.split(key)
        inner = self.family.sample(inner_key)
        return {"inner": inner, **self.sample_own(own_key, inner)}

    def sample_own(self, key: jax.Array, inner_cfg: TaskCfg) -> Cfg:
        """The augmentation's own sampled arrays (a dict of arrays; none by default)."""
        return {}

    def inner_task(self, cfg: Cfg) -> Task:
        """The wrapped family's training task for ``cfg``."""
        return self.family.task_fn(cfg["inner"])

    def inner_eval_task(self, cfg: Cfg) -> Task:
        """The wrapped family's evaluation task for ``cfg``."""
        return self.family.eval_task_fn(cfg["inner"])

    def param_shapes(self, inner_cfg: TaskCfg, key: jax.Array) -> Any:
        """Shapes and dtypes of the wrapped tasks' parameters (traced only, nothing runs)."""
        return jax.eval_shape(
            lambda c, k: self.family.task_fn(c).init_with_state(k)[0], inner_cfg, key
        )
