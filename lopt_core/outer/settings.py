"""A meta-training run's settings, as three small objects built once and passed whole.

- ``LearnerSpec``: what to meta-train and how to estimate and apply meta-gradients;
  it builds a ``GradientLearner`` (the learner, every worker, every Ray actor
  builds its own from the same spec);
- ``RunSettings``: how long, how often to checkpoint and validate, the seed;
- ``WorkerSettings``: where the estimates are computed (this process, a pool of
  in-process workers, or Ray actors).

``meta_train`` (``lopt_core.outer.run``) is the one place that lists every
parameter, because gin binds them by name (``meta_train.num_tasks = 8``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import optax

from lopt_core.learned.base import LearnedOptimizer
from lopt_core.outer.gradient_estimators import GradientEstimator, TruncatedPES
from lopt_core.outer.learner import GradientLearner
from lopt_core.outer.theta_init import ThetaFromCheckpoint, check_frozen, frozen_outer_optimizer
from lopt_core.outer.truncated_step import VectorizedLOptTruncatedStep
from lopt_core.outer.truncation_schedules import ConstantTruncationSchedule, TruncationSchedule
from lopt_core.task_distributions import FamilyMixture, TaskDistribution
from lopt_core.tasks import Task, TaskFamily, as_family
from lopt_core.validation import check_int, non_negative_int, one_of, positive_float, positive_int

EstimatorFactory = Callable[[VectorizedLOptTruncatedStep], GradientEstimator]
# A picklable function returning ``LearnerSpec`` fields by name (not num_estimators):
# what every Ray actor calls to build its own task family, data and estimators.
Recipe = Callable[[], dict[str, Any]]

DEFAULT_TRUNCATION_LENGTH = 200
WORKER_MODES = ("sync", "async")
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, eq=False)
class LearnerSpec:
    """What a ``GradientLearner`` is built from.

    ``num_estimators`` estimators, each a ``gradient_estimator`` over its own
    ``VectorizedLOptTruncatedStep`` of ``num_tasks`` inner problems, trained by
    ``learned_optimizer`` and restarted after ``truncation_schedule`` horizons
    (default: ``ConstantTruncationSchedule(200)``); the outer optimizer is Adam at
    ``outer_learning_rate``, the averaged meta-gradient clipped to
    ``max_grad_norm`` (None: no clipping).

    The inner problems come from exactly one of: ``task_family`` (a single
    ``Task`` is the family of its seeds; every estimator uses it), a
    ``task_distribution`` (each estimator slot draws its own family, again every
    ``resample_every`` outer steps, 0: never; at most ``max_programs`` distinct
    families' compiled programs are kept, None: ``max(16, num_estimators)``), or
    ``task_families``, a list drawn uniformly with meta-gradient weights
    ``family_weights``. With a distribution, validation scores
    ``validation_families`` (families, or how many held-out draws; None: 3) by
    their normalized losses. See docs/task_distributions.md.

    ``initial_theta`` (a checkpoint of ``lopt train`` or a theta file) replaces
    the learned optimizer's initial theta; ``frozen_theta`` names parts of theta
    (``/``-separated key prefixes, e.g. ``"mlp"``) that outer steps leave as they are.
    """

    task_family: TaskFamily | None = None
    learned_optimizer: LearnedOptimizer | None = None
    gradient_estimator: EstimatorFactory = TruncatedPES
    truncation_schedule: TruncationSchedule | None = None
    num_tasks: int = 8
    random_initial_iteration_offset: int = 0
    meta_loss_split: str = "outer_valid"
    num_estimators: int = 1
    outer_learning_rate: float = 1e-3
    max_grad_norm: float | None = 3.0
    task_distribution: TaskDistribution | None = None
    task_families: Sequence[TaskFamily | Task] | None = None
    family_weights: Sequence[float] | None = None
    resample_every: int = 0
    max_programs: int | None = None
    validation_families: Sequence[TaskFamily | Task] | int | None = None
    initial_theta: str | os.PathLike | None = None
    frozen_theta: Sequence[str] = ()

    def __post_init__(self):
        sources = [
            name
            for name in ("task_family", "task_distribution", "task_families")
            if getattr(self, name) is not None
        ]
        if len(sources) != 1:
            got = ", ".join(sources) if sources else "none"
            raise ValueError(
                "meta-training needs exactly one of task_family, task_distribution and "
                f"task_families; got {got}."
            )
        if self.task_family is not None:
            object.__setattr__(self, "task_family", as_family(self.task_family, "task_family"))
            _only_with_distribution(self)
        elif self.task_families is not None:
            mixture = FamilyMixture(self.task_families, self.family_weights)
            object.__setattr__(self, "task_distribution", mixture)
            object.__setattr__(self, "task_families", None)
            object.__setattr__(self, "family_weights", None)
        else:
            _instance(self.task_distribution, "task_distribution", (TaskDistribution,))
        if self.family_weights is not None:
            raise ValueError("family_weights goes with task_families; give task_families too.")
        if self.learned_optimizer is None:
            raise ValueError("meta-training needs a learned_optimizer; got none.")
        _instance(self.learned_optimizer, "learned_optimizer", (LearnedOptimizer,))
        if self.initial_theta is not None:
            wrapped = ThetaFromCheckpoint(self.learned_optimizer, self.initial_theta)
            object.__setattr__(self, "learned_optimizer", wrapped)
        if isinstance(self.frozen_theta, str):
            raise TypeError(
                f"frozen_theta is a list of parts of theta, e.g. ['mlp']; got the string "
                f"{self.frozen_theta!r}."
            )
        object.__setattr__(self, "frozen_theta", tuple(self.frozen_theta))
        if self.frozen_theta:
            check_frozen(self.learned_optimizer.init(jax.random.PRNGKey(0)), self.frozen_theta)
        positive_int(self.num_estimators, "num_estimators")
        positive_float(self.outer_learning_rate, "outer_learning_rate")
        non_negative_int(self.resample_every, "resample_every")
        if self.max_programs is not None:
            positive_int(self.max_programs, "max_programs")
        validation = self.validation_families
        if isinstance(validation, (list, tuple)):
            families = tuple(
                as_family(f, f"validation_families[{i}]") for i, f in enumerate(validation)
            )
            if not families:
                raise ValueError("validation_families must not be empty; give None for 3 draws.")
            object.__setattr__(self, "validation_families", families)
        elif validation is not None:
            positive_int(validation, "validation_families")

    @property
    def program_limit(self) -> int:
        """How many distinct families' compiled programs a run keeps (``max_programs``)."""
        if self.max_programs is None:
            return max(16, self.num_estimators)
        return self.max_programs

    @property
    def schedule(self) -> TruncationSchedule:
        """``truncation_schedule``, or the default when it is None."""
        if self.truncation_schedule is None:
            return ConstantTruncationSchedule(DEFAULT_TRUNCATION_LENGTH)
        return self.truncation_schedule

    def build(self, num_estimators: int | None = None) -> GradientLearner:
        """A ``GradientLearner`` over ``num_estimators`` (default: the spec's) estimators
        of ``task_family`` (a distribution's slots are the ``MixtureExecutor``'s)."""
        if self.task_family is None:
            raise ValueError(
                "A LearnerSpec with a task distribution builds no single GradientLearner: its "
                "estimator slots draw their families from the run's seed (MixtureExecutor)."
            )
        count = self.num_estimators if num_estimators is None else num_estimators
        estimators = [
            self.estimator_for(self.task_family)
            for _ in range(positive_int(count, "num_estimators"))
        ]
        return GradientLearner(
            self.learned_optimizer, estimators, self.outer_optimizer(), self.max_grad_norm
        )

    def outer_optimizer(self) -> optax.GradientTransformation:
        """Adam at ``outer_learning_rate``, with the ``frozen_theta`` parts' updates zeroed."""
        return frozen_outer_optimizer(optax.adam(self.outer_learning_rate), self.frozen_theta)

    def estimator_for(self, family: TaskFamily) -> GradientEstimator:
        """A ``gradient_estimator`` over a new truncated step of ``family``."""
        truncated_step = VectorizedLOptTruncatedStep(
            family,
            self.learned_optimizer,
            self.schedule,
            self.num_tasks,
            random_initial_iteration_offset=self.random_initial_iteration_offset,
            meta_loss_split=self.meta_loss_split,
        )
        estimator = self.gradient_estimator(truncated_step)
        if not isinstance(estimator, GradientEstimator):
            raise TypeError(
                f"gradient_estimator must build a GradientEstimator from a truncated step, "
                f"got {type(estimator).__name__} from {self.gradient_estimator!r}."
            )
        return estimator

    def recipe_args(self) -> dict[str, Any]:
        """The fields a ``Recipe`` returns (all but ``num_estimators``)."""
        return {name: getattr(self, name) for name in RECIPE_FIELDS}

    @classmethod
    def from_recipe(cls, recipe: Recipe, num_estimators: int = 1) -> LearnerSpec:
        """The spec a recipe describes (fields it does not return keep their defaults)."""
        args = recipe()
        if not isinstance(args, dict):
            raise TypeError(
                f"A recipe must return a dict of LearnerSpec fields {RECIPE_FIELDS}, got "
                f"{type(args).__name__} from {recipe!r}."
            )
        chosen = {name: value for name, value in args.items() if name in RECIPE_FIELDS}
        return cls(**chosen, num_estimators=num_estimators)


def _only_with_distribution(spec: LearnerSpec) -> None:
    for name, default in (("resample_every", 0), ("max_programs", None)):
        if getattr(spec, name) != default:
            raise ValueError(
                f"{name} is for task distributions; it has no effect with a single "
                "task_family (give task_distribution or task_families instead)."
            )
    if spec.validation_families is not None:
        raise ValueError(
            "validation_families is for task distributions; a task_family run validates on "
            "held-out tasks of its family (validation_tasks)."
        )


def _instance(value: Any, what: str, kinds: tuple[type, ...]) -> Any:
    """``value`` if it is one of ``kinds``; a class of them given without ``()`` says so."""
    names = " or ".join(k.__name__ for k in kinds)
    if isinstance(value, type) and issubclass(value, kinds):
        raise TypeError(
            f"{what} must be a {names} object, got the class {value.__name__} itself: "
            f"call it (in a gin file, @{value.__name__}() with the parentheses)."
        )
    if not isinstance(value, kinds):
        raise TypeError(f"{what} must be a {names}, got {type(value).__name__}: {value!r}.")
    return value


RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(LearnerSpec) if f.name != "num_estimators")


