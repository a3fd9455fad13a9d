"""The Ray backend: a worker pool of Ray actors, the learner actor, and the driver loop.

Nothing here imports Ray at module level: ``require_ray()`` does, when a run
starts, and says how to install it if it is missing.

Who builds what: the driver (``lopt train`` or ``meta_train(ray=True)``) sends
every actor a *recipe*, a picklable function returning ``LearnerSpec`` fields;
each actor calls it and builds its own task family, data iterators and
estimators, so nothing unpicklable (live data iterators, generators, compiled
functions) crosses the wire. ``lopt train`` uses a ``GinRecipe`` (the parsed gin
config, as text; ``lopt_core.gin_config``).
"""

from __future__ import annotations

import collections
import math
import os
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lopt_core.outer.executors import PoolExecutor
from lopt_core.outer.run_dir import check_output_dir
from lopt_core.outer.run_loop import MetaTrainResult, RunLoop
from lopt_core.outer.settings import LearnerSpec, Recipe, RunSettings, WorkerSettings
from lopt_core.outer.stop_requests import StopRequests
from lopt_core.outer.workers import (
    GradientWorker,
    WorkerJob,
    WorkerLost,
    WorkerPool,
    WorkerResult,
)

DEFAULT_WORKER_OPTIONS: dict[str, Any] = {"num_cpus": 1, "max_restarts": 3}
# How long a lost worker may take to come back (a restart starts a Python process and
# imports jax: seconds on an idle machine, a minute or more on a loaded one);
# meta_train.worker_restart_timeout sets it.
DEFAULT_RESTART_TIMEOUT_S = 300.0
RESTART_POLL_S = 0.5


def require_ray():
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            f"Meta-training on Ray needs the ray package, which is not importable here ({e}). "
            "Install it with `pip install 'lopt[ray]'` (or `pip install ray`)."
        ) from e
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to Ray: the cluster at ``address``, else a new local one (``num_cpus`` CPUs).

    Without an address a new cluster is started even when this machine already
    runs one (``ray start``); ``address="auto"`` joins that one instead.

    Returns True when this call started or joined Ray (the caller then shuts it
    down), False when Ray was already initialized in this process (it is used as
    it is, whatever ``address`` says).
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    with warnings.catch_warnings():
        # Ray starts its daemons with fork + exec, which JAX's at-fork hook warns about
        # (a bare fork of a multithreaded process would be unsafe; fork + exec is not).
        warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
        if address:
            ray.init(address=address)
        else:
            # "local": a new cluster, not the `ray start` one ray.init() would find.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    return True


class _WorkerActor:
    """A gradient worker in its own process; builds its estimators from the recipe on first use.

    (Building lazily makes a bad recipe fail as an ordinary exception of the first
    call, with its traceback, rather than as a dead actor.)
    """

    def __init__(self, recipe: Recipe, index: int, num_estimators: int):
        self.recipe, self.index, self.num_estimators = recipe, index, num_estimators
        self.worker: GradientWorker | None = None

    def _get(self) -> GradientWorker:
        if self.worker is None:
            spec = LearnerSpec.from_recipe(self.recipe, self.num_estimators)
            self.worker = GradientWorker(spec.build().estimators, self.index)
        return self.worker

    def draw_size(self) -> dict[str, int]:
        return self._get().draw_size()

    def compute(self, theta: Any, job: WorkerJob) -> WorkerResult:
        return self._get().compute(theta, job)

    def pid(self) -> int:
        return os.getpid()


