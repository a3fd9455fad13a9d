"""The small per-element MLP that MLP learned optimizers apply to every parameter."""

from __future__ import annotations

import flax.linen as nn
import jax


class PerElementMLP(nn.Module):
    """An MLP over the last axis: ``[..., features] -> [..., num_outputs]``.

    The same weights serve every element of every parameter tensor, so the
    meta-parameters stay tiny whatever the size of the model being trained.
    """

    hidden_size: int
    hidden_layers: int
    num_outputs: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(self.hidden_layers):
            x = nn.relu(nn.Dense(self.hidden_size)(x))
        return nn.Dense(self.num_outputs)(x)


def check_mlp_args(owner: str, hidden_size: int, hidden_layers: int, decays: tuple) -> None:
    """Reject hidden sizes, layer counts and decay rates that cannot work."""
    if not isinstance(hidden_size, int) or hidden_size < 1:
        raise ValueError(f"{owner}: hidden_size must be a positive int, got {hidden_size!r}.")
    if not isinstance(hidden_layers, int) or hidden_layers < 0:
        raise ValueError(f"{owner}: hidden_layers must be an int >= 0, got {hidden_layers!r}.")
    bad = [d for d in decays if not 0 <= d < 1]
    if bad or not decays:
        raise ValueError(f"{owner}: decays must be a non-empty tuple in [0, 1), got {decays!r}.")
