"""The executor seam without Ray: pools of gradient workers in this process.

A synchronous pool equals the fused single-process path (same keys, same
batches), workers reading their own copies of the data skip to the batches the
single-process run would give them, asynchronous pools respect the staleness
bound, lost jobs are sent again, and checkpoints without worker states continue
in either executor. The recipes are tests/toys.py's, which the Ray tests
(tests/distributed/test_ray_meta_train.py) run too.
"""

from __future__ import annotations

import shutil

import jax
import numpy as np
import pytest

from helpers import assert_same_theta, checkpoint_header, flat, metric_rows
from lopt_core import meta_train
from lopt_core.keys import INIT, tagged
from lopt_core.outer import (
    GradientWorker,
    InProcessWorkers,
    LocalExecutor,
    PoolExecutor,
    WorkerJob,
    WorkerLost,
    WorkersFailed,
    build_learner,
)
from toys import (
    RECIPE_LOPT,
    RECIPES,
    RegressionFamily,
    build_args,
    quadratic_recipe,
    regression_recipe,
)

KEY = jax.random.PRNGKey(0)
INIT_KEY = tagged(KEY, INIT)  # what meta_train initializes with (seed 0)
LOPT = RECIPE_LOPT


# Synchronous pools equal the fused path -------------------------------------------------------


@pytest.mark.parametrize("family", RECIPES)
def test_sync_worker_pool_equals_the_fused_single_process_run(tmp_path, family):
    kw = dict(num_steps=6, validate_every=3, validation_tasks=2, progress=False)
    fused = meta_train(tmp_path / "fused", **RECIPES[family](), num_estimators=2, **kw)
    pool = meta_train(tmp_path / "pool", **RECIPES[family](), workers=2, **kw)

    assert_same_theta(fused.state.theta, pool.state.theta)
    assert [r["meta_loss"] for r in metric_rows(tmp_path / "pool")] == [
        r["meta_loss"] for r in metric_rows(tmp_path / "fused")
    ]
    assert (tmp_path / "pool" / "validation.jsonl").read_text() == (
        tmp_path / "fused" / "validation.jsonl"
    ).read_text()
    fused_header = checkpoint_header(tmp_path / "fused", fused.state)
    pool_header = checkpoint_header(tmp_path / "pool", pool.state)
    assert pool_header["batches_drawn"] == fused_header["batches_drawn"]
    assert fused_header["worker_states"] and not pool_header["worker_states"]
    assert pool.state.worker_states == () and len(fused.state.worker_states) == 2
    assert not np.allclose(flat(pool.state.theta), flat(LOPT.init(KEY)))  # it did train


def test_workers_with_their_own_data_read_the_batches_of_the_fused_run():
    """Each worker (and the learner) builds its own iterators, as Ray actors do."""
    fused_learner = build_learner(**regression_recipe(), num_estimators=2)
    fused = LocalExecutor(fused_learner, KEY)
    pool_learner = build_learner(**regression_recipe())
    workers = [GradientWorker(build_learner(**regression_recipe()).estimators, w) for w in (0, 1)]
    pool = PoolExecutor(pool_learner, InProcessWorkers(workers), KEY)
    fused_state, pool_state = fused.init(INIT_KEY), pool.init(INIT_KEY)
    for step in range(4):
        fused_state, fused_metrics = fused.step(fused_state, step)
        pool_state, pool_metrics = pool.step(pool_state, step)
        np.testing.assert_allclose(pool_metrics["meta_loss"], fused_metrics["meta_loss"], rtol=1e-6)
        if step == 1:  # the learner draws data itself in between, as validation does
            for executor, learner in ((fused, fused_learner), (pool, pool_learner)):
                datasets = learner.estimators[0].truncated_step.task_family.datasets
                with executor.host_draws():
                    for _ in range(3):
                        next(datasets.train)
                        next(datasets.inner_valid)
    assert_same_theta(fused_state.theta, pool_state.theta)
    assert pool.header()["batches_drawn"] == fused.header()["batches_drawn"]
    # 4 steps x 2 estimators x 2 tasks x 3 steps of train and outer_valid, plus the 3 extra.
    assert fused.header()["batches_drawn"] == {
        "train": 48 + 3,
        "inner_valid": 3,
        "outer_valid": 48,
        "test": 0,
    }


