"""Sharding the task axis over several devices equals running on one.

jax fixes its device count when it starts, and the rest of the suite runs on one
CPU device, so these checks run in a fresh Python process started with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (two CPU "devices").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from helpers import TESTS_DIR
from lopt_core.sharding import constrain, put, resolve_mesh, task_mesh

# Runs in the 2-device process; prints one JSON object of findings.
_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    import lopt_core
    from lopt_core import Datasets, Task, TaskFamily
    from lopt_core.outer import (
        ConstantTruncationSchedule, GradientLearner, TruncatedPES, VectorizedLOptTruncatedStep,
    )
    from toys import ToyLearnableSGD

    assert len(jax.devices()) == 2, jax.devices()
    out = {}

    def max_diff(a, b):
        la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
        assert len(la) == len(lb)
        return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                   for x, y in zip(la, lb))

    def devices_of(tree):
        return sorted({len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(tree)
                       if hasattr(x, "sharding") and x.ndim})

    def batches():
        rng = np.random.default_rng(0)
        while True:
            x = rng.normal(size=(4, 3)).astype(np.float32)
            yield {"x": x, "y": x.sum(axis=1)}

    class Regression(Task):
        def __init__(self, cfg):
            self.cfg = cfg
        def init(self, key):
            return jax.random.normal(key, (3,))
        def loss(self, params, key, batch):
            pred = batch["x"] @ params + self.cfg["shift"]
            return jnp.mean(jnp.square(pred - batch["y"]))

    class Family(TaskFamily):
        def __init__(self):
            self.datasets = Datasets(batches(), batches(), batches(), batches())
        def sample(self, key):
            return {"shift": jax.random.normal(key, ())}
        def task_fn(self, cfg):
            return Regression(cfg)

    # train_family: a data-backed family, task axis over 2 devices vs one device.
    family = Family()
    runs = {}
    for mesh in ("auto", None):
        family.datasets = Datasets(batches(), batches(), batches(), batches())
        runs[mesh] = lopt_core.train_family(
            family, lopt_core.Adam(0.05), jax.random.PRNGKey(0), 4, 6, eval_every=3, mesh=mesh
        )
    out["train_family_diff"] = max_diff(runs["auto"], runs[None])
    out["train_family_devices"] = devices_of(runs["auto"].train_loss)
    out["train_family_single_devices"] = devices_of(runs[None].train_loss)
    out["train_family_loss_moves"] = float(
        np.abs(np.asarray(runs[None].train_loss[:, -1] - runs[None].train_loss[:, 0])).max()
    )

    # Meta-training: PES on the same family, 3 outer steps, sharded vs not.
    lopt = ToyLearnableSGD(initial_lr=0.1)
    thetas, inner_devices = {}, {}
    for mesh in ("auto", None):
        family.datasets = Datasets(batches(), batches(), batches(), batches())
        step = VectorizedLOptTruncatedStep(
            family, lopt, ConstantTruncationSchedule(4), num_tasks=2,
            random_initial_iteration_offset=4, mesh=mesh,
        )
        learner = GradientLearner(lopt, [TruncatedPES(step, trunc_length=2)], optax.adam(0.01))
        state = learner.init(jax.random.PRNGKey(1))
        for i in range(3):
            state, metrics = learner.update(state, jax.random.PRNGKey(10 + i))
        thetas[mesh] = (state.theta, state.worker_states, metrics)
        inner_devices[mesh] = devices_of(state.worker_states[0].inner.opt_state)
    out["pes_diff"] = max_diff(thetas["auto"], thetas[None])
    out["pes_theta_moved"] = abs(float(thetas[None][0]["log_lr"]) - float(np.log(0.1)))
    out["pes_inner_devices"] = inner_devices["auto"]
    out["pes_single_inner_devices"] = inner_devices[None]
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def two_device_run():
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count", "--_x")
    env["XLA_FLAGS"] = (
        flags + " --xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    # The script imports tests/toys.py.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT") :])


def test_train_family_sharded_over_two_devices_equals_one_device(two_device_run):
    assert two_device_run["train_family_devices"] == [2]  # really split over both
    assert two_device_run["train_family_single_devices"] == [1]
    assert two_device_run["train_family_loss_moves"] > 1e-3  # training happened
    assert two_device_run["train_family_diff"] < 1e-6


def test_pes_meta_training_sharded_over_two_devices_equals_one_device(two_device_run):
    assert two_device_run["pes_inner_devices"] == [2]  # particles split over both devices
    assert two_device_run["pes_single_inner_devices"] == [1]
    assert two_device_run["pes_theta_moved"] > 1e-4  # three outer steps changed theta
    assert two_device_run["pes_diff"] < 1e-6


# In-process checks (one device): the mesh argument and the helpers.


def test_resolve_mesh_auto_runs_unsharded_on_one_device():
    assert len(jax.local_devices()) == 1
    assert resolve_mesh("auto", 8) is None
    assert resolve_mesh(None, 8) is None
    mesh = task_mesh()
    assert resolve_mesh(mesh, 8) is mesh  # one device divides everything


def test_resolve_mesh_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'auto', None or a jax.sharding.Mesh"):
        resolve_mesh("all", 4)
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        resolve_mesh(2, 4)
    other = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("batch",))
    with pytest.raises(ValueError, match="axis named 'tasks'"):
        resolve_mesh(other, 4)


def test_constrain_and_put_leave_trees_alone_without_a_mesh():
    tree = {"a": np.ones((4, 2)), "b": 3.0}
    assert put(tree, None) is tree
    assert constrain(tree, None) is tree
    placed = put({"a": np.ones((4, 2)), "s": np.float32(1)}, task_mesh())
    assert placed["a"].sharding.spec == jax.sharding.PartitionSpec("tasks", None)
    assert isinstance(placed["s"], np.floating)  # scalars are not placed
