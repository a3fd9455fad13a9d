"""Synthetic optimization problems: task families with array cfgs, a fixed preset of each.

- ``TeacherStudentFamily``: an MLP student regresses a sampled random teacher;
- ``LeastSquaresFamily``: ill-conditioned least squares with a sparse solution;
- ``LogisticRegressionFamily``: logistic regression on separable-ish generated data;
- ``RosenbrockFamily``, ``RastriginFamily``: the classic non-convex test functions.

Every family is data-free (``datasets is None``): what a task needs is in its
cfg, and the problems that have data (teacher-student, logistic regression)
draw a fresh batch from the loss key at every step, so the gradient is a
minibatch gradient; the training loops evaluate with one fixed key, hence one
fixed evaluation batch. Each sampled task differs in difficulty (condition
number, nonlinearity, noise, curvature...). Normalizers are ~1 at init, 0 at
the optimum, clipped with NaN/inf mapped to the max (see each family).
``SyntheticDistribution`` draws a family and its (static) dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lopt_core.task_distributions import TaskDistribution
from lopt_core.validation import positive_int, positive_int_tuple
from lopt_plugins.tasks._common import (
    ACTIVATION_TAGS,
    activation_fn,
    classification_normalizer,
    clipped,
    orthogonal_init,
)
from lopt_plugins.tasks._synthetic import (
    RATIO_MAX,
    Cfg,
    FamilyChoiceDistribution,
    FixedSampleTask,
    SyntheticFamily,
    at_most,
    float_range,
    log_uniform,
    preset,
)
from lopt_plugins.tasks.tabular import TabularMLP

# Rosenbrock's normalizer is a ratio of logs: 3 means the loss grew to about its initial
# value cubed.
LOG_RATIO_MAX = 3.0
# Inputs on which a teacher's output scale is measured, when it is sampled.
TEACHER_PROBE = 512


class TeacherStudentFamily(SyntheticFamily):
    """An MLP student regresses a random teacher ``y = s * tanh(g * x W1) w2 + noise``.

    Teacher: ``W1 ~ N(0, 1/dim)`` ``[dim, teacher_width]``, ``w2 ~ N(0,
    1/teacher_width)``; the gain ``g`` (log-uniform in ``[min_teacher_gain,
    max_teacher_gain]``) sets how nonlinear it is, and ``s`` makes the clean
    targets' variance 1 (measured on 512 probe inputs). Each step draws
    ``x ~ N(0, I)`` ``[batch_size, dim]`` and target noise of std
    ``noise_std ~ U[0, max_noise_std]`` from the loss key. Student:
    ``hidden_sizes`` dense layers with ``activation`` (lecun init), and a
    readout that starts at zero. Loss: MSE. Normalizer: ``loss / (1 +
    noise_std**2)`` (the loss at init: the student first predicts 0), clipped
    to [0, 10].
    """

    def __init__(
        self,
        dim: int = 8,
        teacher_width: int = 16,
        hidden_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        batch_size: int = 32,
        min_teacher_gain: float = 0.5,
        max_teacher_gain: float = 4.0,
        max_noise_std: float = 0.5,
    ):
        self.dim, self.width = (
            positive_int(dim, "dim"),
            positive_int(teacher_width, "teacher_width"),
        )
        self.hidden_sizes = positive_int_tuple(hidden_sizes, "hidden_sizes")
        self.activation, self._act = activation, activation_fn(activation)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.gains = float_range(min_teacher_gain, max_teacher_gain, "teacher_gain", strict=True)
        self.max_noise_std = at_most(max_noise_std, "max_noise_std", math.inf)
        self.module = TabularMLP(self.hidden_sizes, 1, zero_readout=True)
        self._record(
            dim=self.dim,
            teacher_width=self.width,
            hidden_sizes=self.hidden_sizes,
            activation=activation,
            batch_size=self.batch_size,
            min_teacher_gain=self.gains[0],
            max_teacher_gain=self.gains[1],
            max_noise_std=self.max_noise_std,
        )
        sizes = "x".join(map(str, self.hidden_sizes)) or "Linear"
        self.name += f"_{ACTIVATION_TAGS[activation]}{sizes}"

    def teacher(self, cfg: Cfg, x: jax.Array) -> jax.Array:
        """The clean targets of inputs ``x`` ``[..., dim]``."""
        return cfg["scale"] * jnp.tanh(cfg["gain"] * (x @ cfg["w1"])) @ cfg["w2"]

    def sample(self, key: jax.Array) -> Cfg:
        """A teacher (weights, gain, output scale) and a noise level."""
        k1, k2, k3, k4, k5 = jax.random.split(key, 5)
        cfg = {
            "w1": jax.random.normal(k1, (self.dim, self.width)) / math.sqrt(self.dim),
            "w2": jax.random.normal(k2, (self.width,)) / math.sqrt(self.width),
            "gain": log_uniform(k3, *self.gains),
            "scale": jnp.ones(()),
            "noise_std": jax.random.uniform(k5, (), maxval=self.max_noise_std),
        }
        probe = self.teacher(cfg, jax.random.normal(k4, (TEACHER_PROBE, self.dim)))
        cfg["scale"] = 1.0 / jnp.maximum(jnp.std(probe), 1e-6)
        return cfg

    def init_params(self, cfg: Cfg, key: jax.Array) -> Any:
        """The student's flax parameters (zero readout)."""
        return self.module.init(key, jnp.zeros((1, self.dim)), self._act)

    def loss_and_aux(self, cfg: Cfg, params: Any, key: jax.Array) -> tuple:
        """MSE of the student on a batch drawn from ``key``."""
        x_key, noise_key = jax.random.split(key)
        x = jax.random.normal(x_key, (self.batch_size, self.dim))
        noise = cfg["noise_std"] * jax.random.normal(noise_key, (self.batch_size,))
        pred = self.module.apply(params, x, self._act)[:, 0]
        return jnp.mean(jnp.square(pred - self.teacher(cfg, x) - noise)), {}

    def normalize(self, cfg: Cfg, loss: jax.Array) -> jax.Array:
        """``loss / (1 + noise_std**2)`` clipped to [0, 10]."""
        return clipped(loss / (1.0 + jnp.square(cfg["noise_std"])), RATIO_MAX)


