"""``lopt bench``: score optimizers on held-out suites against baselines tuned per task.

- ``Suite``, ``SuiteTask``, ``get_suite``: suites (plugin kind ``suite``);
- ``BASELINES``, ``Baseline``, ``BaselineArchive``: tuned baselines and their archive;
- ``Candidate``, ``bench``, ``aggregate``, ``TaskResult``: running and scoring;
- ``lopt_core.bench.scores``: the normalization, speedup, IQM and bootstrap.

See docs/bench.md.
"""

from lopt_core.bench.baselines import BASELINES, Baseline, BaselineArchive
from lopt_core.bench.runner import Candidate, TaskResult, aggregate, bench, bench_task
from lopt_core.bench.suites import Suite, SuiteTask, get_suite

__all__ = [
    "BASELINES",
    "Baseline",
    "BaselineArchive",
    "Candidate",
    "Suite",
    "SuiteTask",
    "TaskResult",
    "aggregate",
    "bench",
    "bench_task",
    "get_suite",
]
