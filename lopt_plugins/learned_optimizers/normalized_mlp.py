"""``NormalizedMLPLOpt``: a per-parameter MLP whose update is RMS-normalized per tensor.

In the spirit of Celo2 (a simple normalized architecture generalizes far
beyond the tasks it was meta-trained on). Per element, with Adam's moments
``m``, ``v`` and ``u = m_hat / (sqrt(v_hat) + eps)``::

    d = u + mlp(p, g, m, sqrt(v), u; progress)        (the MLP's last layer starts at 0)
    d <- d / rms(d)                                    (per tensor: every tensor moves
                                                        by the same RMS step)
    p <- p - lr(t) * (d + weight_decay * p)

so at initialization it is a per-tensor normalized Adam with decoupled weight
decay. The MLP's inputs are normalized per tensor by their root mean square;
it also sees training progress ``s = t / T`` (``T``: the planned number of
steps, ``num_steps`` of ``Optimizer.init``).

The step schedule is ``lr(t) = lr * base(s) * exp(b(sum_k w_k cos(pi k s)))``:
``base`` is a fixed linear warmup (the first ``warmup_fraction`` of the run)
then a cosine decay to ``final_lr_fraction``; the ``w_k`` (``schedule_terms``
of them) are learned, ``b`` a soft bound of +-3 in log space; ``schedule=
"fixed"`` keeps ``base`` alone. Because ``s`` is a fraction of the run, a run
4x longer than those meta-trained on stretches the schedule rather than
leaving it; past ``T``, ``s`` stays at 1.

``orthogonalize=True``: tensors of 2 or more dimensions (as matrices: leading
axes times the last) take the Newton-Schulz orthogonalized ``d`` instead (as
Muon does; scaled so that its RMS is about 1), and 1-D tensors (biases,
scales) take AdamW's ``u`` directly.

``conditioner_size=H > 0`` adds a per-tensor recurrent conditioner (as the
reference's ``rnn_mlp_lopt`` and celo's learned scheduler): a GRU of ``H``
units, shared by all tensors, steps once per update on each tensor's
statistics (log RMS of parameter, gradient, momentum and ``sqrt(v)``, RMS of
``u``, progress); its state conditions that tensor's MLP (``H`` more shared
inputs) and a head sets a per-tensor step multiplier ``exp(b(.))`` (zero at
init, so it starts as the unconditioned optimizer).

``theta``: ``hparams`` (log learning rate and log weight decay, stored divided
by ``hparam_mult``, zero at init), ``schedule`` (``w``), ``mlp``, and
``conditioner`` when there is one.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from lopt_core.learned import LearnedOptimizer
from lopt_core.optimizers import Optimizer
from lopt_core.validation import check_int, one_of, positive_float, positive_int
from lopt_plugins.learned_optimizers._base import ThetaOptimizer
from lopt_plugins.learned_optimizers.mlp import (
    PerElementMLP,
    check_mlp_args,
    init_mlp,
    per_element_outputs,
)

_NUM_INPUTS = 5  # p, g, m, sqrt(v), u: normalized per tensor
_NUM_SHARED = 2  # progress s and cos(pi s)
_MAX_LOG_SCHEDULE = 3.0
_MAX_DIRECTION = 3.0
# Muon's quintic Newton-Schulz coefficients (Jordan et al., 2024).
_NS_COEFFS = (3.4445, -4.7750, 2.0315)


def soft_bound(x: jax.Array, bound: float) -> jax.Array:
    """``bound * tanh(x / bound)``: about ``x`` when small, never beyond ``+-bound``."""
    return bound * jnp.tanh(x / bound)


def newton_schulz(x: jax.Array, steps: int = 5) -> jax.Array:
    """An approximately orthogonal matrix with ``x``'s singular vectors (singular values ~1)."""
    a, b, c = _NS_COEFFS
    transpose = x.shape[0] > x.shape[1]
    y = x.T if transpose else x
    y = y / (jnp.linalg.norm(y) + 1e-7)
    for _ in range(steps):
        gram = y @ y.T
        y = a * y + (b * gram + c * gram @ gram) @ y
    return y.T if transpose else y


def _rms(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(x)) + 1e-30)


_NUM_STATS = 6  # per tensor: log RMS of p, g, m, sqrt(v); RMS of u; progress


class TensorConditioner(nn.Module):
    """One GRU step on a tensor's statistics: its new state and a log step multiplier."""

    hidden_size: int

    @nn.compact
    def __call__(self, state: jax.Array, stats: jax.Array) -> tuple[jax.Array, jax.Array]:
        state, _ = nn.GRUCell(self.hidden_size)(state, stats)
        zeros = nn.initializers.zeros
        log_step = nn.Dense(1, kernel_init=zeros, bias_init=zeros)(state)[0]
        return state, log_step


def _tensor_stats(p, g, m, sqrt_v, u, progress) -> jax.Array:
    log_rms = lambda x: jnp.log(_rms(x) + 1e-12) / 10.0  # about [-3, 1] for usual scales
    return jnp.stack(
        [log_rms(p), log_rms(g), log_rms(m), log_rms(sqrt_v), _rms(u), progress]
    ).astype(jnp.float32)


