"""lopt's built-in datasets, registered under the ``dataset`` kind.

Each builder returns a ``lopt_core.Datasets`` (train, inner_valid, outer_valid,
test: disjoint, deterministic, endless random batches of one fixed shape) and
is cached through ``lopt_core.dataset_lru_cache``: equal arguments give the
very same object. See the Datasets section of docs/tasks.md.
"""

from __future__ import annotations

import lopt_core
from lopt_plugins.datasets._common import DATA_DIR_ENV, DatasetNotFoundError, RandomBatches
from lopt_plugins.datasets._image_files import read_idx
from lopt_plugins.datasets.images import cifar10, digits, fashion_mnist, kmnist, mnist
from lopt_plugins.datasets.tabular import breast_cancer, diabetes, iris, wine
from lopt_plugins.datasets.text import text

# Registered name -> builder; each is registered (and exported) under its function name.
BUILDERS = {
    f.__name__: f
    for f in (
        digits,
        mnist,
        fashion_mnist,
        kmnist,
        cifar10,
        text,
        wine,
        breast_cancer,
        iris,
        diabetes,
    )
}


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register every builder of ``BUILDERS`` as a ``dataset`` under its name."""
    for name, builder in BUILDERS.items():
        registry.register("dataset", name, builder)


__all__ = [
    "BUILDERS",
    "DATA_DIR_ENV",
    "DatasetNotFoundError",
    "RandomBatches",
    "lopt_register",
    "read_idx",
    *BUILDERS,
]