def test_data_positions_count_from_where_the_iterators_were_when_the_run_began():
    """In-process workers sharing iterators already drawn from (as a dataset_lru_cache
    shared with an earlier run in the same process leaves them) read what the fused run reads."""

    def drawn_family():
        family = RegressionFamily()
        for _ in range(5):
            next(family.datasets.train), next(family.datasets.outer_valid)
        return family

    fused = LocalExecutor(build_learner(**build_args(drawn_family()), num_estimators=2), KEY)
    shared = drawn_family()
    estimators = build_learner(**build_args(shared)).estimators
    workers = [GradientWorker(estimators, w) for w in (0, 1)]
    pool = PoolExecutor(build_learner(**build_args(shared)), InProcessWorkers(workers), KEY)
    fused_state, pool_state = fused.init(INIT_KEY), pool.init(INIT_KEY)
    for step in range(2):
        fused_state, _ = fused.step(fused_state, step)
        pool_state, _ = pool.step(pool_state, step)
    assert_same_theta(fused_state.theta, pool_state.theta)
    assert pool.header()["batches_drawn"] == fused.header()["batches_drawn"]


def test_a_worker_never_reads_a_batch_twice():
    worker = GradientWorker(build_learner(**regression_recipe()).estimators)
    assert worker.draw_size() == {"train": 2 * 3, "outer_valid": 2 * 3}  # tasks x trunc_length
    theta = LOPT.init(KEY)
    keys = np.asarray(jax.random.split(KEY, 1))
    job = WorkerJob(0, 0, keys, keys, {"train": 12, "outer_valid": 12})
    result = worker.compute(theta, job)
    assert result.rebuilt and result.theta_step == 0 and len(result.estimates) == 1
    assert worker.compute(theta, job) is result  # a job sent again is answered, not rerun
    again = WorkerJob(1, 1, keys, keys, {"train": 6, "outer_valid": 6})
    with pytest.raises(RuntimeError, match="cannot go back"):
        worker.compute(theta, again)


# Asynchronous pools ---------------------------------------------------------------------------


def test_async_pool_applies_estimates_on_arrival_within_the_staleness_bound(tmp_path):
    # In-process workers answer in dispatch order, so with 3 workers an estimate
    # arrives 0, 1, then 2 steps after the theta it used, and 2 from then on.
    kw = dict(workers=3, worker_mode="async", num_steps=6, progress=False)
    loose = meta_train(tmp_path / "loose", **quadratic_recipe(), max_staleness=2, **kw)
    rows = metric_rows(tmp_path / "loose")
    assert [r["staleness"] for r in rows] == [0, 1, 2, 2, 2, 2]
    assert rows[-1]["stale_dropped"] == 0
    assert not np.allclose(flat(loose.state.theta), flat(LOPT.init(KEY)))

    tight = meta_train(tmp_path / "tight", **quadratic_recipe(), max_staleness=1, **kw)
    rows = metric_rows(tmp_path / "tight")
    assert max(r["staleness"] for r in rows) == 1
    assert rows[-1]["stale_dropped"] > 0  # the estimates 2 steps old were dropped and counted
    assert int(tight.state.step) == 6 and np.isfinite(flat(tight.state.theta)).all()


# Lost workers ---------------------------------------------------------------------------------


class LosingWorkers(InProcessWorkers):
    """Loses the results of chosen jobs, as if their worker died with them and restarted."""

    def __init__(self, workers, lose):
        super().__init__(workers)
        self.lose = lose  # (worker, n) -> lose that worker's n-th result (counting from 0)
        self.seen = [0] * len(workers)

    def result(self, future):
        result = future.result
        n = self.seen[result.worker]
        self.seen[result.worker] += 1
        if self.lose(result.worker, n):
            self.workers[result.worker].reset()  # the new process has no state
            raise WorkerLost(result.worker, "killed by the test")
        return result


