"""``MLPLOpt``: a per-parameter MLP learned optimizer (Metz et al. 2019, 2022)."""

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


@struct.dataclass
class MLPLOptState:
    """Parameters, model state, step count, and momenta (one trailing axis entry per decay)."""

    params: Any
    model_state: Any
    iteration: jax.Array
    momenta: Any


class MLPLOpt(MLPLearnedOptimizer):
    """Per-parameter MLP optimizer.

    For every parameter element the inputs are the parameter, its gradient and
    momenta at several decays (each normalized per tensor by its second
    moment), plus tanh features of the step count. The MLP outputs a direction
    ``d`` and a log-magnitude ``m``; the update is
    ``p -= d * exp(m * exp_mult) * step_mult``.
    """

    def __init__(
        self,
        hidden_size: int = 32,
        hidden_layers: int = 2,
        momentum_decays: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999, 0.9999),
        exp_mult: float = 1e-3,
        step_mult: float = 1e-3,
    ):
        momentum_decays = tuple(momentum_decays)
        hidden_size, hidden_layers = check_mlp_args(
            type(self).__name__, hidden_size, hidden_layers, momentum_decays
        )
        self.momentum_decays = momentum_decays
        self.exp_mult = exp_mult
        self.step_mult = step_mult
        self.mlp = PerElementMLP(hidden_size, hidden_layers, num_outputs=2)
        self.num_features = 2 + len(momentum_decays) + len(TIME_SCALES)

    def opt_fn(self, theta: Any, is_training: bool = False) -> Optimizer:
        return _MLPLOptOptimizer(self, theta)


class _MLPLOptOptimizer(ThetaOptimizer):
    lopt: MLPLOpt
    lopt_name = "MLPLOpt"

    def init(self, params, model_state=None, num_steps=None, key=None) -> MLPLOptState:
        k = len(self.lopt.momentum_decays)
        return MLPLOptState(
            params=params,
            model_state=model_state,
            iteration=jnp.zeros((), jnp.int32),
            momenta=jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape + (k,), p.dtype), params),
        )

    def update(self, opt_state, grad, loss=None, model_state=None, key=None) -> MLPLOptState:
        lopt = self.lopt
        decays = jnp.asarray(lopt.momentum_decays, jnp.float32)
        # Casts keep every state leaf at its parameter's dtype (the float32 decays and
        # MLP would promote bfloat16 to float32 and break lax.scan carries).
        momenta = jax.tree_util.tree_map(
            lambda m, g: ema(decays, m, g).astype(m.dtype), opt_state.momenta, grad
        )
        time_features = tanh_time_features(opt_state.iteration)
        leaves, treedef = jax.tree_util.tree_flatten(opt_state.params)
        grads = treedef.flatten_up_to(grad)
        moms = treedef.flatten_up_to(momenta)
        # Per-element features (normalized per tensor there), then the MLP over all tensors'
        # elements (see per_element_outputs), with the time features, equal for all
        # elements, folded into the first layer's bias.
        columns = [
            [p, g, *(m[..., k] for k in range(m.shape[-1]))]
            for p, g, m in zip(leaves, grads, moms, strict=True)
        ]
        new_params = mlp_steps(
            self.theta, leaves, columns, time_features, lopt.exp_mult, lopt.step_mult
        )
        return MLPLOptState(
            params=jax.tree_util.tree_unflatten(treedef, new_params),
            model_state=model_state,
            iteration=opt_state.iteration + 1,
            momenta=momenta,
        )
