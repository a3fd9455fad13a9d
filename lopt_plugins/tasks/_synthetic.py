"""The base of the synthetic families (``lopt_plugins.tasks.synthetic``) and their presets.

A ``SyntheticFamily`` holds the whole problem: ``sample(key) -> cfg`` and
``init_params``, ``loss_and_aux`` and ``normalize``, each taking the cfg; the
task of a cfg only delegates to it. A preset (``FixedSampleTask``) is the task
of one family at the cfg drawn from a fixed key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt_core import Task, TaskFamily
from lopt_core.task_distributions import TaskDistribution, host_rng
from lopt_core.validation import non_negative_int, positive_int_tuple
from lopt_plugins.tasks._common import ArgsEquality, clipped
from lopt_plugins.tasks.quadratics import QUADRATIC_MAX

Cfg = dict[str, jax.Array]
# Normalizers that divide by the expected initial loss share the quadratics' max.
RATIO_MAX = QUADRATIC_MAX


def float_range(lo: Any, hi: Any, what: str, low: float = 0.0, strict: bool = False) -> tuple:
    """``(lo, hi)`` as finite floats with ``low <= lo <= hi`` (``low < lo`` if ``strict``);
    ``what`` names them in the error, as ``min_<what>`` and ``max_<what>``."""
    try:
        a, b = float(lo), float(hi)
        ok = math.isfinite(a) and math.isfinite(b) and (a > low if strict else a >= low) and a <= b
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(lo, bool) or isinstance(hi, bool):
        sign = "<" if strict else "<="
        raise ValueError(
            f"Need {low} {sign} min_{what} <= max_{what}, both finite; got min_{what}={lo!r} "
            f"and max_{what}={hi!r}."
        )
    return a, b


def at_most(value: Any, what: str, high: float, low: float = 0.0) -> float:
    """``value`` as a float in ``[low, high]``, else a ValueError naming ``what``."""
    try:
        number = float(value)
        ok = not isinstance(value, bool) and low <= number <= high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{what} must be a number in [{low}, {high}], got {value!r}.")
    return number


def log_uniform(key: jax.Array, lo: float, hi: float, shape: tuple = ()) -> jax.Array:
    """Log-uniform draws in ``[lo, hi]`` (both positive)."""
    return jnp.exp(jax.random.uniform(key, shape, minval=math.log(lo), maxval=math.log(hi)))


class SampledTask(Task):
    """The task of one cfg of a ``SyntheticFamily``: everything is delegated to the family."""

    datasets = None

    def __init__(self, family: SyntheticFamily, cfg: Cfg):
        self.family, self.cfg = family, cfg
        self.name = f"{family.name}/sample"

    def init(self, key: jax.Array) -> Any:
        """The family's ``init_params`` at this cfg."""
        return self.family.init_params(self.cfg, key)

    def loss_and_aux(self, params: Any, key: jax.Array, batch: None) -> tuple:
        """The family's ``loss_and_aux`` at this cfg (``batch`` is None: data-free)."""
        return self.family.loss_and_aux(self.cfg, params, key)

    def normalizer(self, loss: jax.Array) -> jax.Array:
        """The family's ``normalize`` at this cfg."""
        return self.family.normalize(self.cfg, loss)