def build_learner(
    task_family: TaskFamily | Task, learned_optimizer: LearnedOptimizer, **options: Any
) -> GradientLearner:
    """``LearnerSpec(task_family, learned_optimizer, **options).build()``."""
    return LearnerSpec(task_family, learned_optimizer, **options).build()


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How a run proceeds: ``num_steps`` outer steps, a checkpoint every
    ``checkpoint_every``, validation every ``validate_every`` (0: never) on
    ``validation_tasks`` held-out tasks trained ``validation_steps`` steps
    (None: the truncation schedule's fixed length), keys from ``seed``. With a
    ``validation_suite`` (a registered suite's name), validation also scores the
    suite on inner_valid and the best checkpoint is chosen by that score.
    ``metric_writers`` also receive every metrics and validation row, the
    settings and the operative config (``lopt_core.metric_writers``; e.g. the
    ``tensorboard`` and ``wandb`` plugins); ``metrics.jsonl`` is always written."""

    num_steps: int = 1000
    checkpoint_every: int = 100
    validate_every: int = 0
    validation_tasks: int = 4
    validation_steps: int | None = None
    validation_suite: str | None = None
    seed: int = 0
    metric_writers: Sequence[Any] = ()

    def __post_init__(self):
        object.__setattr__(self, "metric_writers", tuple(self.metric_writers or ()))
        if self.validation_suite is not None:
            if not isinstance(self.validation_suite, str):
                raise TypeError(
                    "validation_suite is the name of a registered suite (e.g. 'tiny'), got "
                    f"{type(self.validation_suite).__name__}: {self.validation_suite!r}."
                )
            if not self.validate_every:
                raise ValueError(
                    f"validation_suite={self.validation_suite!r} needs validate_every > 0 "
                    "(how often to score the suite)."
                )
        positive_int(self.num_steps, "num_steps")
        positive_int(self.checkpoint_every, "checkpoint_every")
        non_negative_int(self.validate_every, "validate_every")
        positive_int(self.validation_tasks, "validation_tasks")
        if self.validation_steps is not None:
            positive_int(self.validation_steps, "validation_steps")


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """Where estimates are computed (docs/distributed.md).

    ``workers=0``: every estimator in this process, fused with the update.
    ``workers=N``: N gradient workers, in this process (a debugging aid) or,
    with ``ray=True``, in Ray actors (a new local cluster, or the one at
    ``ray_address``) with Ray actor options ``worker_options``, each building
    its objects from ``recipe``. ``worker_mode`` ``"sync"`` averages all workers'
    estimates each step; ``"async"`` applies each as it arrives and drops those
    more than ``max_staleness`` steps old. A crashed Ray worker has
    ``worker_restart_timeout`` seconds to restart before its job counts as lost.
    """

    workers: int = 0
    worker_mode: str = "sync"
    max_staleness: int = 1
    ray: bool = False
    ray_address: str | None = None
    worker_options: dict[str, Any] | None = None
    worker_restart_timeout: float = 300.0
    recipe: Recipe | None = None

    def __post_init__(self):
        if self.ray and isinstance(self.workers, int) and self.workers == 0:
            raise ValueError(
                "workers must be an integer >= 1, got 0 (ray=True needs at least one worker)."
            )
        check_int(self.workers, "workers", minimum=1 if self.ray else 0)
        one_of(self.worker_mode, "worker_mode", WORKER_MODES)
        non_negative_int(self.max_staleness, "max_staleness")
        positive_float(self.worker_restart_timeout, "worker_restart_timeout")
        if not self.ray and (
            self.recipe is not None
            or self.ray_address is not None
            or self.worker_options is not None
        ):
            raise ValueError(
                "recipe, ray_address and worker_options are for Ray actors; pass ray=True too."
            )


def fields_of(cls: type[T], values: dict[str, Any]) -> T:
    """``cls`` (a settings dataclass) built from the entries of ``values`` named like its fields."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})
