"""``ResidualAdamLOpt``: Adam with learned hyper-parameters, schedule, decay and MLP residual.

A learned optimizer that starts as a good hand-designed rule and learns
corrections to it, rather than starting from a random update rule (as
``MLPLOpt`` does). With ``theta`` at its initial value it *is* AdamW (by default
PyTorch's defaults: learning rate 1e-3, betas 0.9/0.999, weight decay 1e-2);
meta-training then learns:

- Adam's learning rate, betas and epsilon, and a decoupled weight decay (all in
  log space, like ``LearnableAdam``);
- a learning-rate schedule, ``log lr(t) = log lr + sum_k w_k tanh(t / s_k)``
  over the time scales ``s_k`` of ``schedule_time_scales``, linear in bounded,
  monotone features of ``t`` (the step count, not the planned run length).
  After ``warmup_steps`` the learning rate may only fall: the schedule used is
  the running minimum of that function since ``warmup_steps``. Whatever theta
  meta-training finds, running past the meta-training horizon then never
  raises the step size (an unconstrained schedule learned on 200-step runs
  could, and training went unstable at 400 steps when it did);
- a per-element MLP whose first output rescales Adam's step (``exp`` of a
  log-scale bounded to +-3) and whose second, weighted by ``residual_mult``
  (0 by default: off), adds a direction of its own. Its inputs are the
  parameter, gradient, momentum and ``sqrt`` of the second moment, each
  normalized per tensor by its root mean square, and Adam's direction ``u``
  as it is (already scale-free: normalizing it too would hide that it is
  small when the gradient is mostly noise). Its last layer starts at zero.

The update of one element, with ``u = m_hat / (sqrt(v_hat) + eps)``::

    p <- p - lr(t) * (u * exp(s) + residual_mult * d) - lr(t) * weight_decay * p

With ``residual_mult = 0`` every step is Adam's direction rescaled per
element, so steps shrink as Adam's do once the gradient is mostly noise; an
additive ``d`` does not shrink then, and in our digits runs it let the test
loss climb between the horizon and twice it.

Scalars are stored as ``hparam_mult`` times smaller numbers (``theta["hparams"]``,
zero at init), so that perturbations and outer steps of ES-style estimators,
which have one size for every entry of ``theta``, move the hyper-parameters
at a useful rate.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from lopt_core.learned import LearnedOptimizer
from lopt_core.optimizers import Optimizer
from lopt_core.validation import non_negative_int, positive_float
from lopt_plugins.learned_optimizers._base import ThetaOptimizer
from lopt_plugins.learned_optimizers.mlp import (
    PerElementMLP,
    check_mlp_args,
    per_element_outputs,
)

# Time scales (in steps) of the schedule's features tanh(t / s). Scales far beyond the
# runs meta-trained on would be nearly linear in t there, hence nearly collinear and
# poorly determined: their weights would drift and decide what happens past the horizon.
SCHEDULE_TIME_SCALES: tuple[float, ...] = (1, 3, 10, 30, 100, 300, 1000)
# Order of the scalar hyper-parameters in theta["hparams"].
HPARAMS = ("log_lr", "log_one_minus_beta1", "log_one_minus_beta2", "log_epsilon", "log_wd")
_NUM_INPUTS = 5  # p, g, m, sqrt(v) (normalized per tensor), u (as it is)
# Soft bounds (log space) of the schedule's multiplier and of the MLP's step rescaling:
# a wild theta (e.g. an ES perturbation) then cannot make steps explode, and (unlike a
# hard clip) the bound leaves no flat region where the meta-gradient vanishes.
_MAX_LOG_SCHEDULE = 5.0
_MAX_LOG_SCALE = 3.0
_MAX_RESIDUAL = 3.0  # Adam's own direction is about +-1 per element
# Betas stay in [0, 1 - 1e-5] and epsilon >= 1e-12, so bias corrections and the
# division by sqrt(v) stay finite for any theta.
_MIN_LOG_ONE_MINUS_BETA = math.log(1e-5)
_MIN_LOG_EPSILON = math.log(1e-12)


def soft_bound(x: jax.Array, bound: float) -> jax.Array:
    """``bound * tanh(x / bound)``: about ``x`` for small ``x``, never beyond ``+-bound``."""
    return bound * jnp.tanh(x / bound)


@struct.dataclass
class ResidualAdamState:
    """Parameters, model state, step count, and Adam's first and second moments."""

    params: Any
    model_state: Any
    iteration: jax.Array
    m: Any
    v: Any
    # The schedule's log-multiplier used at the previous step (its running minimum
    # once past warmup_steps).
    log_mult: jax.Array


