"""The vectorized truncated step: many inner problems, unrolled a truncation at a time.

The state holds, for each of ``P`` "particles" (inner problems), the learned
optimizer's state, the step counter, the sampled task cfg and the horizon.
An unroll is one ``lax.scan`` over pre-stacked batches; inside it, problems
that reached their horizon restart (new cfg, new init) in place.

Particles are grouped by *task slot*: particles with the same ``task_id`` share
task cfgs, initializations and data, which is what antithetic estimators need
(the ``+eps`` and ``-eps`` copies of a problem differ only in ``theta``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lopt_core.datasets import SPLITS, stack_batches
from lopt_core.jit import BackendJit
from lopt_core.learned.base import LearnedOptimizer
from lopt_core.outer.particle_groups import (
    DEFAULT_GROUP_ELEMENTS,
    particles_per_group,
    vmap_in_groups,
)
from lopt_core.outer.truncation_schedules import TruncationSchedule
from lopt_core.sharding import MeshArg, constrain, resolve_mesh
from lopt_core.static_graph import sample_cfgs
from lopt_core.tasks import TaskFamily
from lopt_core.validation import non_negative_int, positive_int


@struct.dataclass
class InnerState:
    """The inner problems' state; every field leads with the particle axis."""

    opt_state: Any
    inner_step: jax.Array  # int32 [P]: steps taken in the current problem
    horizon: jax.Array  # int32 [P]: steps after which the problem restarts
    cfg: Any  # the sampled task cfgs


@struct.dataclass
class UnrollOutput:
    """Per step and particle (``[T, P]``): losses, and whether the step began a new problem."""

    train_loss: jax.Array
    meta_loss: jax.Array
    restarted: jax.Array


# Keys of a step of one particle: 5 for a restart (cfg, init, opt, horizon, offset), then
# 3 for the step itself (loss, update, meta-loss).
_NUM_RESTART_KEYS = 5
_NUM_STEP_KEYS = _NUM_RESTART_KEYS + 3


def unroll_keys(key: jax.Array, task_ids: jax.Array, num_steps: int) -> jax.Array:
    """Every PRNG key of an unroll, drawn at once before the scan: ``[T, P, 8]``.

    Step ``t`` of particle ``p`` uses ``split(fold_in(split(key, T)[t], task_ids[p]), 8)``,
    so particles with equal task ids get equal keys. Three vectorized draws replace
    the several per-step ones inside the loop: each random call site costs XLA a
    while loop of kernels to compile, and the keys are tiny.
    """
    per_step = jax.random.split(key, num_steps)

    def one(step_key, task_id):
        return jax.random.split(jax.random.fold_in(step_key, task_id), _NUM_STEP_KEYS)

    return jax.vmap(lambda k: jax.vmap(lambda i: one(k, i))(task_ids))(per_step)


def _tiles(task_ids: Any, num_slots: int) -> int | None:
    """``r`` when ``task_ids`` is known at trace time to be ``r`` copies of ``0..num_slots-1``."""
    try:
        ids = np.asarray(task_ids)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None  # traced ids: not known until run time
    if ids.ndim != 1 or ids.size == 0 or ids.size % num_slots:
        return None
    reps = ids.size // num_slots
    return reps if np.array_equal(ids, np.tile(np.arange(num_slots), reps)) else None


def _same_structure(batch: Any, treedef: Any, first: list) -> list:
    """``batch``'s leaves, checked against the first task's structure and shapes."""
    leaves, other = jax.tree_util.tree_flatten(batch)
    if other != treedef or any(a.shape != b.shape for a, b in zip(leaves, first, strict=True)):
        raise ValueError(
            "A dataset iterator must yield batches of one fixed structure and shape; got "
            f"{jax.tree_util.tree_map(np.shape, batch)} after "
            f"{jax.tree_util.tree_map(np.shape, jax.tree_util.tree_unflatten(treedef, first))}."
        )
    return leaves


