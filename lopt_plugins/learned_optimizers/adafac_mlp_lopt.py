"""``AdafacMLPLOpt``: the small, fast MLP optimizer with Adafactor-style features.

After "Practical tradeoffs between memory, compute, and performance in learned
optimizers" (Metz et al. 2022): besides momenta, each element sees second
moments factored into row and column accumulators (memory ``O(rows + cols)``
per matrix, as in Adafactor), and gradients and momenta preconditioned by them.
A tiny MLP (4 hidden units) keeps the per-step cost close to Adam's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from lopt_core.optimizers import Optimizer
from lopt_plugins.learned_optimizers._base import ThetaOptimizer
from lopt_plugins.learned_optimizers.features import TIME_SCALES, ema, tanh_time_features
from lopt_plugins.learned_optimizers.mlp import (
    MLPLearnedOptimizer,
    PerElementMLP,
    check_mlp_args,
    mlp_steps,
)

_EPS = 1e-30  # Adafactor's epsilon on squared gradients


@struct.dataclass
class FactoredMoments:
    """Adafactor accumulators for one tensor, one trailing axis entry per decay.

    Matrices (ndim >= 2) keep ``row`` ``[..., rows, K]`` and ``col`` ``[..., cols, K]``;
    vectors and scalars keep the full second moment in ``full``.
    """

    row: Any
    col: Any
    full: Any


@struct.dataclass
class AdafacMLPLOptState:
    """Parameters, model state, step count, momenta, RMS and factored second moments."""

    params: Any
    model_state: Any
    iteration: jax.Array
    momenta: Any
    rms: Any
    factored: Any


def _init_factored(p: jax.Array, k: int) -> FactoredMoments:
    if p.ndim >= 2:
        return FactoredMoments(
            row=jnp.zeros(p.shape[:-1] + (k,), p.dtype),
            col=jnp.zeros(p.shape[:-2] + p.shape[-1:] + (k,), p.dtype),
            full=None,
        )
    return FactoredMoments(row=None, col=None, full=jnp.zeros(p.shape + (k,), p.dtype))


def _update_factored(decays, f: FactoredMoments, g: jax.Array) -> FactoredMoments:
    g2 = jnp.square(g) + _EPS
    # Casts keep the accumulators' dtype (float32 decays would promote bfloat16).
    if f.full is not None:
        return f.replace(full=ema(decays, f.full, g2).astype(f.full.dtype))
    return f.replace(
        row=ema(decays, f.row, jnp.mean(g2, axis=-1)).astype(f.row.dtype),
        col=ema(decays, f.col, jnp.mean(g2, axis=-2)).astype(f.col.dtype),
    )


def _factored_second_moment(f: FactoredMoments) -> jax.Array:
    """The (rank-one for matrices) estimate of the second moment, ``[..., K]``."""
    if f.full is not None:
        return f.full
    row_mean = jnp.mean(f.row, axis=-2, keepdims=True)  # [..., 1, K]
    row_factor = f.row / (row_mean + _EPS)  # [..., rows, K]
    return row_factor[..., :, None, :] * f.col[..., None, :, :]


def _factored_rsqrt_columns(f: FactoredMoments) -> list[jax.Array]:
    """``rsqrt(second moment + 1e-8)`` for each decay, each shaped like the parameter.

    For matrices the rank-one estimate ``row_factor[i] * col[j]`` is formed
    element by element, never as a ``[..., rows, cols, K]`` array.
    """
    if f.full is not None:
        return [jax.lax.rsqrt(f.full[..., k] + 1e-8) for k in range(f.full.shape[-1])]
    row_mean = jnp.mean(f.row, axis=-2, keepdims=True)  # [..., 1, K]
    row_factor = f.row / (row_mean + _EPS)  # [..., rows, K]
    return [
        jax.lax.rsqrt(row_factor[..., :, None, k] * f.col[..., None, :, k] + 1e-8)
        for k in range(f.row.shape[-1])
    ]


class AdafacMLPLOpt(MLPLearnedOptimizer):
    """Small MLP optimizer with momenta, RMS and factored (Adafactor) second moments.

    Per element, the inputs are: parameter, gradient, momenta, RMS, gradient and
    momenta scaled by ``rsqrt`` of the RMS, gradient scaled by ``rsqrt`` of each
    factored second moment, and those ``rsqrt`` terms, all normalized per tensor,
    plus tanh time features. Update: ``p -= d * exp(m * exp_mult) * step_mult``.
    """

    def __init__(
        self,
        hidden_size: int = 4,
        hidden_layers: int = 2,
        momentum_decays: tuple[float, ...] = (0.9, 0.99, 0.999),
        rms_decay: float = 0.999,
        adafactor_decays: tuple[float, ...] = (0.9, 0.99, 0.999),
        exp_mult: float = 1e-3,
        step_mult: float = 1e-3,
    ):
        momentum_decays, adafactor_decays = tuple(momentum_decays), tuple(adafactor_decays)
        owner = type(self).__name__
        hidden_size, hidden_layers = check_mlp_args(
            owner, hidden_size, hidden_layers, momentum_decays
        )
        check_mlp_args(owner, hidden_size, hidden_layers, adafactor_decays + (rms_decay,))
        self.momentum_decays = momentum_decays
        self.rms_decay = rms_decay
        self.adafactor_decays = adafactor_decays
        self.exp_mult = exp_mult
        self.step_mult = step_mult
        self.mlp = PerElementMLP(hidden_size, hidden_layers, num_outputs=2)
        km, ka = len(momentum_decays), len(adafactor_decays)
        # p, g, momenta, rms, g*rsqrt(rms), momenta*rsqrt(rms), g*rsqrt(fac), rsqrt(fac)
        self.num_features = 2 + km + 1 + 1 + km + 2 * ka + len(TIME_SCALES)

    def opt_fn(self, theta: Any, is_training: bool = False) -> Optimizer:
        return _AdafacMLPLOptOptimizer(self, theta)


class _AdafacMLPLOptOptimizer(ThetaOptimizer):
    lopt: AdafacMLPLOpt
    lopt_name = "AdafacMLPLOpt"

    def init(self, params, model_state=None, num_steps=None, key=None) -> AdafacMLPLOptState:
        km, ka = len(self.lopt.momentum_decays), len(self.lopt.adafactor_decays)
        tree_map = jax.tree_util.tree_map
        return AdafacMLPLOptState(
            params=params,
            model_state=model_state,
            iteration=jnp.zeros((), jnp.int32),
            momenta=tree_map(lambda p: jnp.zeros(p.shape + (km,), p.dtype), params),
            rms=tree_map(jnp.zeros_like, params),
            factored=tree_map(lambda p: _init_factored(p, ka), params),
        )

    def update(self, opt_state, grad, loss=None, model_state=None, key=None):
        lopt = self.lopt
        tree_map = jax.tree_util.tree_map
        momentum_decays = jnp.asarray(lopt.momentum_decays, jnp.float32)
        adafactor_decays = jnp.asarray(lopt.adafactor_decays, jnp.float32)
        momenta = tree_map(
            lambda m, g: ema(momentum_decays, m, g).astype(m.dtype), opt_state.momenta, grad
        )
        rms = tree_map(
            lambda v, g: lopt.rms_decay * v + (1 - lopt.rms_decay) * jnp.square(g),
            opt_state.rms,
            grad,
        )
        is_factored = lambda x: isinstance(x, FactoredMoments)
        factored = tree_map(
            lambda f, g: _update_factored(adafactor_decays, f, g),
            opt_state.factored,
            grad,
            is_leaf=is_factored,
        )
        time_features = tanh_time_features(opt_state.iteration)

        def columns(p, g, m, v, f):
            """The per-element features, as columns shaped like ``p`` (normalized later)."""
            rsqrt_v = jax.lax.rsqrt(v + 1e-8)
            moms = [m[..., k] for k in range(m.shape[-1])]
            rsqrt_fac = _factored_rsqrt_columns(f)
            return (
                [p, g, *moms, v, g * rsqrt_v, *(mk * rsqrt_v for mk in moms)]
                + [g * r for r in rsqrt_fac]
                + rsqrt_fac
            )

        leaves, treedef = jax.tree_util.tree_flatten(opt_state.params)
        per_leaf = [treedef.flatten_up_to(t) for t in (grad, momenta, rms)]
        per_leaf.append(treedef.flatten_up_to(factored))
        feature_columns = [columns(*args) for args in zip(leaves, *per_leaf, strict=True)]
        # The small MLP runs elementwise per tensor (see per_element_outputs).
        new_params = mlp_steps(
            self.theta, leaves, feature_columns, time_features, lopt.exp_mult, lopt.step_mult
        )
        return AdafacMLPLOptState(
            params=jax.tree_util.tree_unflatten(treedef, new_params),
            model_state=model_state,
            iteration=opt_state.iteration + 1,
            momenta=momenta,
            rms=rms,
            factored=factored,
        )
