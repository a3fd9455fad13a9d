"""Baselines of ``lopt bench``: hand-designed optimizers tuned per task, and their archive.

Each baseline is a factory and a grid of hyper-parameter settings. On a suite
task it is tuned on the inner_valid split (runs on the ``EVAL_TUNING``
stream: other inits and data than the reported runs), then the chosen setting
is trained on the ``EVAL_HELD_OUT`` stream, the same runs every optimizer
benched on that task gets, and its test curves are kept. The sweep and the
reported runs share one compiled program per baseline and task.

Results go to an on-disk archive (one JSON file per task and baseline) keyed
by everything that determines them, so a second ``lopt bench`` reads them
instead of training again. Suites may ship an archive in their package.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lopt_core.bench.suites import SuiteTask
from lopt_core.evaluation import TrainingCurves, best_setting, log_grid, sweep_curves
from lopt_core.files import strict_json, user_cache_dir, write_atomic
from lopt_core.keys import EVAL_HELD_OUT, EVAL_TUNING, tagged
from lopt_core.optimizers import SGDM, Adam, Optimizer, WarmupCosineAdamW
from lopt_core.version import __version__

# Bump when the tuning or reporting protocol changes: old archive entries stop matching.
PROTOCOL = 2
NUM_EVAL_BATCHES = 4
ENV_ARCHIVE = "LOPT_BASELINE_ARCHIVE"


@dataclasses.dataclass(frozen=True)
class Fixed:
    """``factory`` with some arguments fixed; equal when they are (so sweeps share programs)."""

    factory: Callable[..., Optimizer]
    fixed: tuple[tuple[str, Any], ...] = ()

    def __call__(self, **kwargs: Any) -> Optimizer:
        return self.factory(**dict(self.fixed), **kwargs)

    @property
    def name(self) -> str:
        """The factory's name."""
        return self.factory.__name__


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A hand-designed optimizer and the settings it is tuned over (one setting: untuned).

    ``make(steps)`` gives the factory for a budget of ``steps`` (schedules
    need it); each setting is a dict of its keyword arguments.
    """

    name: str
    make: Callable[[int], Fixed]
    settings: tuple[dict[str, float], ...]

    @property
    def tuned(self) -> bool:
        """Whether the baseline is tuned (has more than one setting)."""
        return len(self.settings) > 1

    @property
    def num_runs(self) -> int:
        """Training calls it takes on one task: the sweep (if tuned) and the reported runs."""
        return len(self.settings) + 1 if self.tuned else 1


def _grid(**axes: Sequence[float]) -> tuple[dict[str, float], ...]:
    names, values = list(axes), [list(v) for v in axes.values()]
    points = np.stack(np.meshgrid(*values, indexing="ij"), -1).reshape(-1, len(names))
    return tuple({n: float(v) for n, v in zip(names, p, strict=True)} for p in points)


def _warmup_cosine(steps: int) -> Fixed:
    warmup = max(1, steps // 20)
    return Fixed(WarmupCosineAdamW, (("total_steps", steps), ("warmup_steps", warmup)))


ADAM_1E3 = Baseline("Adam lr=1e-3", lambda steps: Fixed(Adam), ({"learning_rate": 1e-3},))
BASELINES: tuple[Baseline, ...] = (
    ADAM_1E3,
    Baseline(
        "Adam (tuned)", lambda steps: Fixed(Adam), _grid(learning_rate=log_grid(1e-4, 1e-1, 7))
    ),
    Baseline(
        "AdamW warmup+cosine (tuned)",
        _warmup_cosine,
        _grid(learning_rate=log_grid(1e-4, 1e-1, 7), weight_decay=(1e-4, 1e-1)),
    ),
    Baseline(
        "SGDM (tuned)", lambda steps: Fixed(SGDM), _grid(learning_rate=log_grid(1e-3, 1.0, 7))
    ),
)


def archive_key(task: SuiteTask, baseline: Baseline) -> dict[str, Any]:
    """Everything that determines a baseline's results on ``task``."""
    return {
        "protocol": PROTOCOL,
        "lopt": __version__,
        **task.key_fields(),
        "baseline": baseline.name,
        "settings": list(baseline.settings),
        "num_eval_batches": NUM_EVAL_BATCHES,
    }


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _file_name(key: dict[str, Any]) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{key['task']}-{key['baseline']}").strip("_")
    return f"{slug}-{_digest(key)}.json"


