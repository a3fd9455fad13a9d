"""Inner training: one task, or many tasks of a family vmapped, in one jitted scan.

The data for every step is drawn on the host first and stacked, so a whole
run is a single compiled call with no host round-trips. Compiled functions
are cached on (task or family, optimizer, shapes): training the same task
again does not recompile.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lopt_core.datasets import Datasets, stack_batches, stack_task_batches
from lopt_core.learned.base import LearnedOptimizer
from lopt_core.optimizers.base import Optimizer
from lopt_core.sharding import MeshArg, constrain, put, resolve_mesh
from lopt_core.tasks import Task, TaskFamily

EVAL_SPLITS: tuple[str, ...] = ("inner_valid", "test")


class StaticGraphError(TypeError):
    """A task or family cannot be traced into one static computation graph."""


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


# Tracing errors that mean a task or family turned traced values into Python ones.
_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
)


# XLA's CPU backend spends most of a compile in LLVM, at optimization level 3 by
# default. lopt's engines are many tiny kernels (and matrix products that XLA hands to
# a library), so level 2 compiles a meta-training step about twice as fast (4.1 s ->
# 1.8 s for pes_quadratic; level 1 is no faster than 2) while run time and results
# (bitwise) do not change; benchmarks/README.md has the figures.
CPU_BACKEND_OPT_LEVEL_ENV = "LOPT_CPU_BACKEND_OPT_LEVEL"
_DEFAULT_CPU_BACKEND_OPT_LEVEL = 2


def compiler_options(backend: str | None = None) -> dict[str, Any] | None:
    """XLA compile options for lopt's jitted engines on ``backend`` (default: jax's default).

    On CPU: ``xla_backend_optimization_level`` 2 (XLA's default is 3), unless
    ``LOPT_CPU_BACKEND_OPT_LEVEL=<n>`` asks for another level (0-3) or ``=default``
    for XLA's own; a level given in ``XLA_FLAGS`` wins. Other backends: None.
    """
    backend = jax.default_backend() if backend is None else backend
    env = os.environ.get(CPU_BACKEND_OPT_LEVEL_ENV, "").strip()
    if backend != "cpu" or env == "default":
        return None
    if "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        return None
    if not env:
        return {"xla_backend_optimization_level": _DEFAULT_CPU_BACKEND_OPT_LEVEL}
    try:
        level = int(env)
    except ValueError:
        raise ValueError(
            f"{CPU_BACKEND_OPT_LEVEL_ENV} must be an integer level (0-3) or 'default', got {env!r}."
        ) from None
    return {"xla_backend_optimization_level": level}


def _tracing() -> bool:
    """Whether jax is tracing (inside jit, vmap, grad...), so a jitted call would be nested."""
    from jax._src import core  # no public equivalent; guarded so jax upgrades degrade safely

    try:
        return not core.trace_state_clean()
    except AttributeError:  # pragma: no cover - a jax without it: assume the safe answer
        return True


class BackendJit:
    """``jax.jit(fun, **kwargs)`` with ``compiler_options()``, created at its first use.

    The backend (and so the options) is only known once jax has initialized, which
    importing lopt must not force. jax accepts compile options only on a top-level
    jit, so a call made while tracing (the function used inside someone else's jit
    or vmap, where it is inlined anyway) goes through a plain ``jax.jit``.
    Attributes (``lower``, ``_cache_size``...) are the top-level jitted function's.
    """

    def __init__(self, fun: Any, **jit_kwargs: Any):
        self._fun = fun
        self._jit_kwargs = jit_kwargs
        self._jitted = None
        self._nested = None
        functools.update_wrapper(self, fun)

    @property
    def jitted(self) -> Any:
        """The underlying top-level ``jax.jit`` object."""
        if self._jitted is None:
            self._jitted = jax.jit(
                self._fun, compiler_options=compiler_options(), **self._jit_kwargs
            )
        return self._jitted

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _tracing():
            if self._nested is None:
                self._nested = jax.jit(self._fun, **self._jit_kwargs)
            return self._nested(*args, **kwargs)
        return self.jitted(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_fun", "_jit_kwargs", "_jitted", "_nested"):
            raise AttributeError(name)
        return getattr(self.jitted, name)


def backend_jit(fun: Any = None, **jit_kwargs: Any) -> Any:
    """Decorator form of ``BackendJit``: ``@backend_jit(static_argnames=...)``."""
    if fun is None:
        return functools.partial(backend_jit, **jit_kwargs)
    return BackendJit(fun, **jit_kwargs)


class _ByIdentity:
    """A static jit argument for an unhashable object, compared by identity."""

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.obj is self.obj


def _static(obj: Any) -> Any:
    try:
        hash(obj)
    except TypeError:
        return _ByIdentity(obj)
    return obj


def _unwrap(obj: Any) -> Any:
    return obj.obj if isinstance(obj, _ByIdentity) else obj


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


def _is_tracer_error(e: Exception) -> bool:
    if isinstance(e, StaticGraphError):
        return False
    if isinstance(e, _TRACER_ERRORS):
        return True
    # A shape or slice built from a traced value fails with a plain TypeError
    # ("Shapes must be 1D sequences of concrete values") or IndexError ("Slice
    # entries must be static integers") rather than a jax.errors class.
    msg = str(e)
    return isinstance(e, (TypeError, IndexError)) and (
        "concrete value" in msg or "must be static" in msg
    )


@contextlib.contextmanager
def _explain_tracer_errors(what: str):
    try:
        yield
    except (TypeError, IndexError) as e:
        if not _is_tracer_error(e):
            raise
        raise StaticGraphError(
            f"{what} could not be traced into one static computation graph: it turned a traced "
            "array into a Python value (int(), float(), bool(), `if`, a shape or slice size, or "
            "numpy on a jax array). "
            "Every task of a family must keep one computation graph, because the family is "
            "trained under jax.vmap and jit: choose between variants with lax.cond/lax.switch "
            "and keep shapes fixed, or split the variants into separate families. "
            f"Original error: {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from e


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
    optimizer = _unwrap(optimizer)
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
    task, optimizer, theta, key, train_batches, eval_batches, num_steps, eval_every, data_free,
    eval_task, eval_splits=(),
):  # fmt: skip
    num_evals = num_steps // eval_every + 1
    eval_batches = _dummy_eval_batches(eval_batches, eval_splits, (num_evals,))
    return _train_loop(
        _unwrap(task), _resolve_optimizer(optimizer, theta), key, train_batches, eval_batches,
        num_steps, eval_every, data_free, _unwrap(eval_task),
    )  # fmt: skip


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
    with _explain_tracer_errors(f"Task {task.name}"):
        return _train_jit(
            _static(task), _static(optimizer), theta, key, train_batches, eval_batches,
            num_steps=int(num_steps), eval_every=eval_every, data_free=datasets is None,
            eval_task=None if eval_task is None else _static(eval_task),
            eval_splits=eval_splits if datasets is None else (),
        )  # fmt: skip


def _train_family_loop(family, optimizer, cfgs, keys, train_batches, eval_batches, **static):
    def one(cfg, key, batches, evals):
        task, eval_task = family.task_fn(cfg), family.eval_task_fn(cfg)
        return _train_loop(task, optimizer, key, batches, evals, eval_task=eval_task, **static)

    in_axes = (0, 0, None if train_batches is None else 0, 0)
    return jax.vmap(one, in_axes=in_axes)(cfgs, keys, train_batches, eval_batches)


@backend_jit(static_argnames=("family", "num_tasks", "eval_splits", "mesh", *_LOOP_STATICS))
def _train_family_jit(
    family, optimizer, theta, key, train_batches, eval_batches, num_tasks, num_steps, eval_every,
    data_free, eval_splits=(), mesh=None,
):  # fmt: skip
    # Sampling the cfgs and splitting the keys happen in here too: one dispatch per call.
    family = _unwrap(family)
    cfg_key, run_key = jax.random.split(key)
    cfgs = sample_cfgs(family, cfg_key, num_tasks)
    keys = jax.random.split(run_key, num_tasks)
    num_evals = num_steps // eval_every + 1
    eval_batches = _dummy_eval_batches(eval_batches, eval_splits, (num_tasks, num_evals))
    cfgs, keys, train_batches, eval_batches = constrain(
        (cfgs, keys, train_batches, eval_batches), mesh
    )
    result = _train_family_loop(
        family, _resolve_optimizer(optimizer, theta), cfgs, keys, train_batches, eval_batches,
        num_steps=num_steps, eval_every=eval_every, data_free=data_free,
    )  # fmt: skip
    return constrain(result, mesh)


def sample_cfgs(family: TaskFamily, key: jax.Array, num_tasks: int) -> Any:
    """``family.sample_tasks`` with the checks that make a bad family fail clearly."""
    if not isinstance(family, TaskFamily):
        raise TypeError(f"expected a TaskFamily, got {type(family).__name__}: {family!r}.")
    with _explain_tracer_errors(f"TaskFamily {family.name}.sample"):
        try:
            cfgs = family.sample_tasks(key, num_tasks)
        except TypeError as e:
            if "vmap" not in str(e) and "JAX type" not in str(e):
                raise
            raise StaticGraphError(
                f"TaskFamily {family.name}.sample must return a pytree of jax arrays (the cfg), "
                f"so that configs can be vmapped; it failed under jax.vmap with: {e}"
            ) from e
    return cfgs


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
    with _explain_tracer_errors(f"TaskFamily {family.name}.task_fn"):
        return _train_family_jit(
            _static(family), _static(optimizer), theta, key, train_batches, eval_batches,
            num_tasks=int(num_tasks), num_steps=int(num_steps), eval_every=eval_every,
            data_free=datasets is None, eval_splits=eval_splits if datasets is None else (),
            mesh=mesh,
        )  # fmt: skip