def losing_executor(lose):
    learner = build_learner(**quadratic_recipe())
    workers = [GradientWorker(learner.estimators, w) for w in (0, 1)]
    return PoolExecutor(learner, LosingWorkers(workers, lose), KEY)


def test_a_lost_job_is_sent_again_and_the_restarted_worker_rebuilds_from_theta():
    steady = losing_executor(lambda w, n: False)
    lossy = losing_executor(lambda w, n: (w, n) == (1, 1))  # worker 1 dies in step 1
    steady_state, lossy_state = steady.init(INIT_KEY), lossy.init(INIT_KEY)
    for step in range(3):
        steady_state, _ = steady.step(steady_state, step)
        lossy_state, metrics = lossy.step(lossy_state, step)
    assert int(lossy_state.step) == 3
    assert metrics["worker_failures"] == 1 and metrics["worker_rebuilds"] == 1
    assert np.isfinite(flat(lossy_state.theta)).all()
    # The rebuilt worker restarted its inner problems: the runs part ways.
    assert not np.allclose(flat(lossy_state.theta), flat(steady_state.theta), rtol=1e-6)


def test_a_worker_lost_again_and_again_fails_the_run():
    executor = losing_executor(lambda w, n: w == 0)
    state = executor.init(INIT_KEY)
    with pytest.raises(WorkersFailed, match="worker 0 was lost 3 times in a row"):
        executor.step(state, 0)


# Checkpoints without worker states ------------------------------------------------------------


def test_a_pool_checkpoint_continues_the_same_in_either_executor(tmp_path):
    pool_dir, fused_dir = tmp_path / "pool", tmp_path / "fused"
    kw = dict(progress=False, checkpoint_every=100)
    meta_train(pool_dir, **regression_recipe(), workers=2, num_steps=3, **kw)
    shutil.copytree(pool_dir, fused_dir)
    pool = meta_train(pool_dir, **regression_recipe(), workers=2, num_steps=5, resume=True, **kw)
    fused = meta_train(
        fused_dir, **regression_recipe(), num_estimators=2, num_steps=5, resume=True, **kw
    )
    # Both rebuild the worker states from theta with the same keys and read on from
    # the same data positions.
    assert_same_theta(pool.state.theta, fused.state.theta)
    assert [r["step"] for r in metric_rows(fused_dir)] == [1, 2, 3, 4, 5]
    assert [r["meta_loss"] for r in metric_rows(fused_dir)] == [
        r["meta_loss"] for r in metric_rows(pool_dir)
    ]
    assert len(fused.state.worker_states) == 2
    # And a checkpoint with worker states continues in a pool.
    again = meta_train(fused_dir, **regression_recipe(), workers=2, num_steps=6, resume=True, **kw)
    assert int(again.state.step) == 6 and again.state.worker_states == ()


# Arguments ------------------------------------------------------------------------------------


def test_bad_worker_arguments_raise_clearly(tmp_path):
    with pytest.raises(ValueError, match="workers must be an integer >= 0"):
        meta_train(tmp_path / "a", **quadratic_recipe(), workers=-1, num_steps=1)
    with pytest.raises(ValueError, match="ray=True needs at least one worker"):
        meta_train(tmp_path / "b", **quadratic_recipe(), ray=True, num_steps=1)
    with pytest.raises(ValueError, match="worker_mode"):
        meta_train(tmp_path / "c", **quadratic_recipe(), workers=2, worker_mode="eager")
    with pytest.raises(ValueError, match="pass ray=True"):
        meta_train(tmp_path / "d", **quadratic_recipe(), workers=2, recipe=quadratic_recipe)
    with pytest.raises(ValueError, match="max_staleness"):
        losing = InProcessWorkers([])
        PoolExecutor(build_learner(**quadratic_recipe()), losing, KEY, max_staleness=-1)
