"""Gradient workers and the pool protocol: who estimates meta-gradients, and how jobs travel.

An outer step has two halves: estimation (workers: each holds its own worker
states, reads the theta it is sent and returns estimates tagged with the theta
step they used) and application (the learner). A ``GradientWorker`` estimates
for a block of estimators; a ``WorkerPool`` runs workers somewhere (here:
``InProcessWorkers``; on Ray: ``lopt_core.distributed.RayWorkers``) and passes
``WorkerJob``s and ``WorkerResult``s.

Keys: outer step ``s`` estimates with ``split(fold_in(base_key, s), E)`` (E
estimators, worker ``w`` owning the ``w``-th block of them), the worker states of
a fresh run come from ``split(init_key, E + 1)[1:]``, exactly as
``GradientLearner.init``/``update`` draw them, so a synchronous pool equals the
fused path. Worker states rebuilt later (after a worker restart, or a resume
from a checkpoint without worker states) use ``rebuild_keys(base_key, step, E)``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt_core import keys as key_tags
from lopt_core.datasets import Datasets, DrawPositions
from lopt_core.jit import BackendJit
from lopt_core.outer.gradient_estimators import GradientEstimator


def rebuild_keys(base_key: jax.Array, step: int, num: int) -> jax.Array:
    """Keys for ``num`` worker states rebuilt from theta at outer step ``step``."""
    return jax.random.split(
        jax.random.fold_in(key_tags.tagged(base_key, key_tags.WORKER_REBUILD), step), num
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


def estimators_datasets(estimators: Sequence[GradientEstimator], owner: str) -> Datasets | None:
    """The one ``Datasets`` the estimators' task family reads (None: data-free).

    A job's data position is counted in one stream, so a block of estimators
    must share one family's datasets.
    """
    datasets = {id(e.truncated_step.task_family.datasets) for e in estimators}
    if len(datasets) > 1:
        raise ValueError(
            f"The estimators of one {owner} must read one family's datasets (the data "
            "position of a job is counted in one stream); build them with build_learner."
        )
    return estimators[0].truncated_step.task_family.datasets


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
        datasets = estimators_datasets(self.estimators, "GradientWorker")
        # Positions count from here: the iterators may already have been drawn from.
        self._positions = DrawPositions(datasets)
        self._state = None
        self._draw_size: dict[str, int] | None = None
        self._peeked: tuple[dict[str, int], tuple] | None = None
        self._last: WorkerResult | None = None
        self._estimate_jit = _jitted_block(self.estimators)

    def _draw(self) -> tuple:
        before = self._positions.drawn()
        batches = tuple(est.get_batches() for est in self.estimators)
        drawn = {s: n - before[s] for s, n in self._positions.drawn().items() if n > before[s]}
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
        if not self._positions.splits:
            return tuple(est.get_batches() for est in self.estimators)
        size = self.draw_size()
        if self._peeked is not None:
            start, batches = self._peeked
            self._peeked = None
            if all(start[s] == position.get(s, start[s]) for s in size):
                return batches
        now = self._positions.drawn()
        for split in size:
            gap = position[split] - now[split]
            if gap < 0:
                raise RuntimeError(
                    f"worker {self.index}: asked for {split} batches from position "
                    f"{position[split]}, but it has already read up to {now[split]}; a data "
                    "stream cannot go back. Do the worker and the learner build the same "
                    "configuration?"
                )
            self._positions.skip(split, gap)
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