@struct.dataclass
class NormalizedMLPState:
    """Parameters, model state, step count, planned steps and Adam's moments (float32)."""

    params: Any
    model_state: Any
    iteration: jax.Array
    num_steps: jax.Array
    m: Any
    v: Any
    conditioner: Any = ()  # per-tensor GRU states (a list, in leaf order), when conditioned


class NormalizedMLPLOpt(LearnedOptimizer):
    """A per-tensor RMS-normalized per-parameter MLP update with a learned step schedule.

    ``initial_lr`` and ``initial_weight_decay`` are what ``theta = init(key)``
    stands for (with the MLP's last layer at zero it is normalized AdamW with
    ``beta1``, ``beta2``, ``epsilon``); ``default_num_steps`` is the ``T`` of
    runs that give no ``num_steps``. See the module doc.
    """

    def __init__(
        self,
        initial_lr: float = 3e-3,
        initial_weight_decay: float = 1e-2,
        hidden_size: int = 8,
        hidden_layers: int = 1,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        schedule: str = "learned",
        schedule_terms: int = 4,
        warmup_fraction: float = 0.05,
        final_lr_fraction: float = 0.1,
        orthogonalize: bool = False,
        newton_schulz_steps: int = 5,
        hparam_mult: float = 3.0,
        default_num_steps: int = 1000,
        conditioner_size: int = 0,
    ):
        owner = type(self).__name__
        hidden_size, hidden_layers = check_mlp_args(owner, hidden_size, hidden_layers, (beta1,))
        for what, value in (("beta1", beta1), ("beta2", beta2)):
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{owner}: {what} must be in [0, 1), got {value!r}.")
        for what, value in (("warmup_fraction", warmup_fraction), ("final_lr_fraction",
                            final_lr_fraction)):  # fmt: skip
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{owner}: {what} must be in [0, 1), got {value!r}.")
        self.initial_lr = positive_float(initial_lr, "initial_lr", owner=owner)
        self.initial_weight_decay = positive_float(
            initial_weight_decay, "initial_weight_decay", owner=owner
        )
        self.epsilon = positive_float(epsilon, "epsilon", owner=owner)
        self.hparam_mult = positive_float(hparam_mult, "hparam_mult", owner=owner)
        self.schedule = one_of(schedule, "schedule", ("learned", "fixed"), owner=owner)
        self.schedule_terms = positive_int(schedule_terms, "schedule_terms", owner=owner)
        self.newton_schulz_steps = positive_int(newton_schulz_steps, "newton_schulz_steps")
        self.default_num_steps = positive_int(default_num_steps, "default_num_steps")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.warmup_fraction = float(warmup_fraction)
        self.final_lr_fraction = float(final_lr_fraction)
        self.orthogonalize = bool(orthogonalize)
        self.mlp = PerElementMLP(hidden_size, hidden_layers, num_outputs=1)
        self.conditioner_size = check_int(conditioner_size, "conditioner_size", minimum=0)
        self.conditioner = TensorConditioner(self.conditioner_size or 1)
        self._offsets = (math.log(self.initial_lr), math.log(self.initial_weight_decay))

    def init(self, key: jax.Array) -> dict[str, Any]:
        """Zero hyper-parameter offsets and schedule; an MLP whose last layer is zero."""
        mlp_key, conditioner_key = jax.random.split(key)
        mlp = init_mlp(self.mlp, mlp_key, _NUM_INPUTS + _NUM_SHARED + self.conditioner_size)
        params = dict(mlp["params"])
        last = f"Dense_{self.mlp.hidden_layers}"
        params[last] = jax.tree_util.tree_map(jnp.zeros_like, params[last])
        theta: dict[str, Any] = {
            "hparams": jnp.zeros((2,), jnp.float32),
            "mlp": {"params": params},
        }
        if self.schedule == "learned":
            theta["schedule"] = jnp.zeros((self.schedule_terms,), jnp.float32)
        if self.conditioner_size:
            h = jnp.zeros((self.conditioner_size,), jnp.float32)
            stats = jnp.zeros((_NUM_STATS,), jnp.float32)
            theta["conditioner"] = self.conditioner.init(conditioner_key, h, stats)
        return theta

    def hyper_parameters(self, theta: dict[str, Any]) -> dict[str, jax.Array]:
        """The base learning rate (before the schedule) and the weight decay."""
        logs = self.hparam_mult * theta["hparams"] + jnp.asarray(self._offsets, jnp.float32)
        return {"lr": jnp.exp(logs[0]), "weight_decay": jnp.exp(logs[1])}

    def learning_rate(self, theta: dict[str, Any], progress: jax.Array) -> jax.Array:
        """The learning rate at ``progress`` (``t / T``, any shape; clipped to [0, 1])."""
        s = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
        warm = self.warmup_fraction
        after = jnp.clip((s - warm) / max(1.0 - warm, 1e-6), 0.0, 1.0)
        floor = self.final_lr_fraction
        decay = floor + (1.0 - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * after))
        base = jnp.where(s < warm, (s + 1e-3) / (warm + 1e-3), decay) if warm > 0 else decay
        if self.schedule == "learned":
            k = jnp.arange(1, self.schedule_terms + 1, dtype=jnp.float32)
            terms = jnp.cos(jnp.pi * k * s[..., None]) @ theta["schedule"]
            base = base * jnp.exp(soft_bound(self.hparam_mult * terms, _MAX_LOG_SCHEDULE))
        return self.hyper_parameters(theta)["lr"] * base

    def opt_fn(self, theta: Any, is_training: bool = False) -> Optimizer:
        return _NormalizedMLPOptimizer(self, theta)


