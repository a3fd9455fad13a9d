"""Meta-training on a local Ray cluster of 2 CPUs: a learner actor and 2 worker actors.

Synchronous workers give the single-process theta (data-free and data-backed
families), asynchronous ones make progress within the staleness bound, a killed
worker is restarted and the run finishes, and `lopt train --ray` works.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from helpers import TESTS_DIR, assert_same_theta, checkpoint_header, flat, metric_rows
from toys import RECIPE_LOPT, RECIPES, quadratic_recipe, regression_recipe, write_tiny_gin

ray = pytest.importorskip(
    "ray", reason="the Ray backend is optional: pip install 'lopt[ray]' (the test extra has it)"
)

from lopt_core import meta_train  # noqa: E402
from lopt_core.distributed import init_ray  # noqa: E402  (after the skip on purpose)

KEY = jax.random.PRNGKey(0)
LOPT = RECIPE_LOPT


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local Ray cluster for the module: 2 CPUs, no dashboard, JAX on CPU in the actors."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "JAX_PLATFORMS")}
    # Actors inherit this environment: they import the recipes from tests/toys.py
    # (and the XLA_FLAGS conftest set).
    paths = (str(TESTS_DIR), saved["PYTHONPATH"])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    os.environ["JAX_PLATFORMS"] = "cpu"
    assert init_ray(num_cpus=2), "Ray was already initialized in this process"
    yield
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def ray_run(output_dir, recipe, **kwargs):
    return meta_train(output_dir, **recipe(), ray=True, recipe=recipe, progress=False, **kwargs)


@pytest.mark.parametrize("family", RECIPES)
def test_sync_two_workers_give_the_single_process_theta(tmp_path, family):
    recipe = RECIPES[family]
    kw = dict(num_steps=4, validate_every=2, validation_tasks=2)
    single = meta_train(tmp_path / "single", **recipe(), num_estimators=2, progress=False, **kw)
    on_ray = ray_run(tmp_path / "ray", recipe, workers=2, **kw)

    assert_same_theta(single.state.theta, on_ray.state.theta)
    ray_rows, single_rows = metric_rows(tmp_path / "ray"), metric_rows(tmp_path / "single")
    assert [r["meta_loss"] for r in ray_rows] == [r["meta_loss"] for r in single_rows]
    assert (tmp_path / "ray" / "validation.jsonl").read_text() == (
        tmp_path / "single" / "validation.jsonl"
    ).read_text()
    assert ray_rows[-1]["worker_failures"] == 0 and ray_rows[-1]["staleness"] == 0
    assert not np.allclose(flat(on_ray.state.theta), flat(LOPT.init(KEY)))


def test_async_workers_make_progress_within_the_staleness_bound(tmp_path):
    # max_staleness=0: an estimate is applied only if no other was applied since its
    # theta was sent. How many are dropped depends on timing (a worker still compiling
    # may deliver only after the run ends); test_executor.py counts drops exactly.
    result = ray_run(
        tmp_path, quadratic_recipe, workers=2, worker_mode="async", max_staleness=0, num_steps=8
    )
    rows = metric_rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert all(r["staleness"] == 0 for r in rows)
    assert int(result.state.step) == 8 and np.isfinite(flat(result.state.theta)).all()
    assert not np.allclose(flat(result.state.theta), flat(LOPT.init(KEY)))
    assert np.isfinite([r["meta_loss"] for r in rows]).all()


def _wait_for_rows(metrics_path: Path, rows: int, run_over: threading.Event) -> bool:
    """Wait until ``rows`` metric rows are written; False if the run ended first."""
    while not run_over.is_set():
        if metrics_path.is_file() and len(metrics_path.read_text().splitlines()) >= rows:
            return True
        time.sleep(0.01)
    return False


@contextlib.contextmanager
def _in_a_thread(target, *args):
    """Run ``target(*args, run_over)`` in a thread while the body runs; set ``run_over`` after."""
    run_over = threading.Event()
    thread = threading.Thread(target=target, args=(*args, run_over))
    thread.start()
    try:
        yield
    finally:
        run_over.set()
        thread.join()


def _kill_worker_when(metrics_path: Path, rows: int, killed: list, run_over) -> None:
    """Kill worker 0 (Ray restarts it) once ``rows`` metric rows are written."""
    if not _wait_for_rows(metrics_path, rows, run_over):
        return
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].endswith("-worker-0"):
            try:  # (a worker of an earlier run may still be listed, but dead)
                handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
                ray.kill(handle, no_restart=False)
            except ValueError:
                continue
            killed.append(actor["name"])


def test_a_killed_worker_is_restarted_and_the_run_finishes(tmp_path):
    killed: list[str] = []
    with _in_a_thread(_kill_worker_when, tmp_path / "metrics.jsonl", 3, killed):
        result = ray_run(tmp_path, quadratic_recipe, workers=2, num_steps=30, checkpoint_every=10)
    assert killed, "the test never got to kill a worker"
    rows = metric_rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 31))
    # Killed mid-job, the job was lost and sent again; killed between jobs, the next
    # one waited for the restart. Either way the new process rebuilt its state from theta.
    assert rows[-1]["worker_rebuilds"] == 1
    assert int(result.state.step) == 30 and np.isfinite(flat(result.state.theta)).all()


def _interrupt_when(metrics_path: Path, rows: int, run_over: threading.Event) -> None:
    """Ctrl-C (KeyboardInterrupt in the main thread) once ``rows`` metric rows are written."""
    if _wait_for_rows(metrics_path, rows, run_over):
        _thread.interrupt_main()


def test_ctrl_c_stops_the_learner_with_a_checkpoint_that_resumes_anywhere(tmp_path):
    # interrupt_main does nothing unless Python's own SIGINT handler is installed, and
    # an earlier test (or Ray) may have replaced it: install it, as a terminal has it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_and_resume(tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_and_resume(tmp_path):
    with _in_a_thread(_interrupt_when, tmp_path / "metrics.jsonl", 3):
        # Far more steps than the interrupt needs to land, so a fast machine cannot
        # finish the run first (steps take ~30 ms; the driver polls every 0.5 s).
        cut = ray_run(tmp_path, quadratic_recipe, workers=2, num_steps=5000, checkpoint_every=1000)
    assert cut.interrupted and 3 <= int(cut.state.step) < 5000
    step = int(cut.state.step)
    assert checkpoint_header(tmp_path, cut.state)["step"] == step
    assert [r["step"] for r in metric_rows(tmp_path)] == list(range(1, step + 1))
    # The learner's checkpoint (no worker states) continues in a single process.
    done = meta_train(
        tmp_path,
        **quadratic_recipe(),
        num_estimators=2,
        num_steps=step + 2,
        resume=True,
        progress=False,
    )
    assert int(done.state.step) == step + 2 and len(done.state.worker_states) == 2
    assert [r["step"] for r in metric_rows(tmp_path)] == list(range(1, step + 3))


def test_lopt_train_ray_runs_and_resumes(tmp_path):
    from lopt_core.cli import main

    config = write_tiny_gin(
        tmp_path / "tiny.gin", "meta_train.num_steps = 3", "meta_train.checkpoint_every = 2"
    )
    out = tmp_path / "run"
    args = ["train", str(config), "-o", str(out), "--no-progress", "--ray", "--workers", "2"]
    assert main(args) == 0
    assert "meta_train.num_steps = 3" in (out / "operative_config.gin").read_text()
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
    ]
    assert main(args + ["--resume", "-p", "meta_train.num_steps = 5"]) == 0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert "stale_dropped" in rows[-1]  # the rows of a worker pool


def test_objects_that_cannot_travel_ask_for_a_recipe(tmp_path):
    # The regression family's data iterators are generators, which cannot be pickled.
    with pytest.raises(TypeError, match="recipe="):
        meta_train(tmp_path, **regression_recipe(), ray=True, workers=2, progress=False)
