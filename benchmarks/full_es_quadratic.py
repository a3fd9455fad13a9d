"""full_es_quadratic: as pes_quadratic, with FullES(std=0.01, loss_type="avg") over 50 steps.

Prints one JSON line (see benchmarks/README.md).
"""

import time

_t0 = time.perf_counter()
import pes_quadratic  # noqa: E402  (imports optax, lopt_core.outer and the plugins)

IMPORT_S = time.perf_counter() - _t0

if __name__ == "__main__":
    pes_quadratic.IMPORT_S = IMPORT_S
    pes_quadratic.main("full_es_quadratic", estimator="full_es")
