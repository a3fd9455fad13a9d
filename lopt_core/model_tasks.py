"""Tasks from the user's own model: a flax linen or nnx ``Module``, or an ``(init, loss)`` pair.

Each adapter turns a model, a loss function and a ``Datasets`` into a ``Task``
(model state such as batch-norm statistics included), so that a model written
for a training script trains with lopt's optimizers and meta-trains learned
ones without a hand-written ``Task`` class::

    task = lopt_core.LinenTask(MyLinenModel(), cross_entropy, datasets)
    task = lopt_core.NNXTask(lambda rngs: MyNNXModel(rngs=rngs), cross_entropy, datasets)
    task = lopt_core.FunctionTask(init_fn, loss_fn, datasets)
    family = lopt_core.InitScaleFamily(task, 0.5, 2.0)   # tasks differing in their init

The model's loss function is ``loss_fn(outputs, batch)``, returning a scalar or
``(scalar, dict of scalar extras)`` (e.g. an accuracy); the model's inputs are
``batch[inputs]`` (default ``"image"``) or ``inputs(batch)``. Parameters are
initialized from ``datasets.abstract_batch`` (zeros of the batch's shapes), so
initializing draws no data. ``docs/custom_tasks.md`` shows each, run by the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from lopt_core.datasets import Datasets
from lopt_core.tasks import Task, TaskFamily

__all__ = ["FunctionTask", "InitScaleFamily", "LinenTask", "NNXTask"]

Inputs = str | Callable[[Any], Any]


def _loss_and_aux(value: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    if isinstance(value, tuple):
        loss, aux = value
        return loss, dict(aux)
    return value, {}


class _ModelTask(Task):
    """What the model adapters share: datasets, inputs, the loss function, a name."""

    def __init__(
        self,
        loss_fn: Callable[..., Any],
        datasets: Datasets | None,
        inputs: Inputs,
        example_batch: Any,
        name: str | None,
    ):
        self.loss_fn, self.datasets, self.inputs = loss_fn, datasets, inputs
        self.example_batch = example_batch
        if name is not None:
            self.name = name

    def model_inputs(self, batch: Any) -> Any:
        """The model's inputs in ``batch``: ``batch[inputs]``, or ``inputs(batch)``."""
        return self.inputs(batch) if callable(self.inputs) else batch[self.inputs]

    def example_inputs(self) -> Any:
        """Inputs of the batch's shapes, to initialize the model with (no data is drawn)."""
        batch = self.example_batch
        if batch is None:
            abstract = getattr(self.datasets, "abstract_batch", None)
            if abstract is None:
                raise ValueError(
                    f"{self.name}: the model is initialized from an example batch, and the "
                    "datasets have no abstract_batch; pass example_batch= (one batch, or "
                    "jax.ShapeDtypeStruct leaves)."
                )
            batch = abstract
        batch = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), batch)
        return self.model_inputs(batch)


class LinenTask(_ModelTask):
    """A flax linen ``model`` trained on ``loss_fn(model outputs, batch)``.

    Parameters are the ``params`` collection; every other collection the model
    creates (``batch_stats``...) is the task's model state, updated by each
    loss call (applied with those collections mutable). ``rngs`` names the
    rng streams the model draws from (e.g. ``("dropout",)``), each fed from the
    loss's key. ``apply_kwargs`` go to every ``model.apply`` (e.g.
    ``{"train": True}``), ``init_kwargs`` to ``model.init``.
    """

    def __init__(
        self,
        model: Any,
        loss_fn: Callable[..., Any],
        datasets: Datasets | None = None,
        *,
        inputs: Inputs = "image",
        example_batch: Any = None,
        rngs: tuple[str, ...] = (),
        apply_kwargs: dict[str, Any] | None = None,
        init_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ):
        super().__init__(loss_fn, datasets, inputs, example_batch, name)
        self.model, self.rngs = model, tuple(rngs)
        self.apply_kwargs = dict(apply_kwargs or {})
        self.init_kwargs = dict(init_kwargs if init_kwargs is not None else self.apply_kwargs)

    def _rngs(self, key: jax.Array) -> dict[str, jax.Array]:
        return {name: jax.random.fold_in(key, i) for i, name in enumerate(self.rngs)}

    def init_with_state(self, key: jax.Array) -> tuple[Any, Any]:
        param_key, rng_key = jax.random.split(key)
        rngs = {"params": param_key, **self._rngs(rng_key)}
        variables = dict(self.model.init(rngs, self.example_inputs(), **self.init_kwargs))
        params = variables.pop("params", {})
        return params, (variables or None)

    def loss_with_state_and_aux(
        self, params: Any, state: Any, key: jax.Array, batch: Any
    ) -> tuple[jax.Array, Any, dict[str, jax.Array]]:
        x, rngs = self.model_inputs(batch), self._rngs(key)
        if state:
            outputs, state = self.model.apply(
                {"params": params, **state}, x, rngs=rngs, mutable=list(state), **self.apply_kwargs
            )
            state = dict(state)
        else:
            outputs = self.model.apply({"params": params}, x, rngs=rngs, **self.apply_kwargs)
        loss, aux = _loss_and_aux(self.loss_fn(outputs, batch))
        return loss, state, aux