class BaselineArchive:
    """Baseline results on disk: read from ``shipped`` folders, read and written in ``cache``.

    ``cache`` defaults to ``$LOPT_BASELINE_ARCHIVE``, else ``baselines/`` in
    lopt's user cache folder (``lopt_core.files.user_cache_dir``).
    """

    def __init__(self, cache: str | os.PathLike | None = None, shipped: Sequence[os.PathLike] = ()):
        default = os.environ.get(ENV_ARCHIVE) or user_cache_dir("baselines")
        self.cache = Path(cache if cache is not None else default)
        self.shipped = [Path(p) for p in shipped]

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The stored record of ``key`` (shipped first, then the cache), or None."""
        name = _file_name(key)
        for folder in [*self.shipped, self.cache]:
            path = folder / name
            if path.is_file():
                record = json.loads(path.read_text())
                if record.get("key") == json.loads(json.dumps(key)):
                    return record
        return None

    def put(self, key: dict[str, Any], record: dict[str, Any]) -> Path:
        """Store ``record`` under ``key`` in the cache (atomically); returns its path."""
        text = json.dumps(strict_json({"key": key, **record}), indent=1, allow_nan=False)
        return write_atomic(self.cache / _file_name(key), text + "\n")


def curves_record(curves: TrainingCurves) -> dict[str, Any]:
    """The archived form of reported curves: steps, test and inner_valid losses per run."""
    return {
        "eval_steps": curves.eval_steps.tolist(),
        "test_loss": curves.losses("test").tolist(),
        "inner_valid_loss": curves.losses("inner_valid").tolist(),
    }


def curves_from_record(name: str, record: dict[str, Any]) -> TrainingCurves:
    """``TrainingCurves`` (test and inner_valid only) from an archived record."""
    as_array = lambda x: np.asarray([[np.nan if v is None else v for v in r] for r in x], float)
    test = as_array(record["test_loss"])
    return TrainingCurves(
        name=name,
        train_loss=np.full((test.shape[0], 0), np.nan),
        eval_steps=np.asarray(record["eval_steps"]),
        inner_valid_loss=as_array(record["inner_valid_loss"]),
        test_loss=test,
    )


def held_out_key(task: SuiteTask) -> jax.Array:
    """The key of the runs every optimizer benched on ``task`` reports (same inits and data)."""
    return tagged(jax.random.PRNGKey(0), EVAL_HELD_OUT)


def run_options(task: SuiteTask) -> dict[str, Any]:
    """The training options shared by every run on ``task`` (one program per optimizer)."""
    return dict(eval_every=task.eval_every, num_eval_batches=NUM_EVAL_BATCHES)


def compute_baseline(
    task: SuiteTask,
    baseline: Baseline,
    progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Tune ``baseline`` on ``task`` (inner_valid) and train its choice on the held-out runs.

    The sweep's settings share one draw of batches; the held-out runs read the
    task's data from its start, as every optimizer benched on it does.
    """
    make = baseline.make(task.steps)
    options = dict(num_runs=task.seeds, progress=progress, **run_options(task))
    chosen, scores = baseline.settings[0], [None]
    if baseline.tuned:
        tuning = tagged(jax.random.PRNGKey(0), EVAL_TUNING)
        sweep = sweep_curves(make, task.build(), tuning, baseline.settings, task.steps, **options)
        index, scores = best_setting(sweep)
        chosen = baseline.settings[index]
    held_out = held_out_key(task)
    (curves,) = sweep_curves(make, task.build(), held_out, [chosen], task.steps, **options)
    return {"chosen": chosen, "tuning_scores": scores, **curves_record(curves)}


def baseline_curves(
    task: SuiteTask,
    archive: BaselineArchive,
    baselines: Sequence[Baseline] = BASELINES,
    progress: Callable[[int], None] | None = None,
    recompute: bool = False,
) -> dict[str, tuple[TrainingCurves, dict[str, Any]]]:
    """Each baseline's reported curves and record on ``task``: from the archive, else trained
    (and archived). ``progress(n)`` is told how many runs each baseline took or skipped."""
    out = {}
    for baseline in baselines:
        key = archive_key(task, baseline)
        record = None if recompute else archive.get(key)
        if record is None:
            tick = (lambda: progress(1)) if progress else None
            record = compute_baseline(task, baseline, tick)
            archive.put(key, record)
        elif progress:
            progress(baseline.num_runs)
        out[baseline.name] = (curves_from_record(baseline.name, record), record)
    return out
