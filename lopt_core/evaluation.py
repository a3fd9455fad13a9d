"""Evaluation: learning curves over seeds, summaries, and learning-rate tuning on inner_valid.

Built on ``train_family``: the seeds of one task (or the sampled tasks of a
family) train as one vmapped, compiled call. Tuning reads only the
inner_valid split; the test split is for reporting.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt_core.learned.base import LearnedOptimizer
from lopt_core.optimizers.base import Optimizer
from lopt_core.static_graph import sample_cfgs
from lopt_core.tasks import Task, TaskFamily, as_family
from lopt_core.training import EVAL_SPLITS, TrainResult, draw_family_batches, train_family


@dataclasses.dataclass
class TrainingCurves:
    """Learning curves of one optimizer over several runs (seeds or sampled tasks).

    ``train_loss`` is ``[runs, num_steps]``; evaluation arrays are
    ``[runs, len(eval_steps)]`` (None for splits that were not evaluated);
    ``*_aux`` hold the task's extras (e.g. ``accuracy``) the same way.
    """

    name: str
    train_loss: np.ndarray
    eval_steps: np.ndarray
    inner_valid_loss: np.ndarray | None
    test_loss: np.ndarray | None
    inner_valid_aux: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    test_aux: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_result(cls, name: str, result: TrainResult) -> TrainingCurves:
        """Curves from a (vmapped) ``TrainResult``, copied to host numpy arrays."""
        host = jax.device_get(result)
        as_np = lambda x: None if x is None else np.asarray(x)
        return cls(
            name=name,
            train_loss=np.asarray(host.train_loss),
            eval_steps=np.asarray(host.eval_steps)[0],
            inner_valid_loss=as_np(host.inner_valid_loss),
            test_loss=as_np(host.test_loss),
            inner_valid_aux={k: np.asarray(v) for k, v in (host.inner_valid_aux or {}).items()},
            test_aux={k: np.asarray(v) for k, v in (host.test_aux or {}).items()},
        )

    def at_step(self, split: str, step: int) -> np.ndarray:
        """Per-run loss of ``split`` at evaluation step ``step`` (must be an evaluation step)."""
        losses = self.losses(split)
        matches = np.flatnonzero(self.eval_steps == step)
        if not len(matches):
            raise ValueError(
                f"step {step} is not an evaluation step of {self.name}; evaluated at "
                f"{self.eval_steps.tolist()}."
            )
        return losses[:, matches[0]]

    def losses(self, split: str) -> np.ndarray:
        """Per-run losses of ``split`` at every evaluation step, ``[runs, len(eval_steps)]``."""
        losses = getattr(self, f"{split}_loss", None) if split in EVAL_SPLITS else None
        if losses is None:
            raise ValueError(f"{self.name} has no {split!r} losses (evaluated: {self.splits()}).")
        return losses

    def splits(self) -> list[str]:
        """The evaluation splits these curves hold."""
        return [s for s in EVAL_SPLITS if getattr(self, f"{s}_loss") is not None]

    def summary(self, split: str = "test", target_loss: float | None = None) -> dict[str, Any]:
        """Final and best loss of ``split`` (mean and sd over runs) and steps to ``target_loss``.

        ``steps_to_target`` is, per run, the first evaluation step whose loss is
        at or below the target (None for runs that never reach it).
        """
        losses = self.losses(split)
        final, best = losses[:, -1], np.nanmin(np.where(np.isfinite(losses), losses, np.nan), 1)
        out = {
            "name": self.name,
            "split": split,
            "runs": int(losses.shape[0]),
            "num_steps": int(self.eval_steps[-1]),
            "final_mean": _finite_mean(final),
            "final_sd": _finite_sd(final),
            "best_mean": _finite_mean(best),
            "best_sd": _finite_sd(best),
            "diverged_runs": int(np.sum(~np.isfinite(final))),
        }
        for name, values in getattr(self, f"{split}_aux").items():
            out[f"final_{name}_mean"] = _finite_mean(values[:, -1])
        if target_loss is not None:
            reached = losses <= target_loss
            out["target_loss"] = float(target_loss)
            out["steps_to_target"] = [
                int(self.eval_steps[np.argmax(r)]) if r.any() else None for r in reached
            ]
        return out


def _finite_mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.mean(x)) if x.size else math.inf


def _finite_sd(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.std(x)) if x.size > 1 else 0.0


def _name_of(optimizer: Any) -> str:
    return repr(optimizer) if isinstance(optimizer, Optimizer) else optimizer.name


def multi_task_training_curves(
    family: TaskFamily,
    optimizer: Optimizer | LearnedOptimizer,
    key: jax.Array,
    num_tasks: int,
    num_steps: int,
    eval_every: int | None = None,
    num_eval_batches: int = 1,
    eval_splits: Sequence[str] = EVAL_SPLITS,
    theta: Any = None,
    name: str | None = None,
    batches: Any = None,
) -> TrainingCurves:
    """Train ``num_tasks`` tasks sampled from ``family`` (vmapped) and return their curves.

    ``batches``: ``draw_family_batches`` of the same arguments (see ``train_family``).
    """
    result = train_family(
        family,
        optimizer,
        key,
        num_tasks,
        num_steps,
        eval_every=eval_every,
        num_eval_batches=num_eval_batches,
        eval_splits=tuple(eval_splits),
        theta=theta,
        batches=batches,
    )
    return TrainingCurves.from_result(name or _name_of(optimizer), result)


def normalized_losses(
    family: TaskFamily, key: jax.Array, num_tasks: int, losses: np.ndarray
) -> np.ndarray:
    """``losses`` of the ``num_tasks`` tasks ``multi_task_training_curves(family, key, ...)``
    trained, each through its own task's ``normalizer``."""
    # train_family draws its cfgs from the first half of its key.
    cfgs = sample_cfgs(family, jax.random.split(key)[0], num_tasks)
    normalize = jax.vmap(lambda cfg, loss: family.eval_task_fn(cfg).normalizer(loss))
    return np.asarray(normalize(cfgs, jnp.asarray(losses, jnp.float32)))


