"""Inner training: one task, or many tasks of a family vmapped, in one jitted scan.

The data for every step is drawn on the host first and stacked, so a whole
run is a single compiled call with no host round-trips. Compiled functions
are cached on (task or family, optimizer, shapes): training the same task
again does not recompile.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lopt_core.datasets import Datasets, stack_batches, stack_task_batches
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

EVAL_SPLITS: tuple[str, ...] = ("inner_valid", "test")


@struct.dataclass
class TrainResult:
    """What a training run leaves. Under ``train_family`` every field has a leading task axis.

    ``train_loss[i]`` is the loss of the batch at step ``i`` before its update;
    ``inner_valid_loss[j]`` and ``test_loss[j]`` are mean losses over the
    evaluation batches after ``eval_steps[j]`` steps (0 is the initialization).
    ``inner_valid_aux``/``test_aux`` hold the task's extras (e.g. accuracy) likewise.
    """

    params: Any
    model_state: Any
    opt_state: Any
    train_loss: jax.Array
    eval_steps: jax.Array
    inner_valid_loss: jax.Array
    test_loss: jax.Array
    inner_valid_aux: dict = struct.field(default_factory=dict)
    test_aux: dict = struct.field(default_factory=dict)


def _eval_schedule(num_steps: int, eval_every: int | None) -> tuple[int, int]:
    """(eval_every, number of evaluations including the one at step 0), validated."""
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    if eval_every is None:
        eval_every = int(num_steps)
    if not isinstance(eval_every, (int, np.integer)) or eval_every < 1:
        raise ValueError(f"eval_every must be a positive integer or None, got {eval_every!r}.")
    if num_steps % eval_every:
        raise ValueError(
            f"num_steps ({num_steps}) must be a multiple of eval_every ({eval_every}) so that "
            "evaluation falls on fixed steps; pick e.g. "
            f"eval_every={_largest_divisor_at_most(num_steps, eval_every)}."
        )
    return int(eval_every), int(num_steps) // int(eval_every) + 1


def _largest_divisor_at_most(n: int, k: int) -> int:
    return max(d for d in range(1, k + 1) if n % d == 0)


def _chunk(tree: Any, num_chunks: int) -> Any:
    """Reshape leading axis ``n`` into ``[num_chunks, n // num_chunks]``."""
    return jax.tree_util.tree_map(
        lambda x: x.reshape((num_chunks, x.shape[0] // num_chunks) + x.shape[1:]), tree
    )


def _mean_loss_and_aux(task: Task, params, model_state, key, batches, data_free: bool):
    """Mean loss and extras over stacked evaluation batches (model state left unchanged)."""

    def one(batch):
        loss, _, aux = task.loss_with_state_and_aux(params, model_state, key, batch)
        return loss, aux

    if data_free:
        return one(None)
    losses, aux = jax.vmap(one)(batches)
    return jnp.mean(losses), jax.tree_util.tree_map(jnp.mean, aux)


def _train_loop(
    task: Task,
    optimizer: Optimizer,
    key: jax.Array,
    train_batches: Any,
    eval_batches: dict[str, Any],
    num_steps: int,
    eval_every: int,
    data_free: bool,
    eval_task: Task | None = None,
) -> TrainResult:
    """The pure training loop: scan over chunks of ``eval_every`` steps, evaluating after each.

    ``eval_batches`` maps each split to evaluate to its batches; ``eval_task``
    (default: ``task``) computes the evaluation losses.
    """
    eval_task = task if eval_task is None else eval_task
    num_chunks = num_steps // eval_every
    init_key, opt_key, loop_key, eval_key = jax.random.split(key, 4)
    params, model_state = task.init_with_state(init_key)
    opt_state = optimizer.init(params, model_state, num_steps=num_steps, key=opt_key)

    def evaluate(opt_state, batches):
        params, model_state = optimizer.get_params(opt_state), optimizer.get_state(opt_state)
        return {
            split: _mean_loss_and_aux(
                eval_task, params, model_state, eval_key, split_batches, data_free
            )
            for split, split_batches in batches.items()
        }

    def step(opt_state, xs):
        step_key, batch = xs
        loss_key, update_key = jax.random.split(step_key)
        model_state = optimizer.get_state(opt_state)

        def loss_fn(params):
            loss, new_state, _ = task.loss_with_state_and_aux(params, model_state, loss_key, batch)
            return loss, new_state

        (loss, new_state), grad = jax.value_and_grad(loss_fn, has_aux=True)(
            optimizer.get_params(opt_state)
        )
        opt_state = optimizer.update(
            opt_state, grad, loss=loss, model_state=new_state, key=update_key
        )
        return opt_state, loss

    def chunk(opt_state, xs):
        step_keys, batches, eval_batch = xs
        opt_state, losses = jax.lax.scan(step, opt_state, (step_keys, batches))
        return opt_state, (losses, evaluate(opt_state, eval_batch))

    first_eval = evaluate(opt_state, jax.tree_util.tree_map(lambda x: x[0], eval_batches))
    later_eval_batches = jax.tree_util.tree_map(lambda x: x[1:], eval_batches)
    step_keys = _chunk(jax.random.split(loop_key, num_steps), num_chunks)
    opt_state, (losses, evals) = jax.lax.scan(
        chunk, opt_state, (step_keys, _chunk(train_batches, num_chunks), later_eval_batches)
    )
    evals = jax.tree_util.tree_map(
        lambda first, rest: jnp.concatenate([first[None], rest]), first_eval, evals
    )
    return TrainResult(
        params=optimizer.get_params(opt_state),
        model_state=optimizer.get_state(opt_state),
        opt_state=opt_state,
        train_loss=losses.reshape(num_steps),
        eval_steps=jnp.arange(num_chunks + 1, dtype=jnp.int32) * eval_every,
        inner_valid_loss=evals.get("inner_valid", (None, {}))[0],
        test_loss=evals.get("test", (None, {}))[0],
        inner_valid_aux=evals.get("inner_valid", (None, {}))[1],
        test_aux=evals.get("test", (None, {}))[1],
    )


def _stack_eval_batches(
    datasets: Datasets, num_evals: int, num_batches: int, tasks: int | None, splits: tuple
):
    out = {}
    for split in splits:
        iterator = datasets.split(split)
        if tasks is None:
            stacked = stack_batches(iterator, num_evals * num_batches)
            out[split] = _chunk(stacked, num_evals)
        else:
            stacked = stack_task_batches(iterator, tasks, num_evals * num_batches)
            out[split] = jax.vmap(lambda t: _chunk(t, num_evals))(stacked)
    return out


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
    if not isinstance(num_eval_batches, (int, np.integer)) or num_eval_batches < 1:
        raise ValueError(f"num_eval_batches must be a positive integer, got {num_eval_batches!r}.")


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


def _dummy_eval_batches(eval_batches: Any, splits: tuple, shape: tuple) -> Any:
    """Data-free tasks: the placeholder evaluation inputs, made inside the trace.

    (Built here rather than passed in, so that a call transfers nothing from the host.)
    """
    if eval_batches is not None:
        return eval_batches
    return {split: jnp.zeros(shape, jnp.float32) for split in splits}


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
    eval_batches = _dummy_eval_batches(eval_batches, eval_splits, (num_evals,))
    return _train_loop(
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
    eval_every, num_evals = _eval_schedule(num_steps, eval_every)
    datasets = task.datasets
    if datasets is None:
        train_batches = eval_batches = None  # placeholders are made inside the jit
    else:
        train_batches = stack_batches(datasets.train, num_steps)
        eval_batches = _stack_eval_batches(datasets, num_evals, num_eval_batches, None, eval_splits)
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
        return _train_loop(task, optimizer, key, batches, evals, eval_task=eval_task, **static)

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
    eval_batches = _dummy_eval_batches(eval_batches, eval_splits, (num_tasks, num_evals))
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
) -> TrainResult:
    """Train ``num_tasks`` tasks sampled from ``family`` at once, ``jax.vmap`` over one scan.

    Each task gets its own cfg, PRNG key and batches (drawn from the family's
    shared datasets); evaluation losses come from ``family.eval_task_fn(cfg)``.
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
    if not isinstance(num_tasks, (int, np.integer)) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}.")
    if not isinstance(family, TaskFamily):
        raise TypeError(f"expected a TaskFamily, got {type(family).__name__}: {family!r}.")
    eval_every, num_evals = _eval_schedule(num_steps, eval_every)
    mesh = resolve_mesh(mesh, int(num_tasks))
    datasets = family.datasets
    if datasets is None:
        train_batches = eval_batches = None  # placeholders are made inside the jit
    else:
        train_batches = stack_task_batches(datasets.train, num_tasks, num_steps)
        eval_batches = _stack_eval_batches(
            datasets, num_evals, num_eval_batches, num_tasks, eval_splits
        )
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