class ResidualAdamLOpt(LearnedOptimizer):
    """Adam plus a learned schedule, weight decay and per-element MLP correction.

    ``initial_lr``, ``initial_beta1``, ``initial_beta2``, ``initial_epsilon`` and
    ``initial_weight_decay`` give the optimizer ``theta = init(key)`` stands for
    (the MLP and the schedule start at zero, so that optimizer is exactly
    AdamW; the defaults are PyTorch's AdamW defaults). ``hparam_mult`` scales
    the stored scalars (see the module doc); ``residual_mult`` the MLP's
    additive direction; ``schedule_time_scales`` are the ``s_k`` of the
    schedule, which may raise the learning rate only in the first
    ``warmup_steps`` steps. ``use_mlp=False`` drops the MLP: a learned-schedule AdamW with
    ``5 + len(schedule_time_scales)`` meta-parameters.
    """

    def __init__(
        self,
        initial_lr: float = 1e-3,
        initial_beta1: float = 0.9,
        initial_beta2: float = 0.999,
        initial_epsilon: float = 1e-8,
        initial_weight_decay: float = 1e-2,
        hidden_size: int = 8,
        hidden_layers: int = 1,
        use_mlp: bool = True,
        hparam_mult: float = 3.0,
        residual_mult: float = 0.0,
        schedule_time_scales: tuple[float, ...] = SCHEDULE_TIME_SCALES,
        warmup_steps: int = 30,
    ):
        owner = type(self).__name__
        hidden_size, hidden_layers = check_mlp_args(owner, hidden_size, hidden_layers, (0.9,))
        for what, value in (("initial_beta1", initial_beta1), ("initial_beta2", initial_beta2)):
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{owner}: {what} must be in [0, 1), got {value!r}.")
        initial_lr = positive_float(initial_lr, "initial_lr", owner=owner)
        initial_epsilon = positive_float(initial_epsilon, "initial_epsilon", owner=owner)
        initial_weight_decay = positive_float(
            initial_weight_decay, "initial_weight_decay", owner=owner
        )
        hparam_mult = positive_float(hparam_mult, "hparam_mult", owner=owner)
        if not isinstance(residual_mult, (int, float)) or not 0 <= residual_mult < math.inf:
            raise ValueError(f"{owner}: residual_mult must be >= 0, got {residual_mult!r}.")
        scales = tuple(schedule_time_scales)
        if not scales or not all(isinstance(x, (int, float)) and 0 < x < math.inf for x in scales):
            raise ValueError(
                f"{owner}: schedule_time_scales must be a non-empty tuple of positive numbers, "
                f"got {schedule_time_scales!r}."
            )
        self.schedule_time_scales = tuple(float(x) for x in scales)
        self.warmup_steps = non_negative_int(warmup_steps, "warmup_steps", owner=owner)
        self.initial_lr = float(initial_lr)
        self.initial_beta1 = float(initial_beta1)
        self.initial_beta2 = float(initial_beta2)
        self.initial_epsilon = float(initial_epsilon)
        self.initial_weight_decay = float(initial_weight_decay)
        self.hparam_mult = float(hparam_mult)
        self.residual_mult = float(residual_mult)
        self.use_mlp = bool(use_mlp)
        self.mlp = PerElementMLP(hidden_size, hidden_layers, num_outputs=2)
        # The hyper-parameters theta["hparams"] == 0 stands for, in log space.
        self._offsets = (
            math.log(self.initial_lr),
            math.log(1.0 - self.initial_beta1),
            math.log(1.0 - self.initial_beta2),
            math.log(self.initial_epsilon),
            math.log(self.initial_weight_decay),
        )

    def init(self, key: jax.Array) -> dict[str, Any]:
        """Zero hyper-parameter offsets and schedule; an MLP whose last layer is zero."""
        theta: dict[str, Any] = {
            "hparams": jnp.zeros((len(HPARAMS),), jnp.float32),
            "schedule": jnp.zeros((len(self.schedule_time_scales),), jnp.float32),
        }
        if self.use_mlp:
            mlp = self.mlp.init(key, jnp.zeros((1, _NUM_INPUTS), jnp.float32))
            last = f"Dense_{self.mlp.hidden_layers}"
            params = dict(mlp["params"])
            params[last] = jax.tree_util.tree_map(jnp.zeros_like, params[last])
            theta["mlp"] = {"params": params}
        return theta

    def schedule_log_mult(self, theta: dict[str, Any], iteration: jax.Array) -> jax.Array:
        """The schedule's log-multiplier of the learning rate at ``iteration``, before the
        running minimum (``learning_rates`` applies it)."""
        t = jnp.asarray(iteration, jnp.float32)
        scales = jnp.asarray(self.schedule_time_scales, jnp.float32)
        log_mult = jnp.dot(jnp.tanh(t[..., None] / scales), theta["schedule"])
        return soft_bound(self.hparam_mult * log_mult, _MAX_LOG_SCHEDULE)

    def next_log_mult(
        self, theta: dict[str, Any], iteration: jax.Array, previous: jax.Array
    ) -> jax.Array:
        """The log-multiplier used at ``iteration``, given the one used at the step before."""
        log_mult = self.schedule_log_mult(theta, iteration)
        return jnp.where(iteration <= self.warmup_steps, log_mult, jnp.minimum(log_mult, previous))

    def hyper_parameters(self, theta: dict[str, Any]) -> dict[str, jax.Array]:
        """The base learning rate (before the schedule), betas, epsilon and weight decay."""
        logs = self.hparam_mult * theta["hparams"] + jnp.asarray(self._offsets, jnp.float32)
        raw = {name: logs[i] for i, name in enumerate(HPARAMS)}
        one_minus = lambda x: jnp.exp(jnp.clip(x, _MIN_LOG_ONE_MINUS_BETA, 0.0))
        return {
            "lr": jnp.exp(raw["log_lr"]),
            "beta1": 1.0 - one_minus(raw["log_one_minus_beta1"]),
            "beta2": 1.0 - one_minus(raw["log_one_minus_beta2"]),
            "epsilon": jnp.exp(jnp.maximum(raw["log_epsilon"], _MIN_LOG_EPSILON)),
            "weight_decay": jnp.exp(raw["log_wd"]),
        }

    def learning_rates(self, theta: dict[str, Any], num_steps: int) -> jax.Array:
        """The learning rate used at steps ``0 .. num_steps - 1`` (schedule included)."""
        steps = jnp.arange(num_steps)
        log_mult = self.schedule_log_mult(theta, steps)
        after = jnp.where(steps >= self.warmup_steps, log_mult, jnp.inf)
        capped = jnp.minimum(log_mult, jax.lax.cummin(after))
        log_mult = jnp.where(steps <= self.warmup_steps, log_mult, capped)
        return self.hyper_parameters(theta)["lr"] * jnp.exp(log_mult)

    def opt_fn(self, theta: Any, is_training: bool = False) -> Optimizer:
        return _ResidualAdamOptimizer(self, theta)


