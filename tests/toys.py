"""Toy tasks, families and learned optimizers the tests share, written with lopt_core only.

A plain module (``import toys``; setup.cfg puts tests/ on the path, and the Ray
tests put it on their actors' PYTHONPATH so that they can import the recipes).
It must never import ``lopt_plugins``: the core tests use it, and
tests/core/test_core_without_plugins.py checks that they run without the plugins.
"""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt_core import Datasets, Task, TaskFamily
from lopt_core.learned import LearnedOptimizer
from lopt_core.optimizers import OptaxOptimizer
from lopt_core.outer import ConstantTruncationSchedule, TruncatedPES

# Quadratics ---------------------------------------------------------------------------------


class Quadratic(Task):
    """``sum(scale * (params - target)**2)``: a data-free task; its meta-loss is ``log(loss)``.

    It starts from ``x0`` when one is given, else from ``params ~ N(0, I)`` drawn
    with the init key. ``scale`` is a number or an array like ``target``.
    """

    def __init__(self, target, scale=1.0, x0=None):
        self.target, self.scale, self.x0 = target, scale, x0

    def init(self, key):
        if self.x0 is not None:
            return self.x0
        return jax.random.normal(key, jnp.shape(self.target))

    def loss(self, params, key, batch):
        return jnp.sum(self.scale * jnp.square(params - self.target))

    def normalizer(self, loss):
        return jnp.log(loss)


class QuadraticFamily(TaskFamily):
    """``Quadratic`` tasks of size ``dim`` whose ``target ~ N(0, I)`` is sampled.

    With ``scale_range=(low, high)`` each coordinate's scale is sampled too, uniform in
    ``[low, high]`` (``exp`` of it with ``log_scale``); with ``sample_x0`` so is the
    start ``x0 ~ N(0, I)``, so that a restarted problem visibly starts somewhere new.
    """

    def __init__(self, dim: int = 4, scale_range=None, log_scale=False, sample_x0=False):
        self.dim, self.scale_range = dim, scale_range
        self.log_scale, self.sample_x0 = log_scale, sample_x0

    def sample(self, key):
        target_key, other_key = jax.random.split(key)
        cfg = {"target": jax.random.normal(target_key, (self.dim,))}
        if self.scale_range is not None:
            low, high = self.scale_range
            scale = jax.random.uniform(other_key, (self.dim,), minval=low, maxval=high)
            cfg["scale"] = jnp.exp(scale) if self.log_scale else scale
        if self.sample_x0:
            cfg["x0"] = jax.random.normal(other_key, (self.dim,))
        return cfg

    def task_fn(self, cfg):
        return Quadratic(cfg["target"], cfg.get("scale", 1.0), cfg.get("x0"))


# A data-backed family -----------------------------------------------------------------------


def regression_datasets() -> Datasets:
    """Fresh iterators of a tiny linear regression problem (one per split)."""
    w_true = np.linspace(-1, 1, 4).astype(np.float32)

    def batches(split_seed):
        rng = np.random.default_rng(split_seed)
        while True:
            x = rng.normal(size=(8, 4)).astype(np.float32)
            yield {"x": x, "y": x @ w_true + 0.1 * rng.normal(size=8).astype(np.float32)}

    return Datasets(*(batches(i) for i in range(4)))


class Regression(Task):
    def __init__(self, scale, datasets):
        self.scale, self.datasets = scale, datasets

    def init(self, key):
        return jax.random.normal(key, (4,))

    def loss(self, params, key, batch):
        return self.scale * jnp.mean((batch["x"] @ params - batch["y"]) ** 2)

    def normalizer(self, loss):
        return jnp.log(loss + 1e-6)


class RegressionFamily(TaskFamily):
    """Linear regressions with a sampled loss scale, on data iterators of their own.

    Every construction builds fresh iterators, as a family built in another process
    (a Ray actor, a worker) does.
    """

    def __init__(self):
        self.datasets = regression_datasets()

    def sample(self, key):
        return jax.random.uniform(key, (), minval=0.5, maxval=2.0)

    def task_fn(self, cfg):
        return Regression(cfg, self.datasets)


# Learned optimizers -------------------------------------------------------------------------