def single_task_training_curves(
    task: Task,
    optimizer: Optimizer | LearnedOptimizer,
    key: jax.Array,
    num_steps: int,
    num_seeds: int = 5,
    **options: Any,
) -> TrainingCurves:
    """Train ``task`` from ``num_seeds`` seeds (vmapped; own init and data each): its curves.

    The one-task case of ``multi_task_training_curves`` (over the family of the
    task's seeds), which takes ``options`` (``eval_every``, ``theta``, ``name``...).
    """
    if not isinstance(task, Task):
        raise TypeError(f"expected a Task, got {type(task).__name__}: {task!r}.")
    return multi_task_training_curves(
        as_family(task), optimizer, key, num_seeds, num_steps, **options
    )


@dataclasses.dataclass
class TuningResult:
    """The chosen learning rate, the inner_valid score of every candidate, and its optimizer."""

    best_learning_rate: float
    scores: dict[float, float]
    optimizer: Optimizer


def sweep_curves(
    make_optimizer: Callable[..., Optimizer],
    task_or_family: Task | TaskFamily,
    key: jax.Array,
    settings: Sequence[Any],
    num_steps: int,
    num_runs: int = 5,
    progress: Callable[[], None] | None = None,
    names: Sequence[str] | None = None,
    batches: Any = None,
    **options: Any,
) -> list[TrainingCurves]:
    """Curves of ``make_optimizer(setting)`` for each setting, all from one compiled program.

    A setting is a number (passed positionally, e.g. a learning rate) or a
    mapping of hyper-parameters (passed as keywords); all settings must have
    the same form. ``make_optimizer`` is called with traced values, so it is
    compiled once per (factory, shapes): factories that compare equal (a
    class, a frozen dataclass) share the program across calls. Every setting
    trains on the same ``key`` and the same batches, drawn once (or ``batches``
    from ``draw_family_batches``). ``names`` label the
    curves (default: the factory's name and the setting). ``options`` go to
    ``multi_task_training_curves``; ``progress`` is called once per setting.
    """
    if not settings:
        raise ValueError("a hyper-parameter sweep needs at least one setting, got none.")
    names = list(names) if names is not None else [None] * len(settings)
    if len(names) != len(settings):
        raise ValueError(f"got {len(names)} names for {len(settings)} settings.")
    family = as_family(task_or_family)
    sweep = _sweep_of(make_optimizer)
    # Drawn once: each setting trains on the very same batches, not on the next ones.
    if batches is None:
        batches = draw_family_batches(
            family,
            num_runs,
            num_steps,
            options.get("eval_every"),
            options.get("num_eval_batches", 1),
            tuple(options.get("eval_splits", EVAL_SPLITS)),
        )
    curves = []
    for setting, name in zip(settings, names, strict=True):
        theta = (
            {k: np.float32(v) for k, v in setting.items()}
            if isinstance(setting, dict)
            else np.float32(setting)
        )
        curves.append(
            multi_task_training_curves(
                family,
                sweep,
                key,
                num_runs,
                num_steps,
                theta=theta,
                name=name or _setting_name(make_optimizer, setting),
                batches=batches,
                **options,
            )
        )
        if progress is not None:
            progress()
    return curves