class LeastSquaresFamily(SyntheticFamily):
    """``0.5 mean((A p - b)**2)`` with a sampled condition number and a sparse solution.

    ``A = sqrt(num_rows) U diag(sigma) V'`` (``U``, ``V`` random orthogonal;
    ``num_rows`` defaults to ``2 dim``), so the Hessian ``A'A / num_rows`` has
    eigenvalues ``sigma**2`` geometrically spaced from 1 to ``1/kappa``,
    ``log10(kappa) ~ U[min_log10_condition, max_log10_condition]``. The solution
    ``x*`` keeps each coordinate of an ``N(0, I)`` draw with probability
    ``density ~ U[min_density, 1]``; ``b = A x* + noise_std * e``. Full-batch
    and deterministic (the key is unused); ``p ~ N(0, I)`` at init.
    Normalizer: ``loss / E[loss at init]`` (``0.5 (|b|^2 + |A|_F^2) / num_rows``),
    clipped to [0, 10]; the noise leaves a small floor.
    """

    def __init__(
        self,
        dim: int = 16,
        num_rows: int | None = None,
        min_log10_condition: float = 0.0,
        max_log10_condition: float = 4.0,
        min_density: float = 0.1,
        noise_std: float = 0.1,
    ):
        self.dim = positive_int(dim, "dim")
        self.num_rows = 2 * self.dim if num_rows is None else positive_int(num_rows, "num_rows")
        if self.num_rows < self.dim:
            raise ValueError(f"num_rows must be at least dim={self.dim}, got {num_rows!r}.")
        self.conditions = float_range(min_log10_condition, max_log10_condition, "log10_condition")
        self.min_density = at_most(min_density, "min_density", 1.0)
        self.noise_std = at_most(noise_std, "noise_std", math.inf)
        self._record(
            dim=self.dim,
            num_rows=self.num_rows,
            min_log10_condition=self.conditions[0],
            max_log10_condition=self.conditions[1],
            min_density=self.min_density,
            noise_std=self.noise_std,
        )

    def sample(self, key: jax.Array) -> Cfg:
        """The design matrix ``a`` and targets ``b``, with the expected initial loss."""
        ku, kv, kc, kd, km, kx, kn = jax.random.split(key, 7)
        d, m = self.dim, self.num_rows
        log10_cond = jax.random.uniform(
            kc, (), minval=self.conditions[0], maxval=self.conditions[1]
        )
        sigma = 10.0 ** (-0.5 * log10_cond * jnp.linspace(0.0, 1.0, d))
        a = math.sqrt(m) * (orthogonal_init(ku, (m, d)) * sigma) @ orthogonal_init(kv, (d, d)).T
        density = jax.random.uniform(kd, (), minval=self.min_density, maxval=1.0)
        x_star = jnp.where(jax.random.uniform(km, (d,)) < density, jax.random.normal(kx, (d,)), 0.0)
        b = a @ x_star + self.noise_std * jax.random.normal(kn, (m,))
        init_loss = 0.5 * (jnp.sum(jnp.square(b)) + jnp.sum(jnp.square(a))) / m
        return {"a": a, "b": b, "init_loss": init_loss}

    def loss_and_aux(self, cfg: Cfg, params: jax.Array, key: jax.Array) -> tuple:
        """``0.5 mean((a p - b)**2)``."""
        return 0.5 * jnp.mean(jnp.square(cfg["a"] @ params - cfg["b"])), {}