class NNXTask(_ModelTask):
    """A flax nnx model, built by ``make_model(rngs: nnx.Rngs)``, trained on
    ``loss_fn(model outputs, batch)``.

    Parameters are the model's ``nnx.Param`` variables, as a plain nested dict;
    every other variable (``nnx.BatchStat``, the rng state of ``nnx.Dropout``...)
    is the task's model state, updated by each loss call. ``init(key)`` builds
    the model with ``nnx.Rngs(key)``; the model's structure is taken once, from
    a model built with key 0. The model keeps its own rng streams: the loss's
    key is not used.
    """

    def __init__(
        self,
        make_model: Callable[[Any], Any],
        loss_fn: Callable[..., Any],
        datasets: Datasets | None = None,
        *,
        inputs: Inputs = "image",
        example_batch: Any = None,
        name: str | None = None,
    ):
        from flax import nnx

        super().__init__(loss_fn, datasets, inputs, example_batch, name)
        self.make_model = make_model
        model = make_model(nnx.Rngs(0))
        self.graphdef, self._params, self._rest = nnx.split(model, nnx.Param, ...)

    def _split(self, key: jax.Array) -> tuple[Any, Any]:
        from flax import nnx

        model = self.make_model(nnx.Rngs(key))
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return nnx.to_pure_dict(params), nnx.to_pure_dict(rest)

    def init_with_state(self, key: jax.Array) -> tuple[Any, Any]:
        params, rest = self._split(key)
        return params, (rest or None)

    def loss_with_state_and_aux(
        self, params: Any, state: Any, key: jax.Array, batch: Any
    ) -> tuple[jax.Array, Any, dict[str, jax.Array]]:
        from flax import nnx

        copy = lambda template: jax.tree_util.tree_map(lambda v: v, template)
        param_state, rest = copy(self._params), copy(self._rest)
        nnx.replace_by_pure_dict(param_state, params)
        if state:
            nnx.replace_by_pure_dict(rest, state)
        model = nnx.merge(self.graphdef, param_state, rest)
        loss, aux = _loss_and_aux(self.loss_fn(model(self.model_inputs(batch)), batch))
        if state:
            state = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param)))
        return loss, state, aux


class FunctionTask(Task):
    """A task from plain functions: ``init_fn(key) -> params`` and
    ``loss_fn(params, key, batch)`` returning a scalar or ``(scalar, extras)``.

    With ``stateful=True`` they are ``init_fn(key) -> (params, state)`` and
    ``loss_fn(params, state, key, batch) -> (loss, state)`` or
    ``(loss, state, extras)``.
    """

    def __init__(
        self,
        init_fn: Callable[..., Any],
        loss_fn: Callable[..., Any],
        datasets: Datasets | None = None,
        *,
        stateful: bool = False,
        name: str | None = None,
    ):
        self.init_fn, self.loss_fn, self.datasets, self.stateful = (
            init_fn,
            loss_fn,
            datasets,
            stateful,
        )
        if name is not None:
            self.name = name

    def init_with_state(self, key: jax.Array) -> tuple[Any, Any]:
        return tuple(self.init_fn(key)) if self.stateful else (self.init_fn(key), None)

    def loss_with_state_and_aux(
        self, params: Any, state: Any, key: jax.Array, batch: Any
    ) -> tuple[jax.Array, Any, dict[str, jax.Array]]:
        if not self.stateful:
            loss, aux = _loss_and_aux(self.loss_fn(params, key, batch))
            return loss, state, aux
        out = self.loss_fn(params, state, key, batch)
        return (out[0], out[1], dict(out[2])) if len(out) == 3 else (out[0], out[1], {})


class _ScaledInitTask(Task):
    """``task`` with its initial parameters multiplied by ``scale``."""

    def __init__(self, task: Task, scale: jax.Array):
        self.task, self.scale, self.datasets = task, scale, task.datasets
        self.name = task.name

    def init_with_state(self, key: jax.Array) -> tuple[Any, Any]:
        params, state = self.task.init_with_state(key)
        return jax.tree_util.tree_map(lambda p: p * self.scale, params), state

    def loss_with_state_and_aux(self, params, state, key, batch):
        return self.task.loss_with_state_and_aux(params, state, key, batch)

    def normalizer(self, loss: jax.Array) -> jax.Array:
        return self.task.normalizer(loss)


class InitScaleFamily(TaskFamily):
    """The family of ``task``'s initializations: each sampled task starts from the
    task's initial parameters times a scale drawn log-uniformly in
    ``[min_init_scale, max_init_scale]`` (1 and 1: the family of its seeds). One
    graph for every scale, so the family trains under ``jax.vmap``.
    """

    def __init__(
        self,
        task: Task,
        min_init_scale: float = 1.0,
        max_init_scale: float = 1.0,
        name: str | None = None,
    ):
        if not 0 < min_init_scale <= max_init_scale:
            raise ValueError(
                "InitScaleFamily needs 0 < min_init_scale <= max_init_scale; got "
                f"{min_init_scale} and {max_init_scale}."
            )
        self.task, self.datasets = task, task.datasets
        self.min_init_scale, self.max_init_scale = min_init_scale, max_init_scale
        self.name = name or f"{task.name}_InitScale"

    def sample(self, key: jax.Array) -> jax.Array:
        low, high = jnp.log(self.min_init_scale), jnp.log(self.max_init_scale)
        return jnp.exp(jax.random.uniform(key, (), minval=low, maxval=high))

    def task_fn(self, cfg: jax.Array) -> Task:
        return _ScaledInitTask(self.task, cfg)
