"""Executors: where the outer steps of a run are computed.

- ``LocalExecutor``: every estimator in this process, estimation and application
  fused into the one jitted ``GradientLearner.update`` (the fast path);
- ``PoolExecutor``: a ``WorkerPool`` of ``GradientWorker``s (in this process, or
  Ray actors from ``lopt_core.distributed``) estimates, in synchronous or
  asynchronous mode, and this process applies.

Both count the data drawn so that a resumed run reads exactly the batches the
uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt_core import keys as key_tags
from lopt_core.datasets import DrawPositions
from lopt_core.jit import BackendJit
from lopt_core.outer.learner import GradientLearner, LearnerState
from lopt_core.outer.workers import (
    WorkerJob,
    WorkerLost,
    WorkerPool,
    WorkerResult,
    WorkersFailed,
    rebuild_keys,
)
from lopt_core.tasks import TaskFamily
from lopt_core.validation import non_negative_int, one_of

MODES = ("sync", "async")
MAX_CONSECUTIVE_FAILURES = 3


class Executor:
    """Runs outer steps for a ``GradientLearner``: where estimates come from, and their data.

    ``keeps_worker_states`` tells whether ``LearnerState.worker_states`` holds the
    worker states (and checkpoints carry them) or the workers keep them.
    """

    learner: GradientLearner
    keeps_worker_states: bool
    # Whether validation scores normalized losses (several families on one scale).
    normalized_validation: bool = False

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

    def template_for(self, template: LearnerState, header: dict[str, Any]) -> LearnerState:
        """A state shaped like the checkpoint with ``header`` (``template`` itself by default)."""
        return template

    def validation_families(self) -> list[TaskFamily]:
        """The families validation scores (the learner's one family by default)."""
        return [self.learner.task_family]

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
        self.positions = DrawPositions(learner.datasets)
        self._resumed: dict[str, int] = {}

    def init(self, key: jax.Array) -> LearnerState:
        return self.learner.init(key)

    def step(self, state: LearnerState, step: int) -> tuple[LearnerState, dict[str, Any]]:
        return self.learner.update(state, jax.random.fold_in(self.base_key, step))

    def header(self) -> dict[str, Any]:
        drawn = {
            split: self._resumed.get(split, 0) + n for split, n in self.positions.drawn().items()
        }
        return {"batches_drawn": drawn}

    def restore(self, state: LearnerState, header: dict[str, Any]) -> LearnerState:
        self._resumed = {k: int(v) for k, v in header.get("batches_drawn", {}).items()}
        for split, count in self._resumed.items():
            if split in self.positions.splits:
                self.positions.skip(split, count)
        self.positions.rebase()
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
        one_of(mode, "mode", MODES)
        non_negative_int(max_staleness, "max_staleness")
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
        self._host = DrawPositions(learner.datasets)
        sizes = pool.draw_sizes()
        if any(s != sizes[0] for s in sizes):
            raise ValueError(
                f"The workers draw different amounts of data per job ({sizes}); they must be "
                "built from the same configuration."
            )
        self.draw_size = dict(sizes[0])
        # Per split, the next batch of the stream that no job or validation has been given.
        self.position = {split: 0 for split in (*self._host.splits, *self.draw_size)}
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
        key = jax.random.fold_in(key_tags.tagged(self.base_key, key_tags.ASYNC_JOBS), self.jobs)
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
        for split, drawn in self._host.drawn().items():
            self._host.skip(split, max(0, self.position[split] - drawn))
        try:
            yield
        finally:
            self.position.update(self._host.drawn())

    def close(self) -> None:
        self._inflight.clear()
        self.pool.close()