def _setting_name(make_optimizer: Any, setting: Any) -> str:
    label = getattr(make_optimizer, "name", None) or getattr(make_optimizer, "__name__", "sweep")
    if isinstance(setting, dict):
        return f"{label}(" + ", ".join(f"{k}={v:.3g}" for k, v in setting.items()) + ")"
    return f"{label} lr={setting:.3g}"


def best_setting(
    curves: Sequence[TrainingCurves], step: int | None = None, split: str = "inner_valid"
) -> tuple[int, list[float]]:
    """Index of the curves whose mean ``split`` loss at ``step`` (default: last) is lowest.

    Also returns every candidate's score (``inf`` when any run diverged).
    Ties go to the earlier candidate.
    """
    scores = []
    for c in curves:
        final = c.losses(split)[:, -1] if step is None else c.at_step(split, step)
        scores.append(float(np.mean(final)) if np.all(np.isfinite(final)) else math.inf)
    return int(np.argmin(scores)), scores


def tune_learning_rate(
    make_optimizer: Callable[[float], Optimizer],
    task_or_family: Task | TaskFamily,
    key: jax.Array,
    learning_rates: Sequence[float],
    num_steps: int,
    num_runs: int = 5,
    num_eval_batches: int = 4,
    progress: Callable[[], None] | None = None,
) -> TuningResult:
    """Pick the learning rate whose final inner_valid loss (mean over runs) is lowest.

    Only the inner_valid split is read: the test split stays untouched for
    reporting. Diverged candidates score ``inf``. ``progress`` is called once
    per candidate (e.g. a progress bar's ``update``). ``make_optimizer`` is
    called with a traced learning rate, so the whole sweep compiles once.
    """
    learning_rates = [float(lr) for lr in learning_rates]
    if not learning_rates:
        raise ValueError("tune_learning_rate needs at least one learning rate, got none.")
    curves = sweep_curves(
        make_optimizer,
        task_or_family,
        key,
        learning_rates,
        num_steps,
        num_runs,
        progress,
        num_eval_batches=num_eval_batches,
        eval_splits=("inner_valid",),
    )
    # Ties go to the smaller learning rate.
    order = sorted(range(len(learning_rates)), key=lambda i: learning_rates[i])
    index, scores = best_setting([curves[i] for i in order])
    best = learning_rates[order[index]]
    if not math.isfinite(scores[index]):
        raise ValueError(
            f"every learning rate in {learning_rates} diverged on "
            f"{as_family(task_or_family).name}; try smaller ones."
        )
    by_lr = {learning_rates[i]: s for i, s in zip(order, scores, strict=True)}
    return TuningResult(best, {lr: by_lr[lr] for lr in learning_rates}, make_optimizer(best))


class _Sweep(LearnedOptimizer):
    """``make_optimizer`` seen as a learned optimizer whose theta is its hyper-parameters."""

    def __init__(self, make_optimizer: Callable[..., Optimizer]):
        self.make_optimizer = make_optimizer

    def init(self, key: jax.Array) -> Any:
        raise NotImplementedError("a hyper-parameter sweep has no initial theta")

    def opt_fn(self, theta: Any, is_training: bool = False) -> Optimizer:
        if isinstance(theta, dict):
            return self.make_optimizer(**theta)
        return self.make_optimizer(theta)


_SWEEPS: dict[Any, _Sweep] = {}


def _sweep_of(make_optimizer: Callable[..., Optimizer]) -> _Sweep:
    # One object per factory: repeated sweeps reuse their compilation.
    if make_optimizer not in _SWEEPS:
        _SWEEPS[make_optimizer] = _Sweep(make_optimizer)
    return _SWEEPS[make_optimizer]


def log_grid(low: float, high: float, num: int) -> list[float]:
    """``num`` learning rates evenly spaced in log space from ``low`` to ``high``."""
    if not 0 < low < high or num < 2:
        raise ValueError(f"need 0 < low < high and num >= 2, got {low!r}, {high!r}, {num!r}.")
    return [float(x) for x in np.geomspace(low, high, num)]