class LogisticRegressionFamily(SyntheticFamily):
    """Logistic regression on generated, separable-ish data.

    Each step draws ``x = z * feature_scale``, ``z ~ N(0, I)`` ``[batch_size,
    dim]``, from the loss key; the label is ``x . w_true > 0``, flipped with
    probability ``label_noise ~ U[0, max_label_noise]`` (0: separable). Sampled:
    the unit vector ``w_true`` and per-feature scales with ``log10 ~
    U[-max_log10_scale, max_log10_scale]`` (ill-conditioning). Parameters
    ``{"w": [dim], "b": []}`` start at zero (loss ``log 2``); extra:
    ``accuracy``. Normalizer ``loss / log 2``, clipped to [0, 1.5].
    """

    def __init__(
        self,
        dim: int = 16,
        batch_size: int = 64,
        max_label_noise: float = 0.2,
        max_log10_scale: float = 1.0,
    ):
        self.dim, self.batch_size = positive_int(dim, "dim"), positive_int(batch_size, "batch_size")
        self.max_label_noise = at_most(max_label_noise, "max_label_noise", 0.5)
        self.max_log10_scale = at_most(max_log10_scale, "max_log10_scale", 3.0)
        self._record(
            dim=self.dim,
            batch_size=self.batch_size,
            max_label_noise=self.max_label_noise,
            max_log10_scale=self.max_log10_scale,
        )

    def sample(self, key: jax.Array) -> Cfg:
        """The true direction, the feature scales and the label noise."""
        kw, ks, kn = jax.random.split(key, 3)
        w, s = jax.random.normal(kw, (self.dim,)), self.max_log10_scale
        return {
            "w_true": w / jnp.linalg.norm(w),
            "feature_scale": 10.0 ** jax.random.uniform(ks, (self.dim,), minval=-s, maxval=s),
            "label_noise": jax.random.uniform(kn, (), maxval=self.max_label_noise),
        }

    def init_params(self, cfg: Cfg, key: jax.Array) -> dict[str, jax.Array]:
        """Zero weights and bias."""
        return {"w": jnp.zeros(self.dim), "b": jnp.zeros(())}

    def loss_and_aux(self, cfg: Cfg, params: dict, key: jax.Array) -> tuple:
        """Mean binary cross-entropy on a batch drawn from ``key``, and ``accuracy``."""
        x_key, flip_key = jax.random.split(key)
        x = jax.random.normal(x_key, (self.batch_size, self.dim)) * cfg["feature_scale"]
        flip = jax.random.uniform(flip_key, (self.batch_size,)) < cfg["label_noise"]
        labels = jnp.logical_xor(x @ cfg["w_true"] > 0, flip)
        logits = x @ params["w"] + params["b"]
        loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32)))
        return loss, {"accuracy": jnp.mean(((logits > 0) == labels).astype(jnp.float32))}

    def normalize(self, cfg: Cfg, loss: jax.Array) -> jax.Array:
        """``loss / log 2`` clipped to [0, 1.5]."""
        return classification_normalizer(loss, 2)


