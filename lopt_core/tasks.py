"""The ``Task`` and ``TaskFamily`` protocols.

A ``Task`` is one training problem: parameters, a loss and (optionally) data.
A ``TaskFamily`` is a distribution over tasks whose samples are pytrees of
arrays; all tasks of one family share one static computation graph, which is
what lets ``jax.vmap`` train many of them at once.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lopt_core.datasets import Datasets

Params = Any
ModelState = Any
Batch = Any
TaskCfg = Any


class Named:
    """A ``name`` that can be assigned, as tasks and families have."""

    @property
    def name(self) -> str:
        """A readable name: the one assigned (``self.name = ...``), else the class name."""
        return self.__dict__.get("_name") or type(self).__name__

    @name.setter
    def name(self, value: str) -> None:
        self._name = value


class Task(Named):
    """One training problem.

    Subclasses implement ``init`` and ``loss`` (or the stateful forms, for models
    with state such as batch-norm statistics). Everything else has a default.
    """

    datasets: Datasets | None = None

    def _overrides(self, method: str) -> bool:
        return getattr(type(self), method) is not getattr(Task, method)

    # Each default below delegates only to a method the subclass overrides, so
    # a subclass implements whichever form suits it and the others follow.

    def init(self, key: jax.Array) -> Params:
        """Initial parameters."""
        if self._overrides("init_with_state"):
            return self.init_with_state(key)[0]
        raise NotImplementedError(f"{type(self).__name__} must implement init(key) -> params.")

    def init_with_state(self, key: jax.Array) -> tuple[Params, ModelState]:
        """Initial parameters and model state; state is None for stateless tasks."""
        return self.init(key), None

    def loss(self, params: Params, key: jax.Array, batch: Batch) -> jax.Array:
        """Scalar loss of ``params`` on ``batch`` (``batch`` is None for data-free tasks)."""
        if self._overrides("loss_and_aux"):
            return self.loss_and_aux(params, key, batch)[0]
        raise NotImplementedError(
            f"{type(self).__name__} must implement loss(params, key, batch) -> scalar "
            "(or loss_and_aux, or the stateful loss_with_state[_and_aux])."
        )

    def loss_and_aux(
        self, params: Params, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Loss plus a dict of scalar extras (e.g. accuracy); no extras by default."""
        return self.loss(params, key, batch), {}

    def loss_with_state(
        self, params: Params, state: ModelState, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, ModelState]:
        """Loss and the updated model state."""
        if self._overrides("loss_with_state_and_aux"):
            loss, state, _ = self.loss_with_state_and_aux(params, state, key, batch)
            return loss, state
        return self.loss(params, key, batch), state

    def loss_with_state_and_aux(
        self, params: Params, state: ModelState, key: jax.Array, batch: Batch
    ) -> tuple[jax.Array, ModelState, dict[str, jax.Array]]:
        """Loss, updated model state and extras: the form the training loops call."""
        if self._overrides("loss_with_state"):
            loss, state = self.loss_with_state(params, state, key, batch)
            return loss, state, {}
        loss, aux = self.loss_and_aux(params, key, batch)
        return loss, state, aux

    def normalizer(self, loss: jax.Array) -> jax.Array:
        """Maps a loss onto a scale comparable across tasks, for meta-losses; identity here."""
        return loss

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


class TaskFamily(Named):
    """A distribution over tasks that share one computation graph.

    ``sample(key)`` returns a cfg, a pytree of arrays; ``task_fn(cfg)`` builds the
    task it describes. Because cfgs are arrays, ``task_fn`` is traced under
    ``jax.vmap`` and must not turn them into Python values (no ``int(cfg)`` or
    ``if cfg > 0``): pick between variants with ``lax.cond``/``lax.switch``.
    """

    datasets: Datasets | None = None

    def sample(self, key: jax.Array) -> TaskCfg:
        """Draw the cfg of one task."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample(key) -> cfg.")

    def task_fn(self, cfg: TaskCfg) -> Task:
        """The task that ``cfg`` describes."""
        raise NotImplementedError(f"{type(self).__name__} must implement task_fn(cfg) -> Task.")

    def eval_task_fn(self, cfg: TaskCfg) -> Task:
        """The task used to evaluate ``cfg``; the training task unless overridden."""
        return self.task_fn(cfg)

    def sample_tasks(self, key: jax.Array, n: int) -> TaskCfg:
        """``n`` cfgs sampled with ``jax.vmap``; every leaf gets a leading axis of size ``n``."""
        if n < 1:
            raise ValueError(f"n must be at least 1 to sample tasks, got {n}.")
        return jax.vmap(self.sample)(jax.random.split(key, n))

    def __repr__(self) -> str:
        return f"<TaskFamily {self.name}>"


class _SingleTaskFamily(TaskFamily):
    """A family with one member; see ``single_task_to_family``."""

    def __init__(self, task: Task, eval_task: Task | None = None, name: str | None = None):
        self.task = task
        self.eval_task = eval_task
        self.datasets = task.datasets
        self.name = name or task.name

    def sample(self, key: jax.Array) -> TaskCfg:
        # A placeholder array keeps cfgs vmappable like any other family's.
        return jnp.zeros((), jnp.int32)

    def task_fn(self, cfg: TaskCfg) -> Task:
        return self.task

    def eval_task_fn(self, cfg: TaskCfg) -> Task:
        return self.task if self.eval_task is None else self.eval_task

    # Equal tasks make equal families: task distributions compile once per distinct family.
    def _key(self) -> tuple:
        return (self.task, self.eval_task, self.name)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())


def single_task_to_family(
    task: Task, eval_task: Task | None = None, name: str | None = None
) -> TaskFamily:
    """Wrap one task as a family: ``task_fn`` returns ``task`` itself for every cfg.

    ``eval_task_fn`` returns ``eval_task`` when given (e.g. the same model on
    another split), otherwise ``task``.
    """
    if not isinstance(task, Task):
        raise TypeError(
            f"single_task_to_family expects a Task, got {type(task).__name__}: {task!r}"
        )
    if eval_task is not None and not isinstance(eval_task, Task):
        raise TypeError(f"eval_task must be a Task or None, got {type(eval_task).__name__}.")
    return _SingleTaskFamily(task, eval_task, name)


_SEED_FAMILIES: dict[int, TaskFamily] = {}


def as_family(value: Task | TaskFamily, what: str = "the task") -> TaskFamily:
    """A family as is; a task as the family of its seeds (one family object per task, so
    repeated uses share compiled programs). ``what`` names the argument in errors."""
    if isinstance(value, TaskFamily):
        return value
    if isinstance(value, Task):
        family = _SEED_FAMILIES.get(id(value))
        if family is None or family.task is not value:
            family = _SEED_FAMILIES[id(value)] = single_task_to_family(value)
        return family
    if isinstance(value, type) and issubclass(value, (Task, TaskFamily)):
        raise TypeError(
            f"{what} must be a TaskFamily or Task object, got the class {value.__name__} "
            f"itself: call it (in a gin file, @{value.__name__}() with the parentheses)."
        )
    raise TypeError(f"{what} must be a TaskFamily or Task, got {type(value).__name__}: {value!r}.")
