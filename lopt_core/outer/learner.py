"""The learner: applies meta-gradients from one or more estimators to ``theta``.

Estimating (``GradientEstimator.estimate``, on workers) and applying
(``GradientLearner.apply_gradients``, on the learner) are separate steps, so the
estimates can come from other processes or machines. ``update`` runs both in
one process as a single jitted function.

The executor seam (below ``GradientLearner``): an ``Executor`` runs outer steps,
``LocalExecutor`` with ``update`` in this process, ``PoolExecutor`` with
``GradientWorker``s in a ``WorkerPool`` (in this process, or Ray actors from
``lopt_core.distributed``) in synchronous or asynchronous mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from lopt_core.datasets import count_draws
from lopt_core.jit import BackendJit
from lopt_core.learned.base import LearnedOptimizer
from lopt_core.outer.gradient_estimators import GradientEstimate, GradientEstimator

tree_map = jax.tree_util.tree_map


@struct.dataclass
class LearnerState:
    """Everything a meta-training run needs to continue: theta, outer state, worker states."""

    theta: Any
    outer_opt_state: Any
    worker_states: tuple
    step: jax.Array  # int32: outer updates attempted so far
    num_nonfinite: jax.Array  # int32: updates skipped for a non-finite meta-gradient


class GradientLearner:
    """Meta-trains ``learned_opt`` with ``outer_optimizer`` on the mean of the estimators' grads.

    ``max_grad_norm`` clips the averaged meta-gradient by global norm (None: no
    clipping). A non-finite meta-gradient or meta-loss leaves ``theta`` and the
    outer state untouched and is counted in ``metrics["nonfinite_skipped"]``.
    """

    def __init__(
        self,
        learned_opt: LearnedOptimizer,
        estimators: Sequence[GradientEstimator],
        outer_optimizer: optax.GradientTransformation | None = None,
        max_grad_norm: float | None = 3.0,
    ):
        if isinstance(estimators, GradientEstimator):
            estimators = [estimators]
        estimators = tuple(estimators)
        if not estimators:
            raise ValueError("GradientLearner needs at least one gradient estimator, got none.")
        for e in estimators:
            if not isinstance(e, GradientEstimator):
                raise TypeError(f"estimators must be GradientEstimators, got {type(e).__name__}.")
            if e.truncated_step.learned_opt is not learned_opt:
                raise ValueError(
                    f"{e.name} was built for {e.truncated_step.learned_opt!r}, not for the "
                    f"learner's {learned_opt!r}; build its truncated step with the same object."
                )
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm!r}.")
        self.learned_opt = learned_opt
        self.estimators = estimators
        self.outer_optimizer = outer_optimizer or optax.adam(1e-3)
        self.max_grad_norm = max_grad_norm
        # BackendJit: jax.jit with lopt's compile options (CPU: XLA level 2, compiles ~2x faster).
        self._update_jit = BackendJit(self._update)

    def init(self, key: jax.Array) -> LearnerState:
        """Theta from the learned optimizer's ``init``, and fresh worker states."""
        theta_key, *worker_keys = jax.random.split(key, len(self.estimators) + 1)
        theta = self.learned_opt.init(theta_key)
        return LearnerState(
            theta=theta,
            outer_opt_state=self.outer_optimizer.init(theta),
            worker_states=self.init_worker_states(theta, worker_keys),
            step=jnp.zeros((), jnp.int32),
            num_nonfinite=jnp.zeros((), jnp.int32),
        )

    def init_worker_states(self, theta: Any, keys: Sequence[jax.Array]) -> tuple:
        """One worker state per estimator, for ``theta``."""
        return tuple(
            est.init_worker_state(theta, k) for est, k in zip(self.estimators, keys, strict=True)
        )

    def apply_gradients(
        self, state: LearnerState, estimates: Sequence[GradientEstimate]
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        """Average ``estimates``, clip, take one outer step (pure: jit it or call it in jit)."""
        grad = tree_map(lambda *g: jnp.mean(jnp.stack(g), axis=0), *[e.grad for e in estimates])
        meta_loss = jnp.mean(jnp.stack([e.mean_loss for e in estimates]))
        grad_norm = optax.tree.norm(grad)
        finite = jnp.isfinite(grad_norm) & jnp.isfinite(meta_loss)
        if self.max_grad_norm is not None:
            scale = jnp.minimum(1.0, self.max_grad_norm / (grad_norm + 1e-12))
            grad = tree_map(lambda g: g * scale, grad)
        # Zeros keep NaNs out of the (discarded) update branch's arithmetic.
        safe_grad = tree_map(lambda g: jnp.where(finite, g, 0.0), grad)
        updates, outer_opt_state = self.outer_optimizer.update(
            safe_grad, state.outer_opt_state, state.theta
        )
        new_theta = optax.apply_updates(state.theta, updates)
        keep = lambda new, old: tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
        state = state.replace(
            theta=keep(new_theta, state.theta),
            outer_opt_state=keep(outer_opt_state, state.outer_opt_state),
            step=state.step + 1,
            num_nonfinite=state.num_nonfinite + (~finite).astype(jnp.int32),
        )
        metrics = {
            "meta_loss": meta_loss,
            "grad_norm": grad_norm,
            "nonfinite_skipped": state.num_nonfinite,
        }
        # Estimators report different metrics (FullES has no "restarts"): average each
        # over the estimators that report it.
        for name in dict.fromkeys(name for e in estimates for name in e.metrics):
            values = [e.metrics[name] for e in estimates if name in e.metrics]
            metrics[name] = jnp.mean(jnp.stack(values))
        return state, metrics

    def _update(self, state: LearnerState, key: jax.Array, batches: tuple):
        keys = jax.random.split(key, len(self.estimators))
        worker_states, estimates = [], []
        for est, ws, k, b in zip(self.estimators, state.worker_states, keys, batches, strict=True):
            ws, estimate = est.estimate(ws, state.theta, k, b)
            worker_states.append(ws)
            estimates.append(estimate)
        state = state.replace(worker_states=tuple(worker_states))
        return self.apply_gradients(state, estimates)

    def update(self, state: LearnerState, key: jax.Array) -> tuple[LearnerState, dict]:
        """One outer step: draw data, estimate with every estimator, apply (one jitted call)."""
        batches = tuple(est.get_batches() for est in self.estimators)
        return self._update_jit(state, key, batches)


# ---------------------------------------------------------------- the executor seam
#
# An outer step has two halves: estimation (workers: each holds its own worker
# states, reads the latest theta and returns estimates tagged with the theta step
# they used) and application (the learner: ``apply_gradients``, then publishes the
# new theta). An ``Executor`` decides where the first half runs:
#
# - ``LocalExecutor``: every estimator in this process, both halves fused into the
#   one jitted ``GradientLearner.update`` (the fast single-process path);
# - ``PoolExecutor``: a pool of ``GradientWorker``s, in this process
#   (``InProcessWorkers``) or in Ray actors (``lopt_core.distributed``), in
#   synchronous or asynchronous mode.
#
# Keys: outer step ``s`` estimates with ``split(fold_in(base_key, s), E)`` (E
# estimators, worker ``w`` owning the ``w``-th block of them), the worker states of a
# fresh run come from ``split(init_key, E + 1)[1:]``, exactly as
# ``GradientLearner.init``/``update`` draw them; so a synchronous pool equals the
# fused path. Worker states rebuilt later (after a worker restart, or a resume from
# a checkpoint without worker states) use ``rebuild_keys(base_key, step, E)``.

REBUILD_KEY_TAG = 2**31 - 5  # fold_in tags: meta_train uses -1 (init) and 2**31 - 2 (validation)
ASYNC_KEY_TAG = 2**31 - 6
MODES = ("sync", "async")
MAX_CONSECUTIVE_FAILURES = 3


def rebuild_keys(base_key: jax.Array, step: int, num: int) -> jax.Array:
    """Keys for ``num`` worker states rebuilt from theta at outer step ``step``."""
    return jax.random.split(
        jax.random.fold_in(jax.random.fold_in(base_key, REBUILD_KEY_TAG), step), num
    )


class WorkerLost(RuntimeError):
    """A worker died (or became unreachable) while it held a job; it may come back restarted."""

    def __init__(self, worker: int, cause: BaseException | str):
        super().__init__(f"worker {worker} was lost: {cause}")
        self.worker = worker
        self.cause = cause


class WorkersFailed(RuntimeError):
    """A worker kept failing (it was lost several times in a row): the run cannot go on."""


@dataclasses.dataclass(frozen=True)
class WorkerJob:
    """One estimate to compute: which theta step, the keys, and where in the data to read.

    ``keys`` and ``init_keys`` hold one key per estimator the worker owns;
    ``init_keys`` are used only when the worker has no state yet (its first job,
    after a restart, after a resume). ``data_position`` is, per split, the index
    in the split's stream of the first batch this job draws.
    """

    job_id: int
    theta_step: int
    keys: np.ndarray
    init_keys: np.ndarray
    data_position: dict[str, int]


@dataclasses.dataclass(frozen=True)
class WorkerResult:
    """The estimates of one job, tagged with the theta step they were computed from."""

    estimates: tuple  # of GradientEstimate, host numpy arrays
    theta_step: int
    worker: int
    job_id: int
    rebuilt: bool  # the worker (re)built its state from theta for this job


@functools.cache
def _jitted_block(estimators: tuple[GradientEstimator, ...]):
    """The estimates of a block of estimators in one jitted call (workers sharing the
    estimators share the compile)."""

    def estimate_block(states, theta, keys, batches):
        parts = zip(estimators, states, keys, batches, strict=True)
        out = [est.estimate(ws, theta, k, b) for est, ws, k, b in parts]
        return tuple(ws for ws, _ in out), tuple(e for _, e in out)

    return BackendJit(estimate_block)


class GradientWorker:
    """Gradient estimation for a block of estimators: their worker states, data, and compute.

    ``compute(theta, job)`` draws the job's batches (from ``job.data_position``,
    skipping what other workers or the learner drew), runs every estimator's
    ``estimate`` in one jitted call and returns the estimates. The worker state
    lives here, never on the learner; when there is none (first job, a restarted
    process) it is built from the job's theta and ``init_keys``.
    """

    def __init__(self, estimators: Sequence[GradientEstimator], index: int = 0):
        if isinstance(estimators, GradientEstimator):
            estimators = [estimators]
        self.estimators = tuple(estimators)
        if not self.estimators:
            raise ValueError("A GradientWorker needs at least one gradient estimator, got none.")
        self.index = int(index)
        families = {id(e.truncated_step.task_family.datasets) for e in self.estimators}
        datasets = self.estimators[0].truncated_step.task_family.datasets
        if len(families) > 1:
            raise ValueError(
                "The estimators of one GradientWorker must read one family's datasets (the data "
                "position of a job is counted in one stream); build them with build_learner."
            )
        self._counters = {} if datasets is None else count_draws(datasets)
        # Positions count from here: the iterators may already have been drawn from
        # (e.g. a dataset shared through dataset_lru_cache with an earlier run).
        self._base = {split: c.count for split, c in self._counters.items()}
        self._state = None
        self._draw_size: dict[str, int] | None = None
        self._peeked: tuple[dict[str, int], tuple] | None = None
        self._last: WorkerResult | None = None
        self._estimate_jit = _jitted_block(self.estimators)

    def _positions(self) -> dict[str, int]:
        return {split: c.count - self._base[split] for split, c in self._counters.items()}

    def _draw(self) -> tuple:
        before = self._positions()
        batches = tuple(est.get_batches() for est in self.estimators)
        drawn = {s: n - before[s] for s, n in self._positions().items() if n > before[s]}
        if self._draw_size is not None and drawn != self._draw_size:
            raise RuntimeError(
                f"worker {self.index}: one job drew {drawn} batches, an earlier one "
                f"{self._draw_size}; data positions assume every job draws the same number of "
                "batches per split."
            )
        self._draw_size = drawn
        return before, batches

    def draw_size(self) -> dict[str, int]:
        """Batches one job draws per split (``{}`` for data-free families).

        Learned by drawing the first job's batches now; they are kept for that job.
        """
        if self._draw_size is None:
            self._peeked = self._draw()
        return dict(self._draw_size)

    def _batches_at(self, position: dict[str, int]) -> tuple:
        if not self._counters:
            return tuple(est.get_batches() for est in self.estimators)
        size = self.draw_size()
        if self._peeked is not None:
            start, batches = self._peeked
            self._peeked = None
            if all(start[s] == position.get(s, start[s]) for s in size):
                return batches
        now = self._positions()
        for split in size:
            gap = position[split] - now[split]
            if gap < 0:
                raise RuntimeError(
                    f"worker {self.index}: asked for {split} batches from position "
                    f"{position[split]}, but it has already read up to {now[split]}; a data "
                    "stream cannot go back. Do the worker and the learner build the same "
                    "configuration?"
                )
            self._counters[split].skip(gap)
        return self._draw()[1]

    def reset(self) -> None:
        """Forget the worker state and the last result, as a restarted process has.

        The next job rebuilds the state from theta.
        """
        self._state = None
        self._last = None

    def compute(self, theta: Any, job: WorkerJob) -> WorkerResult:
        """The estimates of ``job`` at ``theta``, as host arrays (a repeated job is not rerun)."""
        if self._last is not None and self._last.job_id == job.job_id:
            return self._last  # the learner lost our answer, not our work: same result
        rebuilt = self._state is None
        if rebuilt:
            # As GradientLearner.init does (each estimator jits its own init).
            keys = jnp.asarray(job.init_keys)
            pairs = zip(self.estimators, keys, strict=True)
            self._state = tuple(est.init_worker_state(theta, k) for est, k in pairs)
        batches = self._batches_at(job.data_position)
        self._state, estimates = self._estimate_jit(
            self._state, theta, jnp.asarray(job.keys), batches
        )
        self._last = WorkerResult(
            jax.device_get(estimates), job.theta_step, self.index, job.job_id, rebuilt
        )
        return self._last


class WorkerPool:
    """Where ``GradientWorker``s run: submit jobs, wait for results (a Ray pool, or in-process)."""

    num_workers: int

    def draw_sizes(self) -> list[dict[str, int]]:
        """Each worker's ``draw_size()``."""
        raise NotImplementedError

    def put(self, theta: Any) -> Any:
        """Publish ``theta`` (host arrays); returns what ``submit`` takes."""
        raise NotImplementedError

    def submit(self, worker: int, theta: Any, job: WorkerJob) -> Any:
        """Start ``job`` on ``worker``; returns a future."""
        raise NotImplementedError

    def wait(self, futures: Sequence[Any], num_returns: int = 1) -> list[Any]:
        """Block until ``num_returns`` of ``futures`` are done; return those."""
        raise NotImplementedError

    def result(self, future: Any) -> WorkerResult:
        """The result of a finished future; raises ``WorkerLost`` if its worker died."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers."""


class _Done:
    __slots__ = ("order", "result")

    def __init__(self, order: int, result: WorkerResult):
        self.order, self.result = order, result


class InProcessWorkers(WorkerPool):
    """``GradientWorker``s in this process, one job at a time, results in submission order.

    The distributed protocol without a cluster: for debugging, and for tests of
    the synchronous and asynchronous modes (first-in first-out makes async
    staleness deterministic: with N workers every estimate is N - 1 steps old).
    """

    def __init__(self, workers: Sequence[GradientWorker]):
        self.workers = list(workers)
        self.num_workers = len(self.workers)
        self._submitted = 0

    def draw_sizes(self) -> list[dict[str, int]]:
        return [w.draw_size() for w in self.workers]

    def put(self, theta: Any) -> Any:
        return theta

    def submit(self, worker: int, theta: Any, job: WorkerJob) -> _Done:
        self._submitted += 1
        return _Done(self._submitted, self.workers[worker].compute(theta, job))

    def wait(self, futures: Sequence[_Done], num_returns: int = 1) -> list[_Done]:
        return sorted(futures, key=lambda f: f.order)[:num_returns]

    def result(self, future: _Done) -> WorkerResult:
        return future.result


class Executor:
    """Runs outer steps for a ``GradientLearner``: where estimates come from, and their data.

    ``keeps_worker_states`` tells whether ``LearnerState.worker_states`` holds the
    worker states (and checkpoints carry them) or the workers keep them.
    """

    learner: GradientLearner
    keeps_worker_states: bool

    def init(self, key: jax.Array) -> LearnerState:
        """A fresh learner state (as ``GradientLearner.init(key)`` draws it)."""
        raise NotImplementedError

    def step(self, state: LearnerState, step: int) -> tuple[LearnerState, dict[str, Any]]:
        """Outer step number ``step`` (== ``state.step``, passed to keep the host from waiting)."""
        raise NotImplementedError

    def restore(self, state: LearnerState, header: dict[str, Any]) -> LearnerState:
        """Continue from a checkpoint: data positions, counters; rebuild missing worker states."""
        raise NotImplementedError

    def header(self) -> dict[str, Any]:
        """What a checkpoint must record to continue: ``batches_drawn`` per split, and more."""
        raise NotImplementedError

    def host_draws(self) -> contextlib.AbstractContextManager:
        """Wrap draws the learner makes itself from the family's data (validation)."""
        return contextlib.nullcontext()

    def close(self) -> None:
        """Release workers."""


class LocalExecutor(Executor):
    """Every estimator in this process; estimation and application in one jitted call.

    Batches drawn are counted at the family's ``Datasets`` (every draw, the
    learner's validation included), so a resumed run skips exactly those.
    """

    keeps_worker_states = True

    def __init__(self, learner: GradientLearner, base_key: jax.Array):
        self.learner = learner
        self.base_key = base_key
        datasets = learner.estimators[0].truncated_step.task_family.datasets
        self.counters = {} if datasets is None else count_draws(datasets)
        self._baseline = {split: c.count for split, c in self.counters.items()}
        self._resumed: dict[str, int] = {}

    def init(self, key: jax.Array) -> LearnerState:
        return self.learner.init(key)

    def step(self, state: LearnerState, step: int) -> tuple[LearnerState, dict[str, Any]]:
        return self.learner.update(state, jax.random.fold_in(self.base_key, step))

    def header(self) -> dict[str, Any]:
        drawn = {
            split: self._resumed.get(split, 0) + c.count - self._baseline[split]
            for split, c in self.counters.items()
        }
        return {"batches_drawn": drawn}

    def restore(self, state: LearnerState, header: dict[str, Any]) -> LearnerState:
        self._resumed = {k: int(v) for k, v in header.get("batches_drawn", {}).items()}
        for split, count in self._resumed.items():
            if split in self.counters:
                self.counters[split].skip(count)
        self._baseline = {split: c.count for split, c in self.counters.items()}
        if not state.worker_states:  # a checkpoint from a pool of workers: rebuild from theta
            step = int(state.step)
            keys = rebuild_keys(self.base_key, step, len(self.learner.estimators))
            state = state.replace(worker_states=self.learner.init_worker_states(state.theta, keys))
        return state


class PoolExecutor(Executor):
    """Workers in a ``WorkerPool`` estimate; this process applies (``apply_gradients``, jitted).

    ``mode="sync"``: every outer step sends theta to all workers and averages
    all their estimates (with the same keys and data as ``LocalExecutor`` over
    ``num_workers * estimators_per_worker`` estimators). ``mode="async"``: every
    worker is always busy; each result is applied on arrival (one outer step per
    result), unless it was computed from a theta more than ``max_staleness``
    steps old, in which case it is dropped and counted (``stale_dropped``).
    A lost worker's job is sent again (to the restarted worker, which rebuilds its
    state from theta); ``worker_failures`` counts those.

    Data: every job reads its own range of each split's stream, assigned here in
    dispatch order (``data_position``), so no two jobs read the same batches and a
    synchronous run reads exactly the batches the single-process run reads.
    """

    keeps_worker_states = False

    def __init__(
        self,
        learner: GradientLearner,
        pool: WorkerPool,
        base_key: jax.Array,
        estimators_per_worker: int = 1,
        mode: str = "sync",
        max_staleness: int = 1,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if (
            isinstance(max_staleness, bool)
            or not isinstance(max_staleness, int)
            or max_staleness < 0
        ):
            raise ValueError(f"max_staleness must be an integer >= 0, got {max_staleness!r}.")
        self.learner = learner
        self.pool = pool
        self.base_key = base_key
        self.mode = mode
        self.max_staleness = max_staleness
        self.num_workers = pool.num_workers
        if self.num_workers < 1:
            raise ValueError(f"A PoolExecutor needs at least one worker, got {self.num_workers}.")
        self.per_worker = int(estimators_per_worker)
        self.num_estimators = self.num_workers * self.per_worker
        # The learner's own data (for validation), counted from here; before asking the
        # workers what a job draws (which draws, from this very data when in-process).
        datasets = learner.estimators[0].truncated_step.task_family.datasets
        self._host_counters = {} if datasets is None else count_draws(datasets)
        self._host_base = {split: c.count for split, c in self._host_counters.items()}
        sizes = pool.draw_sizes()
        if any(s != sizes[0] for s in sizes):
            raise ValueError(
                f"The workers draw different amounts of data per job ({sizes}); they must be "
                "built from the same configuration."
            )
        self.draw_size = dict(sizes[0])
        # Per split, the next batch of the stream that no job or validation has been given.
        self.position = {split: 0 for split in (*self._host_counters, *self.draw_size)}
        self.jobs = 0  # jobs dispatched so far (ids; async keys)
        self.stale_dropped = 0
        self.worker_failures = 0  # results lost with their worker
        self.worker_rebuilds = 0  # worker states rebuilt from theta (after a restart)
        self._has_state = [False] * self.num_workers
        self._failures_in_a_row = [0] * self.num_workers
        self._fresh_init_keys: np.ndarray | None = None
        self._inflight: dict[Any, tuple[int, WorkerJob]] = {}
        self._theta: tuple[int, Any] | None = None  # (step, published theta)
        self._apply = BackendJit(learner.apply_gradients)

    # --- keys and jobs

    def init(self, key: jax.Array) -> LearnerState:
        theta_key, *worker_keys = jax.random.split(key, self.num_estimators + 1)
        theta = self.learner.learned_opt.init(theta_key)
        self._fresh_init_keys = np.asarray(jnp.stack(worker_keys)).reshape(
            self.num_workers, self.per_worker, -1
        )
        return LearnerState(
            theta=theta,
            outer_opt_state=self.learner.outer_optimizer.init(theta),
            worker_states=(),
            step=jnp.zeros((), jnp.int32),
            num_nonfinite=jnp.zeros((), jnp.int32),
        )

    def _init_keys(self, step: int) -> np.ndarray:
        if self._fresh_init_keys is not None and step == 0:
            return self._fresh_init_keys
        keys = rebuild_keys(self.base_key, step, self.num_estimators)
        return np.asarray(keys).reshape(self.num_workers, self.per_worker, -1)

    def _publish(self, state: LearnerState, step: int) -> Any:
        if self._theta is None or self._theta[0] != step:
            self._theta = (step, self.pool.put(jax.device_get(state.theta)))
        return self._theta[1]

    def _job(self, worker: int, step: int, keys: np.ndarray, init_keys: np.ndarray) -> WorkerJob:
        job = WorkerJob(self.jobs, step, keys, init_keys, dict(self.position))
        self.jobs += 1
        for split, n in self.draw_size.items():
            self.position[split] += n
        return job

    def _submit(self, worker: int, theta: Any, job: WorkerJob) -> None:
        self._inflight[self.pool.submit(worker, theta, job)] = (worker, job)

    def _next_result(self) -> tuple[int, WorkerJob, WorkerResult | None]:
        """The next finished job; a lost worker's result is None (after counting it)."""
        future = self.pool.wait(list(self._inflight), 1)[0]
        worker, job = self._inflight.pop(future)
        try:
            result = self.pool.result(future)
        except WorkerLost as lost:
            self.worker_failures += 1
            self._failures_in_a_row[worker] += 1
            if self._failures_in_a_row[worker] >= MAX_CONSECUTIVE_FAILURES:
                raise WorkersFailed(
                    f"worker {worker} was lost {self._failures_in_a_row[worker]} times in a row "
                    f"(last: {lost.cause}); giving up. Check the worker logs (a config that fails "
                    "to build, or too little memory, fails the same way each time)."
                ) from lost
            return worker, job, None
        self._failures_in_a_row[worker] = 0
        if result.rebuilt and self._has_state[worker]:
            self.worker_rebuilds += 1
        self._has_state[worker] = True
        return worker, job, result

    # --- outer steps

    def step(self, state: LearnerState, step: int) -> tuple[LearnerState, dict[str, Any]]:
        if self.mode == "sync":
            state, metrics, staleness = self._sync_step(state, step)
        else:
            state, metrics, staleness = self._async_step(state, step)
        metrics = dict(metrics)
        metrics.update(
            staleness=staleness,
            stale_dropped=self.stale_dropped,
            worker_failures=self.worker_failures,
            worker_rebuilds=self.worker_rebuilds,
        )
        return state, metrics

    def _sync_step(self, state, step):
        theta = self._publish(state, step)
        keys = jax.random.split(jax.random.fold_in(self.base_key, step), self.num_estimators)
        keys = np.asarray(keys).reshape(self.num_workers, self.per_worker, -1)
        init_keys = self._init_keys(step)
        for w in range(self.num_workers):
            self._submit(w, theta, self._job(w, step, keys[w], init_keys[w]))
        results: list[WorkerResult | None] = [None] * self.num_workers
        while self._inflight:
            worker, job, result = self._next_result()
            if result is None:
                self._submit(worker, theta, job)  # the same job: same keys, same data
            else:
                results[worker] = result
        estimates = [e for r in results for e in r.estimates]
        state, metrics = self._apply(state, estimates)
        return state, metrics, 0

    def _dispatch_async(self, worker: int, state: LearnerState, step: int) -> None:
        key = jax.random.fold_in(jax.random.fold_in(self.base_key, ASYNC_KEY_TAG), self.jobs)
        keys = np.asarray(jax.random.split(key, self.per_worker))
        job = self._job(worker, step, keys, self._init_keys(step)[worker])
        self._submit(worker, self._publish(state, step), job)

    def _async_step(self, state, step):
        busy = {w for w, _ in self._inflight.values()}
        for w in range(self.num_workers):
            if w not in busy:
                self._dispatch_async(w, state, step)
        while True:
            worker, job, result = self._next_result()
            if result is None:
                self._dispatch_async(worker, state, step)
                continue
            staleness = step - result.theta_step
            if staleness > self.max_staleness:
                self.stale_dropped += 1
                self._dispatch_async(worker, state, step)
                continue
            state, metrics = self._apply(state, list(result.estimates))
            self._dispatch_async(worker, state, step + 1)
            return state, metrics, staleness

    # --- data and checkpoints

    def header(self) -> dict[str, Any]:
        return {
            "batches_drawn": dict(self.position),
            "jobs_dispatched": self.jobs,
            "workers": self.num_workers,
            "mode": self.mode,
        }

    def restore(self, state: LearnerState, header: dict[str, Any]) -> LearnerState:
        drawn = {k: int(v) for k, v in header.get("batches_drawn", {}).items()}
        self.position = {split: drawn.get(split, 0) for split in self.position}
        self.jobs = int(header.get("jobs_dispatched", 0))
        self._fresh_init_keys = None  # workers rebuild their states from theta
        return state.replace(worker_states=())

    @contextlib.contextmanager
    def host_draws(self):
        # The learner's own copy of the data is moved to where the jobs' reading has
        # got to, and what it draws here is skipped by later jobs: the order of draws
        # of the single-process run, where validation draws from the same iterators.
        base = self._host_base
        for split, counter in self._host_counters.items():
            counter.skip(max(0, self.position[split] - (counter.count - base[split])))
        try:
            yield
        finally:
            for split, counter in self._host_counters.items():
                self.position[split] = counter.count - base[split]

    def close(self) -> None:
        self._inflight.clear()
        self.pool.close()