class RosenbrockFamily(SyntheticFamily):
    """``sum_i w_i [c (z_{i+1} - z_i**2)**2 + (1 - z_i)**2]``, ``z = p - shift + 1``.

    The minimum (0) is at ``p = shift``, ``shift ~ N(0, shift_std**2 I)``; the
    curvature ``c`` is log-uniform in ``[min_curvature, max_curvature]`` (100 is
    the classic function) and each term's weight ``w_i`` log-uniform in
    ``[min_weight, 1]``. ``p ~ N(0, I)`` at init. Normalizer: ``log(1 + loss) /
    log(1 + E[loss at init])`` (exact Gaussian moments), clipped to [0, 3].
    """

    def __init__(
        self,
        dim: int = 10,
        min_curvature: float = 10.0,
        max_curvature: float = 100.0,
        shift_std: float = 0.5,
        min_weight: float = 0.1,
    ):
        self.dim = positive_int(dim, "dim")
        if self.dim < 2:
            raise ValueError(f"dim must be at least 2 for Rosenbrock, got {dim!r}.")
        self.curvatures = float_range(min_curvature, max_curvature, "curvature", strict=True)
        self.shift_std = at_most(shift_std, "shift_std", math.inf)
        self.min_weight = at_most(min_weight, "min_weight", 1.0, low=1e-6)
        self._record(
            dim=self.dim,
            min_curvature=self.curvatures[0],
            max_curvature=self.curvatures[1],
            shift_std=self.shift_std,
            min_weight=self.min_weight,
        )

    def sample(self, key: jax.Array) -> Cfg:
        """Curvature, shift and term weights, with the expected initial loss."""
        kc, ks, kw = jax.random.split(key, 3)
        c = log_uniform(kc, *self.curvatures)
        shift = self.shift_std * jax.random.normal(ks, (self.dim,))
        weights = log_uniform(kw, self.min_weight, 1.0, (self.dim - 1,))
        m = 1.0 - shift  # z ~ N(m, 1) at init: E[z**2] = m**2 + 1, E[z**4] = m**4 + 6 m**2 + 3
        ez2, ez4 = jnp.square(m) + 1, jnp.square(jnp.square(m)) + 6 * jnp.square(m) + 3
        terms = c * (ez2[1:] - 2.0 * m[1:] * ez2[:-1] + ez4[:-1]) + jnp.square(1 - m[:-1]) + 1
        return {"curvature": c, "shift": shift, "weights": weights, "init_loss": weights @ terms}

    def loss_and_aux(self, cfg: Cfg, params: jax.Array, key: jax.Array) -> tuple:
        """The weighted, shifted Rosenbrock function."""
        z = params - cfg["shift"] + 1.0
        terms = cfg["curvature"] * jnp.square(z[1:] - jnp.square(z[:-1])) + jnp.square(1 - z[:-1])
        return cfg["weights"] @ terms, {}

    def normalize(self, cfg: Cfg, loss: jax.Array) -> jax.Array:
        """``log1p(loss) / log1p(init_loss)`` clipped to [0, 3]."""
        ratio = jnp.log1p(jnp.maximum(loss, 0.0)) / jnp.log1p(cfg["init_loss"])
        return clipped(ratio, LOG_RATIO_MAX)