def tree_where(mask: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Select per particle (leading axis) between two pytrees of equal structure."""

    def select(a, b):
        m = mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim))
        return jnp.where(m, a, b)

    return jax.tree_util.tree_map(select, on_true, on_false)


class VectorizedLOptTruncatedStep:
    """Unrolls ``num_tasks`` inner problems of ``task_family`` with a learned optimizer.

    Data for a whole truncation comes from the family's ``train`` split (one
    batch per step and task) and the meta-loss from ``meta_loss_split``
    (``outer_valid`` by default; ``"train"`` reuses the step's training batch).
    The meta-loss of a step is the task's ``normalizer`` of its loss *after*
    that step's update, so it depends on ``theta``.
    ``random_initial_iteration_offset=K`` starts each first problem at a random
    step counter in ``[0, K)`` so that restarts are spread out over time.

    ``mesh``: with several local devices the particle axis is sharded over them
    (``"auto"``, when they divide the number of particles; see
    ``lopt_core.sharding``); ``None`` keeps one device; a ``Mesh`` is used as given.
    ``group_elements``: on one device, particles are vmapped in groups of at most this
    many inner-state elements, one group after another, so that large particle sets
    stay in cache (``lopt_core.outer.particle_groups``); None vmaps them all at once.
    """

    def __init__(
        self,
        task_family: TaskFamily,
        learned_opt: LearnedOptimizer,
        trunc_sched: TruncationSchedule,
        num_tasks: int,
        random_initial_iteration_offset: int = 0,
        meta_loss_split: str = "outer_valid",
        mesh: MeshArg = "auto",
        group_elements: int | None = DEFAULT_GROUP_ELEMENTS,
    ):
        if not isinstance(task_family, TaskFamily):
            raise TypeError(
                f"task_family must be a TaskFamily, got {type(task_family).__name__}; wrap a "
                "single Task with lopt_core.single_task_to_family(task)."
            )
        if not isinstance(learned_opt, LearnedOptimizer):
            raise TypeError(
                f"learned_opt must be a LearnedOptimizer, got {type(learned_opt).__name__}."
            )
        if not isinstance(trunc_sched, TruncationSchedule):
            raise TypeError(
                f"trunc_sched must be a TruncationSchedule, got {type(trunc_sched).__name__}."
            )
        num_tasks = positive_int(num_tasks, "num_tasks")
        offset = non_negative_int(
            random_initial_iteration_offset, "random_initial_iteration_offset"
        )
        if meta_loss_split not in SPLITS:
            raise ValueError(
                f"meta_loss_split must be one of {', '.join(SPLITS)}, got {meta_loss_split!r}."
            )
        self.task_family = task_family
        self.learned_opt = learned_opt
        self.trunc_sched = trunc_sched
        self.num_tasks = int(num_tasks)
        self.random_initial_iteration_offset = int(offset)
        self.meta_loss_split = meta_loss_split
        resolve_mesh(mesh, 0)  # rejects a bad mesh argument now
        self.mesh = mesh
        self.group_elements = (
            None if group_elements is None else positive_int(group_elements, "group_elements")
        )
        # init_state compiled (once per truncated step): run eagerly, its many small
        # random draws would each dispatch (and compile) separately.
        self.init_state_jit = BackendJit(self.init_state, static_argnames="theta_axis")
        self._check_family()

    def particle_mesh(self, num_particles: int):
        """The mesh ``num_particles`` particles are sharded over (None: one device)."""
        return resolve_mesh(self.mesh, num_particles)

    def _check_family(self) -> None:
        # Fails early and clearly; traced only (eval_shape), so nothing is compiled.
        key = jax.ShapeDtypeStruct((2,), jnp.uint32)
        jax.eval_shape(lambda k: sample_cfgs(self.task_family, k, 1), key)

    # ----- data (host side) -----

    def _splits(self) -> tuple[str, ...]:
        if self.meta_loss_split == "train":
            return ("train",)
        return ("train", self.meta_loss_split)

    def get_batches(self, num_steps: int) -> Any:
        """Draw ``num_steps`` batches per task slot: ``{split: leaves [T, num_tasks, ...]}``.

        None for data-free families.
        """
        datasets = self.task_family.datasets
        if datasets is None:
            return None
        out = {}
        for split in self._splits():
            iterator = datasets.split(split)
            # Task slot after task slot (the draw order resumed runs rely on), written
            # straight into a step-major array: a transposed view would cost a copy
            # on the way to the device.
            per_task = stack_batches(iterator, num_steps)
            leaves, treedef = jax.tree_util.tree_flatten(per_task)
            stacked = [np.empty((num_steps, self.num_tasks) + x.shape[1:], x.dtype) for x in leaves]
            for task in range(self.num_tasks):
                if task:
                    per_task = stack_batches(iterator, num_steps)
                    leaves = _same_structure(per_task, treedef, leaves)
                for dst, src in zip(stacked, leaves, strict=True):
                    dst[:, task] = src
            out[split] = jax.tree_util.tree_unflatten(treedef, stacked)
        return out

    # ----- pure functions (traced) -----

    def _fresh_problem(self, theta: Any, key: jax.Array, offset_max: int) -> InnerState:
        """One newly started inner problem (not vectorized)."""
        return self._fresh_problem_from_keys(
            theta, jax.random.split(key, _NUM_RESTART_KEYS), offset_max
        )

    def _fresh_problem_from_keys(self, theta: Any, keys: jax.Array, offset_max: int) -> InnerState:
        """One newly started inner problem from its 5 keys (cfg, init, opt, horizon, offset)."""
        cfg_key, init_key, opt_key, horizon_key, offset_key = (keys[i] for i in range(5))
        cfg = self.task_family.sample(cfg_key)
        task = self.task_family.task_fn(cfg)
        params, model_state = task.init_with_state(init_key)
        horizon = self.trunc_sched.sample_horizon(horizon_key)
        opt = self.learned_opt.opt_fn(theta, is_training=True)
        opt_state = opt.init(params, model_state, num_steps=horizon, key=opt_key)
        if offset_max > 0:
            inner_step = jax.random.randint(offset_key, (), 0, offset_max, jnp.int32)
        else:
            inner_step = jnp.zeros((), jnp.int32)
        return InnerState(opt_state=opt_state, inner_step=inner_step, horizon=horizon, cfg=cfg)

    def init_state(
        self, theta: Any, key: jax.Array, task_ids: jax.Array, theta_axis: int | None = None
    ) -> InnerState:
        """Fresh problems for particles ``task_ids`` (equal ids get equal problems).

        ``theta_axis=0`` when ``theta`` carries one set of meta-parameters per particle.
        """
        mesh = self.particle_mesh(task_ids.shape[0])
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(task_ids)
        if theta_axis is not None:
            theta = constrain(theta, mesh, theta_axis)
        state = jax.vmap(
            lambda th, k: self._fresh_problem(th, k, self.random_initial_iteration_offset),
            in_axes=(theta_axis, 0),
        )(theta, constrain(keys, mesh))
        return constrain(state, mesh)

    def _inner_step(self, theta, state: InnerState, keys, train_batch, meta_batch):
        """One step of one problem: update on the train batch, meta-loss after it.

        ``keys`` holds the step's three keys: loss, update and meta-loss.
        """
        task = self.task_family.task_fn(state.cfg)
        opt = self.learned_opt.opt_fn(theta, is_training=True)
        loss_key, update_key, meta_key = keys[0], keys[1], keys[2]
        model_state = opt.get_state(state.opt_state)

        def loss_fn(params):
            loss, new_state, _ = task.loss_with_state_and_aux(
                params, model_state, loss_key, train_batch
            )
            return loss, new_state

        (loss, new_model_state), grad = jax.value_and_grad(loss_fn, has_aux=True)(
            opt.get_params(state.opt_state)
        )
        opt_state = opt.update(
            state.opt_state, grad, loss=loss, model_state=new_model_state, key=update_key
        )
        meta_loss, _, _ = task.loss_with_state_and_aux(
            opt.get_params(opt_state), new_model_state, meta_key, meta_batch
        )
        # A diverged problem (non-finite loss) restarts at the next step instead of
        # poisoning every later truncation until its horizon.
        finite = jnp.isfinite(loss) & jnp.isfinite(meta_loss)
        inner_step = jnp.where(finite, state.inner_step + 1, state.horizon)
        new_state = state.replace(opt_state=opt_state, inner_step=inner_step)
        return new_state, loss, task.normalizer(meta_loss)

    def unroll(
        self,
        theta: Any,
        state: InnerState,
        key: jax.Array,
        batches: Any,
        task_ids: jax.Array,
        num_steps: int,
        theta_axis: int | None = None,
        restarts: bool = True,
    ) -> tuple[InnerState, UnrollOutput]:
        """Run ``num_steps`` steps of every particle in one ``lax.scan``.

        ``batches`` is what ``get_batches(num_steps)`` returned (leaves
        ``[T, num_tasks, ...]``); particle ``p`` reads task slot ``task_ids[p]``.
        Returns the new state and per-step outputs of shape ``[T, P]``.
        ``task_ids`` given as a numpy array (known when tracing) lets particles
        ``[r copies of 0..num_tasks-1]`` read the batches in place instead of a gathered
        copy. ``restarts=False`` never restarts a problem within this unroll (for
        callers that know none reaches its horizon: the restart code is then not
        compiled at all); ``restarted`` is then all False.
        """
        mesh = self.particle_mesh(task_ids.shape[0])
        # Particles [reps copies of slots 0..n-1] (what the estimators use) read the
        # batches in place through a nested vmap; other orders gather them first.
        reps = None if batches is None or mesh is not None else _tiles(task_ids, self.num_tasks)
        if batches is not None and reps is None:
            batches = jax.tree_util.tree_map(lambda x: jnp.take(x, task_ids, axis=1), batches)
            batches = constrain(batches, mesh, axis=1)
        if theta_axis is not None:
            theta = constrain(theta, mesh, theta_axis)

        # Large particle sets step in groups that fit in cache (particle_groups); sharded
        # particles stay one vmap, which the mesh splits across devices.
        budget = None if mesh is not None else self.group_elements
        group = particles_per_group(state, budget)

        def inner_steps(theta, state, keys, train_batch, meta_batch):
            """``_inner_step`` of every particle."""
            if train_batch is None or reps is None:  # batches (if any) gathered per particle
                xs = (state, keys, train_batch, meta_batch)
                return vmap_in_groups(self._inner_step, theta, theta_axis, xs, group)
            split = lambda x: x.reshape((reps, x.shape[0] // reps) + x.shape[1:])
            split_theta = theta if theta_axis is None else jax.tree_util.tree_map(split, theta)

            def per_slot(theta, state, keys):  # one copy of slots 0..n-1, batches in place
                xs = (state, keys, train_batch, meta_batch)
                return vmap_in_groups(self._inner_step, theta, theta_axis, xs, group)

            # Copies one after another once the particles need more than one group.
            copies_group = None if group is None else 1
            xs = (jax.tree_util.tree_map(split, state), split(keys))
            out = vmap_in_groups(per_slot, split_theta, theta_axis, xs, copies_group)
            return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), out)

        def step(state, xs):
            keys, step_batches = xs  # keys: [P, 8], the particles' keys of this step
            needs_restart = state.inner_step >= state.horizon

            def restart(state):
                # A restarted problem starts at step 0: offsets only desynchronize the first.
                fresh = jax.vmap(
                    lambda th, k: self._fresh_problem_from_keys(th, k[:_NUM_RESTART_KEYS], 0),
                    in_axes=(theta_axis, 0),
                )(theta, keys)
                return tree_where(needs_restart, fresh, state)

            if restarts:
                # Restarts are rare; the cond skips building fresh problems on most steps.
                state = jax.lax.cond(jnp.any(needs_restart), restart, lambda s: s, state)
            else:
                needs_restart = jnp.zeros_like(needs_restart)
            if step_batches is None:
                train_batch = meta_batch = None
            else:
                train_batch = step_batches["train"]
                meta_batch = step_batches.get(self.meta_loss_split, train_batch)
            state, loss, meta_loss = inner_steps(
                theta, state, keys[:, _NUM_RESTART_KEYS:], train_batch, meta_batch
            )
            return constrain(state, mesh), UnrollOutput(loss, meta_loss, needs_restart)

        keys = constrain(unroll_keys(key, task_ids, num_steps), mesh, axis=1)
        state, out = jax.lax.scan(step, constrain(state, mesh), (keys, batches), length=num_steps)
        return state, constrain(out, mesh, axis=1)