class _LogSpaceConstants(LearnedOptimizer):
    """An optax optimizer whose constants are meta-learned: ``theta = {"log_<name>": ...}``.

    Constants are kept in log space (decay rates ``d`` as ``one_minus_<name> = 1 - d``),
    so every theta is a valid optimizer. Subclasses say which optax optimizer they make.
    """

    def __init__(self, **initial: float):
        self.initial = initial

    def init(self, key):
        return {
            f"log_{name}": jnp.log(jnp.asarray(v, jnp.float32)) for name, v in self.initial.items()
        }

    def opt_fn(self, theta, is_training=False):
        constants = {name.removeprefix("log_"): jnp.exp(v) for name, v in theta.items()}
        return OptaxOptimizer(self.make(constants))

    def make(self, c: dict) -> optax.GradientTransformation:
        raise NotImplementedError


class ToyLearnableSGD(_LogSpaceConstants):
    """SGD with a learned learning rate: ``theta = {"log_lr"}``."""

    def __init__(self, initial_lr: float = 1e-2):
        super().__init__(lr=initial_lr)

    def make(self, c):
        return optax.sgd(c["lr"])


class ToyLearnableSGDM(_LogSpaceConstants):
    """SGD with momentum; two meta-parameters, ``log_lr`` and ``log_one_minus_momentum``."""

    def __init__(self, initial_lr: float = 1e-2, initial_momentum: float = 0.9):
        super().__init__(lr=initial_lr, one_minus_momentum=1.0 - initial_momentum)

    def make(self, c):
        return optax.sgd(c["lr"], momentum=1.0 - c["one_minus_momentum"])


class ToyLearnableAdam(_LogSpaceConstants):
    """Adam whose learning rate, betas and epsilon are learned (four meta-parameters)."""

    def __init__(
        self, initial_lr=1e-3, initial_beta1=0.9, initial_beta2=0.999, initial_epsilon=1e-8
    ):
        super().__init__(
            lr=initial_lr,
            one_minus_beta1=1.0 - initial_beta1,
            one_minus_beta2=1.0 - initial_beta2,
            epsilon=initial_epsilon,
        )

    def make(self, c):
        b1, b2 = 1.0 - c["one_minus_beta1"], 1.0 - c["one_minus_beta2"]
        return optax.adam(c["lr"], b1=b1, b2=b2, eps=c["epsilon"])


# meta_train recipes -------------------------------------------------------------------------

RECIPE_LOPT = ToyLearnableSGDM(initial_lr=0.01)


def build_args(family: TaskFamily, learned_optimizer: LearnedOptimizer = RECIPE_LOPT) -> dict:
    """meta_train's arguments for a short PES run of ``learned_optimizer`` on ``family``."""
    return dict(
        task_family=family,
        learned_optimizer=learned_optimizer,
        gradient_estimator=functools.partial(TruncatedPES, trunc_length=3, std=0.05),
        truncation_schedule=ConstantTruncationSchedule(7),
        num_tasks=2,
        random_initial_iteration_offset=7,
        outer_learning_rate=0.05,
    )


def quadratic_recipe() -> dict:
    """Build arguments of a data-free run (a module-level function: Ray actors import it)."""
    return build_args(QuadraticFamily(3))


def regression_recipe() -> dict:
    """Build arguments of a data-backed run, with data iterators of its own."""
    return build_args(RegressionFamily())


RECIPES = {"data-free": quadratic_recipe, "data-backed": regression_recipe}


# A tiny `lopt train` config -----------------------------------------------------------------


def write_tiny_gin(path: Path, *bindings: str, length: int = 6, trunc_length: int = 3) -> Path:
    """Write a tiny gin config for ``lopt train``, plus ``bindings`` (one per line).

    It meta-trains the built-in ``LearnableSGD`` with PES on 3-dimensional
    ``FixedDimQuadraticFamily`` tasks: only the commands' tests use it, through the
    registry (this module imports no plugin).
    """
    text = f"""
        meta_train.task_family = @FixedDimQuadraticFamily()
        FixedDimQuadraticFamily.dim = 3
        meta_train.learned_optimizer = @LearnableSGD()
        meta_train.truncation_schedule = @ConstantTruncationSchedule()
        ConstantTruncationSchedule.length = {length}
        meta_train.gradient_estimator = @TruncatedPES
        TruncatedPES.trunc_length = {trunc_length}
        meta_train.num_tasks = 2
        """
    path.write_text(textwrap.dedent(text) + "".join(f"{line}\n" for line in bindings))
    return path