class RayWorkers(WorkerPool):
    """``num_workers`` worker actors, each owning ``estimators_per_worker`` estimators.

    ``worker_options`` are Ray actor options (defaults ``DEFAULT_WORKER_OPTIONS``:
    one CPU, up to 3 restarts after a crash); ``max_task_retries`` is always 0
    because the learner resends a lost job itself. Actors are named
    ``<name_prefix>-worker-<i>`` (see ``ray list actors``); theta goes through the
    object store once per theta step (``put``), and results are gathered with
    ``ray.wait``. A job lost with a crashed worker is reported (``WorkerLost``)
    only once the restarted actor answers again, or after ``restart_timeout``
    seconds, so that the job is resent to a worker that can take it.
    """

    def __init__(
        self,
        recipe: Recipe,
        num_workers: int,
        estimators_per_worker: int = 1,
        worker_options: dict[str, Any] | None = None,
        name_prefix: str | None = None,
        restart_timeout: float = DEFAULT_RESTART_TIMEOUT_S,
    ):
        ray = require_ray()
        self._ray = ray
        self.restart_timeout = float(restart_timeout)
        options = {**DEFAULT_WORKER_OPTIONS, **(worker_options or {}), "max_task_retries": 0}
        prefix = name_prefix or f"lopt-{uuid.uuid4().hex[:8]}"
        self.num_workers = int(num_workers)
        self.names = [f"{prefix}-worker-{w}" for w in range(self.num_workers)]
        actor_class = ray.remote(_WorkerActor)
        self.actors = [
            actor_class.options(name=name, **options).remote(recipe, w, estimators_per_worker)
            for w, name in enumerate(self.names)
        ]
        self._owner: dict[Any, int] = {}

    def draw_sizes(self) -> list[dict[str, int]]:
        return self._ray.get([a.draw_size.remote() for a in self.actors])

    def put(self, theta: Any) -> Any:
        return self._ray.put(theta)

    def submit(self, worker: int, theta: Any, job: WorkerJob) -> Any:
        future = self.actors[worker].compute.remote(theta, job)
        self._owner[future] = worker
        return future

    def wait(self, futures: Sequence[Any], num_returns: int = 1) -> list[Any]:
        ready, _ = self._ray.wait(list(futures), num_returns=num_returns)
        return ready

    def result(self, future: Any) -> WorkerResult:
        worker = self._owner.pop(future, -1)
        try:
            return self._ray.get(future)
        except self._ray.exceptions.RayActorError as e:  # died, or restarting
            if worker >= 0:
                self._await_restart(worker)
            raise WorkerLost(worker, e) from e

    def _await_restart(self, worker: int) -> None:
        # A restarting actor refuses calls at once ("temporarily unavailable"): resending
        # the job right away would fail again in milliseconds and count as more losses.
        # Wait until it answers (or is dead for good, or restart_timeout passes).
        exceptions = self._ray.exceptions
        deadline = time.monotonic() + self.restart_timeout
        while time.monotonic() < deadline:
            try:
                self._ray.get(self.actors[worker].pid.remote(), timeout=RESTART_POLL_S)
                return
            except exceptions.ActorDiedError:
                return  # no restarts left: the next job fails and is counted
            except (exceptions.RayActorError, exceptions.GetTimeoutError):
                time.sleep(RESTART_POLL_S)

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor, no_restart=True)
        self._owner.clear()


class _LearnerActor:
    """The learner: holds theta, applies estimates, validates, writes metrics and checkpoints.

    A threaded actor: ``run`` occupies one thread while ``poll`` (new metrics
    rows, for the driver's progress bar) and ``stop`` (Ctrl-C in the driver) are
    served by another.
    """

    def __init__(self):
        self._rows: collections.deque = collections.deque()
        self._stop_reason: str | None = None  # set by stop(), read by the run loop

    def setup(
        self,
        output_dir: str,
        latest: str | None,
        recipe: Recipe,
        num_estimators: int,
        run: RunSettings,
        placement: WorkerSettings,
    ) -> int:
        """Build the learner and its workers, start or restore the state; returns its step."""
        import jax

        learner = LearnerSpec.from_recipe(recipe).build()
        pool = RayWorkers(
            recipe,
            placement.workers,
            num_estimators,
            placement.worker_options,
            restart_timeout=placement.worker_restart_timeout,
        )
        self.worker_names = pool.names
        try:
            key = jax.random.PRNGKey(run.seed)
            self.executor = PoolExecutor(
                learner, pool, key, num_estimators, placement.worker_mode, placement.max_staleness
            )
            self.run_ = RunLoop(self.executor, Path(output_dir), run)
            self.state = self.run_.start(Path(latest) if latest else None)
        except BaseException:
            pool.close()
            raise
        return int(self.state.step)

    def names(self) -> list[str]:
        """The worker actors' names."""
        return list(self.worker_names)

    def run(self):
        """Run the remaining outer steps; returns the ``MetaTrainResult`` (host arrays)."""
        import jax

        try:
            result = self.run_.loop(
                self.state,
                progress=False,
                should_stop=lambda: self._stop_reason,
                on_row=self._rows.append,
            )
        finally:
            self.executor.close()
        return result.replace(state=jax.device_get(result.state))

    def poll(self) -> list[dict[str, Any]]:
        """The metrics rows written since the last poll."""
        rows = []
        while self._rows:
            rows.append(self._rows.popleft())
        return rows

    def stop(self, reason: str = "stop request") -> None:
        """Finish the current step, checkpoint, and return (as Ctrl-C does); ``reason``
        ("SIGINT", "SIGTERM"...) is reported as what stopped the run."""
        self._stop_reason = reason