class _ResidualAdamOptimizer(ThetaOptimizer):
    lopt: ResidualAdamLOpt
    lopt_name = "ResidualAdamLOpt"

    def init(self, params, model_state=None, num_steps=None, key=None) -> ResidualAdamState:
        zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)
        return ResidualAdamState(
            params=params,
            model_state=model_state,
            iteration=jnp.zeros((), jnp.int32),
            m=zeros(),
            v=zeros(),
            log_mult=jnp.zeros((), jnp.float32),
        )

    def update(self, opt_state, grad, loss=None, model_state=None, key=None) -> ResidualAdamState:
        lopt = self.lopt
        h = lopt.hyper_parameters(self.theta)
        log_mult = lopt.next_log_mult(self.theta, opt_state.iteration, opt_state.log_mult)
        lr = h["lr"] * jnp.exp(log_mult)
        b1, b2 = h["beta1"], h["beta2"]
        t = (opt_state.iteration + 1).astype(jnp.float32)
        # Bias corrections with the (learned, traced) betas.
        c1 = 1.0 - b1**t
        c2 = 1.0 - b2**t
        tree_map = jax.tree_util.tree_map
        m = tree_map(lambda m, g: (b1 * m + (1 - b1) * g).astype(m.dtype), opt_state.m, grad)
        v = tree_map(
            lambda v, g: (b2 * v + (1 - b2) * jnp.square(g)).astype(v.dtype), opt_state.v, grad
        )

        leaves, treedef = jax.tree_util.tree_flatten(opt_state.params)
        gs, ms, vs = (treedef.flatten_up_to(x) for x in (grad, m, v))
        sqrt_vs = [jnp.sqrt(v / c2) for v in vs]
        us = [(m / c1) / (s + h["epsilon"]) for m, s in zip(ms, sqrt_vs, strict=True)]
        directions = us
        if lopt.use_mlp and leaves:
            # The MLP runs elementwise per tensor (per_element_outputs): the same values as
            # PerElementMLP.apply on [p, g, m, sqrt(v)] normalized per tensor and u bounded,
            # up to float rounding, at a fraction of its cost on large models.
            f32 = lambda x: x.astype(jnp.float32)
            columns = [
                [f32(p), f32(g), f32(m), f32(s), f32(soft_bound(u, _MAX_RESIDUAL))]
                for p, g, m, s, u in zip(leaves, gs, ms, sqrt_vs, us, strict=True)
            ]
            outputs = per_element_outputs(self.theta["mlp"], columns, raw_columns=1)
            directions = [
                u * jnp.exp(soft_bound(out[0], _MAX_LOG_SCALE))
                + soft_bound(lopt.residual_mult * out[1], _MAX_RESIDUAL)
                for u, out in zip(us, outputs, strict=True)
            ]
        new = [
            (p - lr * (d + h["weight_decay"] * p)).astype(p.dtype)
            for p, d in zip(leaves, directions, strict=True)
        ]
        return ResidualAdamState(
            params=treedef.unflatten(new),
            model_state=model_state,
            iteration=opt_state.iteration + 1,
            m=m,
            v=v,
            log_mult=log_mult,
        )