class _NormalizedMLPOptimizer(ThetaOptimizer):
    lopt: NormalizedMLPLOpt
    lopt_name = "NormalizedMLPLOpt"

    def init(self, params, model_state=None, num_steps=None, key=None) -> NormalizedMLPState:
        zeros = lambda: jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        total = self.lopt.default_num_steps if num_steps is None else num_steps
        return NormalizedMLPState(
            params=params,
            model_state=model_state,
            iteration=jnp.zeros((), jnp.int32),
            num_steps=jnp.asarray(total, jnp.float32),
            m=zeros(),
            v=zeros(),
            conditioner=[
                jnp.zeros((self.lopt.conditioner_size,), jnp.float32)
                for _ in jax.tree_util.tree_leaves(params)
            ]
            if self.lopt.conditioner_size
            else (),
        )

    def update(self, opt_state, grad, loss=None, model_state=None, key=None) -> NormalizedMLPState:
        lopt, theta = self.lopt, self.theta
        tree = jax.tree_util
        b1, b2 = lopt.beta1, lopt.beta2
        t = (opt_state.iteration + 1).astype(jnp.float32)
        progress = opt_state.iteration.astype(jnp.float32) / jnp.maximum(opt_state.num_steps, 1.0)
        lr = lopt.learning_rate(theta, progress)
        weight_decay = lopt.hyper_parameters(theta)["weight_decay"]
        grad32 = tree.tree_map(lambda g: g.astype(jnp.float32), grad)
        m = tree.tree_map(lambda m, g: b1 * m + (1 - b1) * g, opt_state.m, grad32)
        v = tree.tree_map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), opt_state.v, grad32)
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t

        params, treedef = tree.tree_flatten(opt_state.params)
        gs, ms, vs = (treedef.flatten_up_to(x) for x in (grad32, m, v))
        sqrt_vs = [jnp.sqrt(v / c2) for v in vs]
        us = [
            soft_bound((m / c1) / (s + lopt.epsilon), _MAX_DIRECTION)
            for m, s in zip(ms, sqrt_vs, strict=True)
        ]
        columns = [
            [p.astype(jnp.float32), g, m, s, u]
            for p, g, m, s, u in zip(params, gs, ms, sqrt_vs, us, strict=True)
        ]
        shared = jnp.stack([jnp.clip(progress, 0.0, 1.0), jnp.cos(jnp.pi * progress)])
        step_mults, states = [1.0] * len(params), opt_state.conditioner
        if lopt.conditioner_size:
            outputs, states = [], []
            for cols, h in zip(columns, opt_state.conditioner, strict=True):
                stats = _tensor_stats(*cols, jnp.clip(progress, 0.0, 1.0))
                h, log_step = lopt.conditioner.apply(theta["conditioner"], h, stats)
                states.append(h)
                step_mults.append(jnp.exp(soft_bound(log_step, _MAX_LOG_SCHEDULE)))
                tensor_shared = jnp.concatenate([shared, h])
                outputs += per_element_outputs(theta["mlp"], [cols], tensor_shared)
            step_mults = step_mults[len(params) :]
        else:
            outputs = per_element_outputs(theta["mlp"], columns, shared) if params else []
        new = []
        for p, u, (delta,), mult in zip(params, us, outputs, step_mults, strict=True):
            d = u + delta
            if lopt.orthogonalize and p.ndim >= 2 and min(p.shape[-1], p.size // p.shape[-1]) > 1:
                matrix = d.reshape(-1, p.shape[-1])
                ortho = newton_schulz(matrix, lopt.newton_schulz_steps)
                d = (ortho * math.sqrt(max(matrix.shape))).reshape(p.shape)
            elif lopt.orthogonalize:
                d = u  # AdamW's direction for 1-D tensors
            else:
                d = d / _rms(d)
            p32 = p.astype(jnp.float32)
            new.append((p32 - lr * mult * (d + weight_decay * p32)).astype(p.dtype))
        return NormalizedMLPState(
            params=treedef.unflatten(new),
            model_state=model_state,
            iteration=opt_state.iteration + 1,
            num_steps=opt_state.num_steps,
            m=m,
            v=v,
            conditioner=states,
        )
