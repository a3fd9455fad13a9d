"""Sharding the task axis over several devices: a 1-D ``Mesh`` of the local devices.

lopt's vectorized engines (``train_family`` and the meta-training truncated step)
compute one independent problem per task (or particle) along a leading axis.
With more than one local device, that axis is split over a ``jax.sharding.Mesh``
with one axis, ``"tasks"``, through ``jit`` and ``NamedSharding``: inputs are
placed with ``put`` and the traced computation is pinned with ``constrain``;
XLA's SPMD partitioner does the rest (each device computes its tasks; means over
tasks become cross-device reductions).

``mesh="auto"`` (the engines' default) uses every local device when there is
more than one and the number of tasks divides evenly among them, and runs
unsharded otherwise. ``mesh=None`` never shards; a ``Mesh`` is used as given
(the number of tasks must then divide by its size).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

TASK_AXIS = "tasks"

MeshArg = Mesh | str | None


@functools.cache
def local_mesh() -> Mesh | None:
    """A 1-D mesh (axis ``"tasks"``) over every local device; None with a single device."""
    devices = jax.local_devices()
    if len(devices) < 2:
        return None
    return Mesh(np.asarray(devices), (TASK_AXIS,))


def task_mesh(devices: Any = None) -> Mesh:
    """A 1-D mesh with axis ``"tasks"`` over ``devices`` (default: every local device)."""
    devices = jax.local_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("task_mesh needs at least one device, got none.")
    return Mesh(np.asarray(devices), (TASK_AXIS,))


def resolve_mesh(mesh: MeshArg, num_tasks: int) -> Mesh | None:
    """The mesh to shard ``num_tasks`` tasks over, or None to run unsharded.

    ``"auto"``: every local device, when there are several and they divide
    ``num_tasks``. ``None``: unsharded. A ``Mesh`` with a ``"tasks"`` axis: as
    given, and ``num_tasks`` must divide by its size.
    """
    if mesh is None:
        return None
    if isinstance(mesh, str):
        if mesh != "auto":
            raise ValueError(f"mesh must be 'auto', None or a jax.sharding.Mesh, got {mesh!r}.")
        auto = local_mesh()
        if auto is None or num_tasks % auto.size:
            return None
        return auto
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be 'auto', None or a jax.sharding.Mesh, got {type(mesh).__name__}."
        )
    if TASK_AXIS not in mesh.axis_names:
        raise ValueError(
            f"The mesh must have an axis named {TASK_AXIS!r} (the task axis), got axes "
            f"{mesh.axis_names}; build one with lopt_core.sharding.task_mesh()."
        )
    size = mesh.shape[TASK_AXIS]
    if num_tasks % size:
        raise ValueError(
            f"{num_tasks} tasks cannot be split evenly over the mesh's {size} devices; use a "
            f"multiple of {size} tasks, or mesh='auto' (which then runs unsharded)."
        )
    return mesh


def task_sharding(mesh: Mesh, ndim: int, axis: int = 0) -> NamedSharding:
    """The sharding of an ``ndim``-array whose ``axis`` is the task axis (the rest replicated)."""
    spec = [None] * ndim
    spec[axis] = TASK_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def _shardable(x: Any, axis: int) -> bool:
    return hasattr(x, "ndim") and x.ndim > axis


def constrain(tree: Any, mesh: Mesh | None, axis: int = 0) -> Any:
    """Inside ``jit``: pin ``axis`` of every array in ``tree`` to the mesh's task axis.

    Arrays with fewer dimensions (e.g. scalars) are left to the partitioner. With
    ``mesh=None`` the tree comes back unchanged.
    """
    if mesh is None:
        return tree

    def one(x):
        if not _shardable(x, axis):
            return x
        return jax.lax.with_sharding_constraint(x, task_sharding(mesh, x.ndim, axis))

    return jax.tree_util.tree_map(one, tree)


def put(tree: Any, mesh: Mesh | None, axis: int = 0) -> Any:
    """Outside ``jit``: place every array of ``tree`` split along ``axis`` over the mesh.

    Host (numpy) arrays go straight to their devices, each device receiving its
    slice. With ``mesh=None`` the tree comes back unchanged.
    """
    if mesh is None:
        return tree

    def one(x):
        if not _shardable(x, axis):
            return x
        return jax.device_put(x, task_sharding(mesh, x.ndim, axis))

    return jax.tree_util.tree_map(one, tree)