class SyntheticFamily(ArgsEquality, TaskFamily):
    """Base of the synthetic families. Subclasses implement ``sample`` and ``loss_and_aux``,
    set ``dim`` and call ``_record``; ``init_params`` defaults to ``p ~ N(0, I)`` of size
    ``dim`` and ``normalize`` to ``loss / cfg["init_loss"]`` clipped to [0, 10]."""

    datasets = None
    dim: int

    def _record(self, **args: Any) -> None:
        """Set ``_args`` (equality, hash, repr) and the default name ``<Class>_Dim<dim>``."""
        self._args = tuple(args.items())
        self.name = f"{type(self).__name__}_Dim{self.dim}"

    def task_fn(self, cfg: Cfg) -> Task:
        """The problem that ``cfg`` describes."""
        return SampledTask(self, cfg)

    def init_params(self, cfg: Cfg, key: jax.Array) -> Any:
        """``p ~ N(0, I)`` of size ``dim``."""
        return jax.random.normal(key, (self.dim,))

    def loss_and_aux(self, cfg: Cfg, params: Any, key: jax.Array) -> tuple:
        """Loss and extras of the task of ``cfg``."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss_and_aux.")

    def normalize(self, cfg: Cfg, loss: jax.Array) -> jax.Array:
        """``loss / cfg["init_loss"]`` (the expected loss at init) clipped to [0, 10]."""
        return clipped(loss / cfg["init_loss"], RATIO_MAX)


_CFGS: dict[tuple, Cfg] = {}  # (family, seed) -> cfg: equal presets sample (and compile) once


class FixedSampleTask(ArgsEquality, SampledTask):
    """The task of ``family`` at the cfg drawn from ``PRNGKey(seed)``: one fixed problem.

    The cfg is drawn once, when the task is built, and kept as numpy arrays.
    """

    def __init__(self, family: SyntheticFamily, seed: int = 0):
        if not isinstance(family, SyntheticFamily):
            raise TypeError(f"family must be a SyntheticFamily, got {type(family).__name__}.")
        seed = non_negative_int(seed, "seed")
        if (family, seed) not in _CFGS:
            cfg = jax.jit(family.sample)(jax.random.PRNGKey(seed))
            _CFGS[family, seed] = jax.tree_util.tree_map(np.asarray, cfg)
        super().__init__(family, _CFGS[family, seed])
        self.seed = seed
        self._args = (("family", family), ("seed", seed))
        self.name = f"{family.name.replace('Family', '')}_Seed{seed}"


def preset(name: str, family: type[SyntheticFamily], **fixed: Any) -> type[FixedSampleTask]:
    """A ``FixedSampleTask`` subclass named ``name``, of ``family(**fixed)``; only ``seed``
    stays an argument (a seed other than 0 shows in the name: ``<name>_Seed<seed>``)."""

    def __init__(self, seed: int = 0):
        FixedSampleTask.__init__(self, family(**fixed), seed)
        self.name = name if self.seed == 0 else f"{name}_Seed{self.seed}"

    args = ", ".join(f"{k}={v!r}" for k, v in fixed.items())
    doc = f"{family.__name__}({args}) at the cfg drawn from PRNGKey(seed); see the family."
    attrs = {"__init__": __init__, "__doc__": doc, "__module__": family.__module__}
    return type(name, (FixedSampleTask,), {**attrs, "__qualname__": name})


class FamilyChoiceDistribution(TaskDistribution):
    """Draws one of ``families`` (names in the subclass's ``catalog``; None: all) uniformly,
    built with ``dim`` drawn log-uniformly among the powers of two in ``dims``."""

    catalog: dict[str, type[SyntheticFamily]] = {}

    def __init__(self, families: Sequence[str] | None = None, dims: tuple[int, int] = (4, 32)):
        families = tuple(self.catalog) if families is None else families
        families = (families,) if isinstance(families, str) else tuple(families)
        unknown = [f for f in families if f not in self.catalog]
        if not families or unknown:
            raise ValueError(
                f"families must name some of {', '.join(self.catalog)}; got {families!r}."
            )
        bounds = positive_int_tuple(dims, "dims")
        if len(bounds) != 2 or not 2 <= bounds[0] <= bounds[1]:
            raise ValueError(f"dims must be (low, high) with 2 <= low <= high, got {dims!r}.")
        low, high = bounds
        self.families, self.dims = families, bounds
        self.powers = [2**e for e in range(math.ceil(math.log2(low)), int(math.log2(high)) + 1)]
        if not self.powers:
            raise ValueError(f"dims={dims!r} holds no power of two.")
        self.name = type(self).__name__

    def sample(self, key: jax.Array) -> TaskFamily:
        """A family of a drawn kind and dimension."""
        rng = host_rng(key)
        family = self.catalog[self.families[int(rng.integers(len(self.families)))]]
        return family(dim=self.powers[int(rng.integers(len(self.powers)))])