def _check_picklable(recipe: Recipe) -> None:
    from ray import cloudpickle

    try:
        cloudpickle.dumps(recipe)
    except Exception as e:
        raise TypeError(
            f"The Ray actors build the run from a recipe sent to them by pickling, and "
            f"{recipe!r} cannot be pickled ({type(e).__name__}: {e}). Pass meta_train(recipe=...) "
            "a function that builds the task family, learned optimizer, ... from scratch (a "
            "module-level function, or lopt_core.distributed.gin_recipe() for a gin config); "
            "`lopt train --ray` does that from the config files."
        ) from e


def ray_meta_train(
    output_dir: str | os.PathLike,
    recipe: Recipe,
    run: RunSettings | None = None,
    placement: WorkerSettings | None = None,
    *,
    num_estimators: int = 1,
    resume: bool = False,
    progress: bool = True,
    on_ready: Callable[[], None] | None = None,
) -> MetaTrainResult:
    """Meta-train on Ray: one learner actor (on this machine) and ``placement.workers``
    worker actors (default 2), each with ``num_estimators`` estimators built from ``recipe``.

    Joins the cluster at ``placement.ray_address``, or starts a local one (as many
    CPUs as this machine has, or as the workers need) when Ray is not initialized
    yet; a Ray already initialized in this process is used as it is. The learner
    actor writes the run's files in ``output_dir`` (it is placed on this machine's
    node, so they appear here); ``on_ready`` runs once it has built or restored
    its state. Ctrl-C stops the run after the current step with a checkpoint.
    Returns ``meta_train``'s ``MetaTrainResult``.
    """
    run = RunSettings() if run is None else run
    placement = WorkerSettings(workers=2, ray=True) if placement is None else placement
    if not placement.ray:
        raise ValueError(f"ray_meta_train needs WorkerSettings(ray=True, ...), got {placement!r}.")
    ray = require_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    _check_picklable(recipe)
    output_dir = Path(output_dir).resolve()  # the actor's working directory is not ours
    latest = check_output_dir(output_dir, resume)
    output_dir.mkdir(parents=True, exist_ok=True)
    workers = placement.workers
    cpus = (placement.worker_options or {}).get("num_cpus", DEFAULT_WORKER_OPTIONS["num_cpus"])
    started = init_ray(
        placement.ray_address, num_cpus=max(os.cpu_count() or 1, math.ceil(workers * cpus))
    )
    try:
        available = ray.cluster_resources().get("CPU", 0)
        if available < workers * cpus:
            warnings.warn(
                f"The Ray cluster has {available:g} CPUs but {workers} workers of {cpus} CPUs "
                "each need more; the workers that do not fit wait until CPUs join. Use fewer "
                "--workers, or worker_options={'num_cpus': ...}.",
                stacklevel=2,
            )
        node = ray.get_runtime_context().get_node_id()
        learner_class = ray.remote(_LearnerActor).options(
            num_cpus=0,  # it mostly waits for the workers
            max_concurrency=2,
            max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        )
        learner = learner_class.remote()
        try:
            latest_arg = str(latest) if resume else None
            setup = learner.setup.remote(
                str(output_dir), latest_arg, recipe, num_estimators, run, placement
            )
            start = ray.get(setup)
            if on_ready is not None:
                on_ready()
            return _drive(ray, learner, start, run.num_steps, progress)
        finally:
            ray.kill(learner)  # its worker actors die with it
    finally:
        if started:
            ray.shutdown()


def _drive(ray, learner, start: int, num_steps: int, progress: bool):
    """Wait for the learner's run, showing its progress; Ctrl-C or SIGTERM asks it to stop
    (after the current step, with a checkpoint); a second Ctrl-C while it stops is ignored."""
    from tqdm.auto import tqdm

    done_ref = learner.run.remote()
    bar = tqdm(
        total=num_steps,
        initial=start,
        desc="meta-train (ray)",
        unit="step",
        disable=not progress,
        file=sys.stderr,
    )

    def show(rows):
        for row in rows:
            bar.set_postfix(meta_loss=f"{row['meta_loss']:.4g}", refresh=False)
            bar.update(1)

    def stop(reason: str):
        bar.write(f"Stopping ({reason}): the learner saves a checkpoint after this step.")
        ray.get(learner.stop.remote(reason))
        result = ray.get(done_ref)
        show(ray.get(learner.poll.remote()))
        return result

    try:
        with StopRequests() as requests:
            while True:
                done, _ = ray.wait([done_ref], timeout=0.5)
                show(ray.get(learner.poll.remote()))
                if done:
                    return ray.get(done_ref)
                if requests.requested:
                    return stop(requests.requested)
    except KeyboardInterrupt:
        return stop("SIGINT")
    finally:
        bar.close()
