"""The inner training loop itself: pure, one ``lax.scan`` over chunks of steps.

``train_loop`` trains one task from its initialization, evaluating every
``eval_every`` steps; ``lopt_core.training`` jits it for one task (``train``) and
vmaps it over a family's tasks (``train_family``). The helpers here lay out
the host-drawn batches for it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lopt_core.datasets import Datasets, stack_batches, stack_task_batches
from lopt_core.optimizers.base import Optimizer
from lopt_core.tasks import Task
from lopt_core.validation import positive_int

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


def eval_schedule(num_steps: int, eval_every: int | None) -> tuple[int, int]:
    """(eval_every, number of evaluations including the one at step 0), validated."""
    num_steps = positive_int(num_steps, "num_steps")
    if eval_every is None:
        eval_every = int(num_steps)
    if not isinstance(eval_every, (int, np.integer)) or eval_every < 1:
        raise ValueError(f"eval_every must be a positive integer or None, got {eval_every!r}.")
    if num_steps % eval_every:
        raise ValueError(
            f"num_steps ({num_steps}) must be a multiple of eval_every ({eval_every}) so that "
            "evaluation falls on fixed steps; pick e.g. "
            f"eval_every={largest_divisor_at_most(num_steps, eval_every)}."
        )
    return int(eval_every), int(num_steps) // int(eval_every) + 1


def largest_divisor_at_most(n: int, k: int) -> int:
    """The largest divisor of ``n`` that is at most ``k``."""
    return max(d for d in range(1, k + 1) if n % d == 0)


def chunk(tree: Any, num_chunks: int) -> Any:
    """Reshape leading axis ``n`` into ``[num_chunks, n // num_chunks]``."""
    return jax.tree_util.tree_map(
        lambda x: x.reshape((num_chunks, x.shape[0] // num_chunks) + x.shape[1:]), tree
    )


def mean_loss_and_aux(task: Task, params, model_state, key, batches, data_free: bool):
    """Mean loss and extras over stacked evaluation batches (model state left unchanged)."""

    def one(batch):
        loss, _, aux = task.loss_with_state_and_aux(params, model_state, key, batch)
        return loss, aux

    if data_free:
        return one(None)
    losses, aux = jax.vmap(one)(batches)
    return jnp.mean(losses), jax.tree_util.tree_map(jnp.mean, aux)


def train_loop(
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
            split: mean_loss_and_aux(
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

    def train_chunk(opt_state, xs):
        step_keys, batches, eval_batch = xs
        opt_state, losses = jax.lax.scan(step, opt_state, (step_keys, batches))
        return opt_state, (losses, evaluate(opt_state, eval_batch))

    first_eval = evaluate(opt_state, jax.tree_util.tree_map(lambda x: x[0], eval_batches))
    later_eval_batches = jax.tree_util.tree_map(lambda x: x[1:], eval_batches)
    step_keys = chunk(jax.random.split(loop_key, num_steps), num_chunks)
    opt_state, (losses, evals) = jax.lax.scan(
        train_chunk, opt_state, (step_keys, chunk(train_batches, num_chunks), later_eval_batches)
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


def stack_eval_batches(
    datasets: Datasets, num_evals: int, num_batches: int, tasks: int | None, splits: tuple
) -> dict[str, Any]:
    """Per split, ``num_evals`` groups of ``num_batches`` batches (per task, if ``tasks``)."""
    out = {}
    for split in splits:
        iterator = datasets.split(split)
        if tasks is None:
            stacked = stack_batches(iterator, num_evals * num_batches)
            out[split] = chunk(stacked, num_evals)
        else:
            stacked = stack_task_batches(iterator, tasks, num_evals * num_batches)
            out[split] = jax.vmap(lambda t: chunk(t, num_evals))(stacked)
    return out


def dummy_eval_batches(eval_batches: Any, splits: tuple, shape: tuple) -> Any:
    """Data-free tasks: the placeholder evaluation inputs, made inside the trace.

    (Built here rather than passed in, so that a call transfers nothing from the host.)
    """
    if eval_batches is not None:
        return eval_batches
    return {split: jnp.zeros(shape, jnp.float32) for split in splits}
