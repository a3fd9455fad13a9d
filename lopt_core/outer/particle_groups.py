"""Particles stepped in groups: vmap within a group, one group after another.

A truncated step vmaps its inner step over every particle (task slot x PES/ES
copy). Each particle's working set (its parameters, optimizer state, and what
a learned optimizer builds per parameter element, e.g. an MLP's hidden
activations) is multiplied by the number of particles; once that outgrows the
CPU's caches, every elementwise pass runs at memory speed. Measured on
pes_mlp (2 cores, 32 MiB L3; ``benchmarks/README.md``): one vmap took 24 ms per
outer step at 8 task slots and 164 ms at 32; in groups, 32 slots take 78 ms and
64 slots 216 ms instead of 260. Grouping changes the schedule only: every
particle computes what it did vmapped (equal up to float rounding), and below
the budget nothing changes at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

# Inner-state elements (all particles of a group together) stepped in one vmap:
# 2**18 float32 = 1 MiB of state, a few MiB with what the update builds from it.
DEFAULT_GROUP_ELEMENTS = 2**18


def particles_per_group(state: Any, budget: int | None) -> int | None:
    """How many particles to vmap at once so a group holds at most ``budget`` state elements.

    ``state`` has a leading particle axis on every leaf. None (no grouping) when
    ``budget`` is None or every particle fits; at least 1.
    """
    leaves = jax.tree_util.tree_leaves(state)
    if budget is None or not leaves:
        return None
    num_particles = leaves[0].shape[0]
    per_particle = max(1, sum(x.size for x in leaves) // max(1, num_particles))
    group = max(1, budget // per_particle)
    return None if group >= num_particles else group


def vmap_in_groups(
    fn: Callable[..., Any],
    theta: Any,
    theta_axis: int | None,
    xs: tuple,
    group: int | None,
) -> Any:
    """``vmap(fn, in_axes=(theta_axis, 0, ...))(theta, *xs)``, ``group`` particles at a time.

    Every leaf of ``xs`` (and of ``theta`` when ``theta_axis`` is 0) has the particle
    axis first. ``group`` None (or not smaller than the particle count) is the plain vmap;
    otherwise ``lax.map`` with that batch size: vmapped groups, one after another.
    """
    if theta_axis not in (None, 0):
        raise ValueError(f"theta_axis must be None or 0, got {theta_axis!r}.")
    leaves = jax.tree_util.tree_leaves(xs)
    if group is None or not leaves or group >= leaves[0].shape[0]:
        return jax.vmap(fn, in_axes=(theta_axis,) + (0,) * len(xs))(theta, *xs)
    if theta_axis is None:
        return jax.lax.map(lambda args: fn(theta, *args), xs, batch_size=group)
    return jax.lax.map(lambda args: fn(*args), (theta, *xs), batch_size=group)
