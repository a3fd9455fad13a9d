"""pes_mlp: meta-train MLPLOpt with truncated PES on one MLP classifier (64 -> 32 relu -> 10).

The data is synthetic: 10,000 examples with inputs ~ N(0, 1) of shape 8x8x1 and
labels the argmax of a fixed random linear teacher, batch 128; the task is
wrapped with ``single_task_to_family``. Everything else as pes_quadratic:
num_tasks=8, ConstantTruncationSchedule(50), random initial offsets up to 50,
TruncatedPES(trunc_length=10, std=0.01), outer Adam(1e-3), 200 outer steps.
Prints one JSON line (see benchmarks/README.md).
"""

import time

_t0 = time.perf_counter()
import numpy as np  # noqa: E402
import pes_quadratic  # noqa: E402  (optax, lopt_core.outer, MLPLOpt)

from lopt_core import Datasets, single_task_to_family  # noqa: E402
from lopt_plugins.tasks.image_mlp import ImageMLPTask  # noqa: E402

IMPORT_S = time.perf_counter() - _t0

NUM_EXAMPLES = 10_000
BATCH_SIZE = 128


class _Batches:
    """An endless iterator of random batches (with replacement) from fixed arrays."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int):
        self.images, self.labels = images, labels
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        rows = self.rng.integers(0, len(self.labels), BATCH_SIZE)
        return {"image": self.images[rows], "label": self.labels[rows]}


def synthetic_datasets(seed: int = 0) -> Datasets:
    """Inputs N(0, 1) of shape 8x8x1; labels: argmax of a fixed random linear teacher."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((NUM_EXAMPLES, 8, 8, 1)).astype(np.float32)
    teacher = rng.standard_normal((64, 10)).astype(np.float32)
    labels = np.argmax(images.reshape(NUM_EXAMPLES, 64) @ teacher, axis=1).astype(np.int32)
    splits = ("train", "inner_valid", "outer_valid", "test")
    iterators = {s: _Batches(images, labels, seed + 1 + i) for i, s in enumerate(splits)}
    return Datasets(
        **iterators,
        extra_info={"name": "synthetic", "num_classes": 10, "image_shape": (8, 8, 1)},
    )


def family(hidden_size: int = 32):
    """The benchmark's task family: one 64 -> 32 relu -> 10 MLP on the synthetic data
    (``hidden_size`` other than 32 for the scaling benchmark)."""
    task = ImageMLPTask(synthetic_datasets(), image_size=(8, 8), hidden_sizes=(hidden_size,))
    return single_task_to_family(task)


if __name__ == "__main__":
    pes_quadratic.IMPORT_S = IMPORT_S
    pes_quadratic.main("pes_mlp", estimator="pes", family=family())
