"""Inner training: one task, or many tasks of a family vmapped, in one jitted scan.

The data for every step is drawn on the host first and stacked, so a whole
run is a single compiled call with no host round-trips. Compiled functions
are cached on (task or family, optimizer, shapes): training the same task
again does not recompile.

Both entry points run the same pure loop, ``lopt_core.train_loop.train_loop``:
``train`` jits it for one task, ``train_family`` vmaps it over the tasks sampled
from a family (``lopt_core.evaluation`` trains one task's seeds through the latter).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from lopt_core.datasets import stack_batches, stack_task_batches
from lopt_core.jit import (  # noqa: F401  (BackendJit, compiler_options: old import path)
    CPU_BACKEND_OPT_LEVEL_ENV,
    BackendJit,
    backend_jit,
    compiler_options,
    static_arg,
    unwrap_static,
)
from lopt_core.learned.base import LearnedOptimizer
from lopt_core.optimizers.base import Optimizer
from lopt_core.sharding import MeshArg, constrain, put, resolve_mesh
from lopt_core.static_graph import (  # noqa: F401  (StaticGraphError, sample_cfgs: old path)
    StaticGraphError,
    explain_tracer_errors,
    sample_cfgs,
)
from lopt_core.tasks import Task, TaskFamily
from lopt_core.train_loop import (
    EVAL_SPLITS,
    TrainResult,
    dummy_eval_batches,
    eval_schedule,
    stack_eval_batches,
    train_loop,
)
from lopt_core.validation import positive_int


def _check_eval_splits(eval_splits: Any) -> tuple[str, ...]:
    if isinstance(eval_splits, str):
        eval_splits = (eval_splits,)
    eval_splits = tuple(eval_splits)
    unknown = [s for s in eval_splits if s not in EVAL_SPLITS]
    if unknown:
        raise ValueError(
            f"eval_splits may hold {', '.join(EVAL_SPLITS)}; got {unknown!r}. (train is "
            "recorded every step anyway, and outer_valid is for meta-training.)"
        )
    return eval_splits


def _check_num_eval_batches(num_eval_batches: int) -> None:
    positive_int(num_eval_batches, "num_eval_batches")


def _check_optimizer(optimizer: Any, theta: Any) -> None:
    if isinstance(optimizer, LearnedOptimizer):
        if theta is None:
            raise ValueError(
                f"{optimizer.name} is a learned optimizer: pass its meta-parameters as theta=..."
            )
        return
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be an lopt_core Optimizer (or a LearnedOptimizer with theta=), got "
            f"{type(optimizer).__name__}: {optimizer!r}. Wrap an optax transformation with "
            "OptaxOptimizer(tx)."
        )
    if theta is not None:
        raise ValueError(f"theta is only for learned optimizers; {optimizer!r} takes none.")


def _resolve_optimizer(optimizer: Any, theta: Any) -> Optimizer:
    """Inside the trace: a learned optimizer becomes the Optimizer its (traced) theta defines."""
    optimizer = unwrap_static(optimizer)
    if isinstance(optimizer, LearnedOptimizer):
        return optimizer.opt_fn(theta, is_training=False)
    return optimizer


_LOOP_STATICS = ("optimizer", "num_steps", "eval_every", "data_free")


@backend_jit(static_argnames=("task", "eval_task", "eval_splits", *_LOOP_STATICS))
def _train_jit(
    task,
    optimizer,
    theta,
    key,
    train_batches,
    eval_batches,
    num_steps,
    eval_every,
    data_free,
    eval_task,
    eval_splits=(),
):
    num_evals = num_steps // eval_every + 1
    eval_batches = dummy_eval_batches(eval_batches, eval_splits, (num_evals,))
    return train_loop(
        unwrap_static(task),
        _resolve_optimizer(optimizer, theta),
        key,
        train_batches,
        eval_batches,
        num_steps,
        eval_every,
        data_free,
        unwrap_static(eval_task),
    )


def train(
    task: Task,
    optimizer: Optimizer,
    key: jax.Array,
    num_steps: int,
    eval_every: int | None = None,
    num_eval_batches: int = 1,
    eval_splits: tuple[str, ...] = EVAL_SPLITS,
    eval_task: Task | None = None,
    theta: Any = None,
) -> TrainResult:
    """Train ``task`` with ``optimizer`` for ``num_steps`` steps in one jitted ``lax.scan``.

    The train split feeds one batch per step. Every ``eval_every`` steps (and at
    step 0) the mean loss over ``num_eval_batches`` fresh batches of each of
    ``eval_splits`` is recorded, computed by ``eval_task`` (default: ``task``);
    with ``eval_every=None`` only at step 0 and the end. Splits left out of
    ``eval_splits`` are never read (their result fields are None).

    ``optimizer`` may be a ``LearnedOptimizer`` with its meta-parameters as
    ``theta``: theta is then an argument of the compiled function, so new
    values of theta (e.g. during meta-training) reuse one compilation.
    """
    if not isinstance(task, Task):
        raise TypeError(f"train expects a Task, got {type(task).__name__}: {task!r}.")
    if eval_task is not None and not isinstance(eval_task, Task):
        raise TypeError(f"eval_task must be a Task or None, got {type(eval_task).__name__}.")
    _check_optimizer(optimizer, theta)
    _check_num_eval_batches(num_eval_batches)
    eval_splits = _check_eval_splits(eval_splits)
    eval_every, num_evals = eval_schedule(num_steps, eval_every)
    datasets = task.datasets
    if datasets is None:
        train_batches = eval_batches = None  # placeholders are made inside the jit
    else:
        train_batches = stack_batches(datasets.train, num_steps)
        eval_batches = stack_eval_batches(datasets, num_evals, num_eval_batches, None, eval_splits)
    with explain_tracer_errors(f"Task {task.name}"):
        return _train_jit(
            static_arg(task),
            static_arg(optimizer),
            theta,
            key,
            train_batches,
            eval_batches,
            num_steps=int(num_steps),
            eval_every=eval_every,
            data_free=datasets is None,
            eval_task=None if eval_task is None else static_arg(eval_task),
            eval_splits=eval_splits if datasets is None else (),
        )


def _train_family_loop(family, optimizer, cfgs, keys, train_batches, eval_batches, **static):
    def one(cfg, key, batches, evals):
        task, eval_task = family.task_fn(cfg), family.eval_task_fn(cfg)
        return train_loop(task, optimizer, key, batches, evals, eval_task=eval_task, **static)

    in_axes = (0, 0, None if train_batches is None else 0, 0)
    return jax.vmap(one, in_axes=in_axes)(cfgs, keys, train_batches, eval_batches)


@backend_jit(static_argnames=("family", "num_tasks", "eval_splits", "mesh", *_LOOP_STATICS))
def _train_family_jit(
    family,
    optimizer,
    theta,
    key,
    train_batches,
    eval_batches,
    num_tasks,
    num_steps,
    eval_every,
    data_free,
    eval_splits=(),
    mesh=None,
):
    # Sampling the cfgs and splitting the keys happen in here too: one dispatch per call.
    family = unwrap_static(family)
    cfg_key, run_key = jax.random.split(key)
    cfgs = sample_cfgs(family, cfg_key, num_tasks)
    keys = jax.random.split(run_key, num_tasks)
    num_evals = num_steps // eval_every + 1
    eval_batches = dummy_eval_batches(eval_batches, eval_splits, (num_tasks, num_evals))
    cfgs, keys, train_batches, eval_batches = constrain(
        (cfgs, keys, train_batches, eval_batches), mesh
    )
    result = _train_family_loop(
        family,
        _resolve_optimizer(optimizer, theta),
        cfgs,
        keys,
        train_batches,
        eval_batches,
        num_steps=num_steps,
        eval_every=eval_every,
        data_free=data_free,
    )
    return constrain(result, mesh)


def train_family(
    family: TaskFamily,
    optimizer: Optimizer,
    key: jax.Array,
    num_tasks: int,
    num_steps: int,
    eval_every: int | None = None,
    num_eval_batches: int = 1,
    eval_splits: tuple[str, ...] = EVAL_SPLITS,
    theta: Any = None,
    mesh: MeshArg = "auto",
    batches: Any = None,
) -> TrainResult:
    """Train ``num_tasks`` tasks sampled from ``family`` at once, ``jax.vmap`` over one scan.

    Each task gets its own cfg, PRNG key and batches (drawn from the family's
    shared datasets, or ``batches`` from ``draw_family_batches`` with the same
    arguments, to train several optimizers on the very same data); evaluation
    losses come from ``family.eval_task_fn(cfg)``.
    Returns a ``TrainResult`` whose fields lead with the task axis. A
    ``LearnedOptimizer`` takes its meta-parameters as ``theta``, as in ``train``.

    With several local devices the task axis is sharded over them (``mesh="auto"``,
    when they divide ``num_tasks``; see ``lopt_core.sharding``); ``mesh=None``
    keeps everything on one device, and a ``jax.sharding.Mesh`` is used as given.
    The results equal the unsharded ones.
    """
    _check_optimizer(optimizer, theta)
    _check_num_eval_batches(num_eval_batches)
    eval_splits = _check_eval_splits(eval_splits)
    positive_int(num_tasks, "num_tasks")
    if not isinstance(family, TaskFamily):
        raise TypeError(f"expected a TaskFamily, got {type(family).__name__}: {family!r}.")
    eval_every, num_evals = eval_schedule(num_steps, eval_every)
    mesh = resolve_mesh(mesh, int(num_tasks))
    datasets = family.datasets
    if datasets is None:
        train_batches = eval_batches = None  # placeholders are made inside the jit
    else:
        if batches is None:
            batches = draw_family_batches(
                family, num_tasks, num_steps, eval_every, num_eval_batches, eval_splits
            )
        else:
            _check_batches(batches, num_tasks, num_steps, num_evals)
        train_batches, eval_batches = batches
        # Each device receives only its tasks' data.
        train_batches, eval_batches = put((train_batches, eval_batches), mesh)
    with explain_tracer_errors(f"TaskFamily {family.name}.task_fn"):
        return _train_family_jit(
            static_arg(family),
            static_arg(optimizer),
            theta,
            key,
            train_batches,
            eval_batches,
            num_tasks=int(num_tasks),
            num_steps=int(num_steps),
            eval_every=eval_every,
            data_free=datasets is None,
            eval_splits=eval_splits if datasets is None else (),
            mesh=mesh,
        )


def draw_family_batches(
    family: TaskFamily,
    num_tasks: int,
    num_steps: int,
    eval_every: int | None = None,
    num_eval_batches: int = 1,
    eval_splits: tuple[str, ...] = EVAL_SPLITS,
) -> tuple[Any, Any] | None:
    """The host batches ``train_family`` draws for the same arguments: ``(train, eval)``.

    None for a data-free family. Drawing them once and passing them as
    ``train_family(..., batches=)`` to every call trains each on the same data.
    """
    if family.datasets is None:
        return None
    _, num_evals = eval_schedule(num_steps, eval_every)
    train = stack_task_batches(family.datasets.train, num_tasks, num_steps)
    evals = stack_eval_batches(
        family.datasets, num_evals, num_eval_batches, num_tasks, _check_eval_splits(eval_splits)
    )
    return train, evals


def _check_batches(batches: Any, num_tasks: int, num_steps: int, num_evals: int) -> None:
    pair = batches if isinstance(batches, tuple) and len(batches) == 2 else (None, None)
    train, evals = (jax.tree_util.tree_leaves(x) for x in pair)
    if (
        not train
        or any(np.shape(x)[:2] != (num_tasks, num_steps) for x in train)
        or any(np.shape(x)[:2] != (num_tasks, num_evals) for x in evals)
    ):
        raise ValueError(
            f"batches must be draw_family_batches(...) with the same arguments: {num_tasks} "
            f"tasks, {num_steps} steps, {num_evals} evaluations (train leaves [{num_tasks}, "
            f"{num_steps}, ...], eval leaves [{num_tasks}, {num_evals}, ...]); got "
            f"{jax.tree_util.tree_map(np.shape, batches)!r:.200}."
        )


def compiled_programs() -> dict[str, int]:
    """How many programs ``train`` and ``train_family`` have compiled so far.

    A test or benchmark reads it before and after a call to check that the call
    compiled nothing new (no retracing).
    """
    return {"train": _train_jit._cache_size(), "train_family": _train_family_jit._cache_size()}