class RastriginFamily(SyntheticFamily):
    """``sum_i [z_i**2 + A (1 - cos(2 pi z_i))]``, ``z = p - shift``: many local minima.

    The amplitude ``A ~ U[min_amplitude, max_amplitude]`` (10 is the classic
    function) sets how deep the local minima are; the global minimum (0) is at
    ``p = shift``, ``shift ~ N(0, shift_std**2 I)``. ``p ~ N(0, I)`` at init.
    Normalizer: ``loss / E[loss at init]``, clipped to [0, 10].
    """

    def __init__(
        self,
        dim: int = 10,
        min_amplitude: float = 1.0,
        max_amplitude: float = 10.0,
        shift_std: float = 0.5,
    ):
        self.dim = positive_int(dim, "dim")
        self.amplitudes = float_range(min_amplitude, max_amplitude, "amplitude")
        self.shift_std = at_most(shift_std, "shift_std", math.inf)
        self._record(
            dim=self.dim,
            min_amplitude=self.amplitudes[0],
            max_amplitude=self.amplitudes[1],
            shift_std=self.shift_std,
        )

    def sample(self, key: jax.Array) -> Cfg:
        """Amplitude and shift, with the expected initial loss."""
        ka, ks = jax.random.split(key)
        amp = jax.random.uniform(ka, (), minval=self.amplitudes[0], maxval=self.amplitudes[1])
        shift = self.shift_std * jax.random.normal(ks, (self.dim,))
        # z ~ N(-shift, 1) at init: E[cos(2 pi z)] = cos(2 pi shift) exp(-2 pi**2).
        e_cos = jnp.cos(2 * jnp.pi * shift) * math.exp(-2 * math.pi**2)
        init_loss = jnp.sum(jnp.square(shift) + 1.0 + amp * (1.0 - e_cos))
        return {"amplitude": amp, "shift": shift, "init_loss": init_loss}

    def loss_and_aux(self, cfg: Cfg, params: jax.Array, key: jax.Array) -> tuple:
        """The shifted Rastrigin function."""
        z = params - cfg["shift"]
        return jnp.sum(jnp.square(z) + cfg["amplitude"] * (1.0 - jnp.cos(2 * jnp.pi * z))), {}


FAMILIES: dict[str, type[SyntheticFamily]] = {
    cls.__name__: cls
    for cls in (
        TeacherStudentFamily,
        LeastSquaresFamily,
        LogisticRegressionFamily,
        RosenbrockFamily,
        RastriginFamily,
    )
}

# One fixed problem per family: the cfg drawn from PRNGKey(seed), seed 0 by default.
PRESETS: dict[str, type[FixedSampleTask]] = {
    "TeacherStudent_Dim8_Relu32": preset("TeacherStudent_Dim8_Relu32", TeacherStudentFamily),
    "LeastSquares_Dim32_Cond1e3": preset(
        "LeastSquares_Dim32_Cond1e3",
        LeastSquaresFamily,
        dim=32,
        min_log10_condition=3.0,
        max_log10_condition=3.0,
    ),
    "LogisticRegression_Dim16": preset(
        "LogisticRegression_Dim16", LogisticRegressionFamily, max_label_noise=0.05
    ),
    "Rosenbrock_Dim10": preset("Rosenbrock_Dim10", RosenbrockFamily),
    "Rastrigin_Dim10": preset("Rastrigin_Dim10", RastriginFamily),
}
# Module attributes, so that presets import and pickle by name.
globals().update(PRESETS)


class SyntheticDistribution(FamilyChoiceDistribution):
    """Draws one of ``families`` (names in ``FAMILIES``; default all) uniformly, at a ``dim``
    drawn log-uniformly among the powers of two in ``dims``, other arguments at their
    defaults. ``dim`` is static: each draw may be another graph, and equal draws give
    equal families, which share compiled programs."""

    catalog = FAMILIES


DISTRIBUTIONS: dict[str, type[TaskDistribution]] = {"SyntheticDistribution": SyntheticDistribution}
