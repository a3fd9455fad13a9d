"""The reference library's side of ``benchmarks/scaling.py`` (run with its interpreter).

    REFVENV/bin/python benchmarks/reference/scaling_pes_mlp.py --num-tasks 64 --hidden 32

The pes_mlp workload of ``../shared/reference_bench/pes_mlp.py`` (google/learned_optimization's
``mlp_lopt.MLPLOpt``, ``VectorizedLOptTruncatedStep``, ``TruncatedPES(trunc_length=10)``,
``SingleMachineGradientLearner`` with Adam(1e-3), a haiku MLP 64 -> H relu -> 10 on
10,000 synthetic examples, batch 128), with the number of tasks and the hidden width as
arguments. Only the reference's public API is called; it is never imported by lopt or its
tests. Prints one JSON line with the fields of ``scaling.py``. See ``benchmarks/README.md``
for building an environment where the reference runs.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import haiku as hk  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import core  # noqa: E402
from learned_optimization.learned_optimizers import mlp_lopt  # noqa: E402
from learned_optimization.optimizers import base as opt_base  # noqa: E402
from learned_optimization.outer_trainers import (  # noqa: E402
    gradient_learner,
    lopt_truncated_step,
    truncated_pes,
    truncation_schedule,
)
from learned_optimization.tasks import base as tasks_base  # noqa: E402
from learned_optimization.tasks.datasets import base as datasets_base  # noqa: E402

BATCH = 128
NUM_EXAMPLES = 10_000


def synthetic_datasets(seed: int = 0):
    """Inputs N(0, 1) of shape 8x8x1; labels: argmax of a fixed random linear teacher."""
    rng = np.random.RandomState(seed)
    images = rng.normal(size=(NUM_EXAMPLES, 8, 8, 1)).astype(np.float32)
    teacher = rng.normal(size=(64, 10)).astype(np.float32)
    labels = np.argmax(images.reshape(NUM_EXAMPLES, -1) @ teacher, axis=1).astype(np.int32)

    def batches(split_seed):
        r = np.random.RandomState(split_seed)
        while True:
            rows = r.randint(0, NUM_EXAMPLES, BATCH)
            yield {"image": images[rows], "label": labels[rows]}

    abstract = {
        "image": core.ShapedArray((BATCH, 8, 8, 1), jnp.float32),
        "label": core.ShapedArray((BATCH,), jnp.int32),
    }
    return datasets_base.Datasets(
        train=batches(1),
        inner_valid=batches(2),
        outer_valid=batches(3),
        test=batches(4),
        extra_info={"num_classes": 10},
        abstract_batch=abstract,
    )


class SyntheticMLPTask(tasks_base.Task):
    """64 -> hidden relu -> 10 MLP, softmax cross-entropy (haiku)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.datasets = synthetic_datasets()

        def forward(x):
            x = jnp.reshape(x, [x.shape[0], -1])
            return hk.nets.MLP([hidden, 10], activation=jax.nn.relu)(x)

        self._mod = hk.without_apply_rng(hk.transform(forward))

    def init(self, key):
        return self._mod.init(key, jnp.ones((BATCH, 8, 8, 1), jnp.float32))

    def loss(self, params, key, data):
        logits = self._mod.apply(params, data["image"])
        labels = jax.nn.one_hot(data["label"], 10)
        return jnp.mean(tasks_base.softmax_cross_entropy(logits=logits, labels=labels))

    def normalizer(self, loss):
        top = 1.5 * np.log(10)
        return jnp.nan_to_num(jnp.clip(loss, 0, top), nan=top, posinf=top, neginf=top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-tasks", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--steps", type=int, default=7)
    args = parser.parse_args()
    lopt = mlp_lopt.MLPLOpt()
    family = tasks_base.single_task_to_family(SyntheticMLPTask(args.hidden))
    step = lopt_truncated_step.VectorizedLOptTruncatedStep(
        family,
        lopt,
        truncation_schedule.ConstantTruncationSchedule(50),
        num_tasks=args.num_tasks,
        random_initial_iteration_offset=50,
    )
    estimator = truncated_pes.TruncatedPES(truncated_step=step, trunc_length=10, std=0.01)
    learner = gradient_learner.SingleMachineGradientLearner(lopt, [estimator], opt_base.Adam(1e-3))
    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    state = jax.block_until_ready(learner.init(key))
    init_s = time.perf_counter() - t0
    wall, cpu = [], []
    for i in range(max(3, args.steps)):
        t0, c0 = time.perf_counter(), time.process_time()
        state, loss, _ = learner.update(state, jax.random.fold_in(key, i), with_metrics=False)
        jax.block_until_ready((state, loss))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    row = {
        "benchmark": "scaling",
        "library": "reference",
        "num_tasks": args.num_tasks,
        "hidden": args.hidden,
        "inner_params": 75 * args.hidden + 10,
        "init_s": round(init_s, 4),
        "first_outer_step_s": round(wall[0], 4),
        "steady_s_per_outer_step": round(statistics.median(wall[2:]), 6),
        "steady_cpu_s_per_outer_step": round(statistics.median(cpu[2:]), 6),
        "steady_steps_measured": len(wall[2:]),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "jax": jax.__version__,
    }
    sys.stdout.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
