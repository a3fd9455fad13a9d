"""Meta-training over a task distribution: each estimator slot on its own family, in this process.

``MixtureExecutor`` is the executor of runs given a ``task_distribution`` (or
``task_families``). Each of its ``S`` slots holds a family drawn as
``lopt_core.outer.task_slots`` says, redrawn every ``resample_every`` outer
steps. An outer step runs each slot's estimator with that family's compiled
program (one per distinct family, kept in a bounded ``ProgramCache``), then
applies the weighted mean of the slots' meta-gradients in one jitted call
that never recompiles (it sees only theta-shaped arrays). A slot whose family
changes starts fresh inner problems; a slot that redraws an equal family keeps
its state. Checkpoints carry every slot's state and the data position of every
dataset read, so a resumed run continues bit for bit.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lopt_core.jit import BackendJit
from lopt_core.outer.executors import Executor
from lopt_core.outer.learner import GradientLearner, LearnerState
from lopt_core.outer.settings import LearnerSpec
from lopt_core.outer.task_slots import (
    DataLedger,
    ProgramCache,
    SlotProgram,
    TaskSlots,
    epoch_of,
    slot_draw_id,
    validation_draw_id,
)
from lopt_core.outer.workers import rebuild_keys
from lopt_core.tasks import TaskFamily


class MixtureExecutor(Executor):
    """Outer steps over ``spec.task_distribution`` (see the module docstring)."""

    keeps_worker_states = True
    normalized_validation = True

    def __init__(self, spec: LearnerSpec, base_key: jax.Array):
        if spec.task_distribution is None:
            raise ValueError("MixtureExecutor needs a LearnerSpec with a task_distribution.")
        self.spec = spec
        self.base_key = base_key
        self.num_slots = spec.num_estimators
        self.resample_every = spec.resample_every
        self.distribution = spec.task_distribution
        explicit = spec.validation_families
        self.slots = TaskSlots(self.distribution, base_key, self.num_slots, explicit)
        self.programs = ProgramCache(spec.estimator_for, spec.program_limit)
        self.ledger = DataLedger()
        self.epoch = 0
        self.current = self._programs(0)
        self.learner = GradientLearner(
            spec.learned_optimizer,
            [p.estimator for p in self.current],
            spec.outer_optimizer(),
            spec.max_grad_norm,
        )
        # The meta-gradient's update: theta-shaped inputs only, so it compiles once.
        self._apply = BackendJit(self.learner.apply_gradients)
        self._validation: list[TaskFamily] | None = None

    # --- slots

    def _programs(self, epoch: int) -> list[SlotProgram]:
        families = self.slots.families(epoch)
        programs = [self.programs.get(f) for f in families]
        self.programs.trim(keep=len({id(p) for p in programs}))
        for slot, family in enumerate(families):
            self.ledger.track(family, slot_draw_id(epoch, slot))
        return programs

    def _weights(self) -> jax.Array:
        return jnp.asarray([self.distribution.weight(p.family) for p in self.current], jnp.float32)

    def _resample(self, state: LearnerState, epoch: int, step: int) -> LearnerState:
        """Move every slot to its family of ``epoch``; changed slots start fresh problems."""
        old = self.current
        self.current = self._programs(epoch)
        self.epoch = epoch
        keys = rebuild_keys(self.base_key, step, self.num_slots)
        states = list(state.worker_states)
        for slot, (before, after) in enumerate(zip(old, self.current, strict=True)):
            if after is not before:
                states[slot] = after.estimator.init_worker_state(state.theta, keys[slot])
        return state.replace(worker_states=tuple(states))

    def families(self) -> list[TaskFamily]:
        """The family each slot holds now."""
        return [p.family for p in self.current]

    # --- the Executor protocol

    def init(self, key: jax.Array) -> LearnerState:
        return self.learner.init(key)

    def step(self, state: LearnerState, step: int) -> tuple[LearnerState, dict[str, Any]]:
        epoch = epoch_of(step, self.resample_every)
        if epoch != self.epoch:
            state = self._resample(state, epoch, step)
        keys = jax.random.split(jax.random.fold_in(self.base_key, step), self.num_slots)
        worker_states, estimates = [], []
        for program, worker_state, key in zip(self.current, state.worker_states, keys, strict=True):
            batches = program.estimator.get_batches()
            worker_state, estimate = program.estimate(worker_state, state.theta, key, batches)
            worker_states.append(worker_state)
            estimates.append(estimate)
        # The update sees no worker states (their shapes change with the slots' families),
        # so it compiles once for the whole run.
        state, metrics = self._apply(state.replace(worker_states=()), estimates, self._weights())
        state = state.replace(worker_states=tuple(worker_states))
        metrics = dict(metrics)
        by_family: dict[str, list[jax.Array]] = {}
        for family, estimate in zip(self.families(), estimates, strict=True):
            by_family.setdefault(family.name, []).append(estimate.mean_loss)
        for name, losses in by_family.items():
            metrics[f"meta_loss/{name}"] = jnp.mean(jnp.stack(losses))
        metrics["distinct_families"] = len({id(p) for p in self.current})
        metrics["programs_built"] = self.programs.built
        return state, metrics

    def template_for(self, template: LearnerState, header: dict[str, Any]) -> LearnerState:
        """A state shaped like the checkpoint's: the slots' families at its step."""
        step = int(header.get("step", 0))
        # A state after `step` steps holds the slots of the last step done (number step - 1).
        epoch = epoch_of(max(step - 1, 0), self.resample_every)
        if epoch == self.epoch:
            return template
        self.ledger = DataLedger()  # nothing was drawn yet; positions come with restore
        self.current = self._programs(epoch)
        self.epoch = epoch
        keys = rebuild_keys(self.base_key, step, self.num_slots)
        states = tuple(
            p.estimator.init_worker_state(template.theta, k)
            for p, k in zip(self.current, keys, strict=True)
        )
        return template.replace(worker_states=states)

    def restore(self, state: LearnerState, header: dict[str, Any]) -> LearnerState:
        self.ledger = DataLedger()
        for draw_id in self.ledger.restore(header.get("data_positions", {})):
            self.ledger.track(self.slots.redraw(draw_id), draw_id)
        for slot, program in enumerate(self.current):
            self.ledger.track(program.family, slot_draw_id(self.epoch, slot))
        if self._validation is not None:
            self._track_validation(self._validation)
        return state

    def header(self) -> dict[str, Any]:
        return {
            "data_positions": self.ledger.positions(),
            "resample_every": self.resample_every,
            "task_distribution": self.distribution.name,
            "families": [f.name for f in self.families()],
        }

    def validation_families(self) -> list[TaskFamily]:
        if self._validation is None:
            self._validation = self.slots.validation_families()
            self._track_validation(self._validation)
        return list(self._validation)

    def _track_validation(self, families: list[TaskFamily]) -> None:
        for index, family in enumerate(families):
            self.ledger.track(family, validation_draw_id(index))

    def describe(self) -> str:
        """One line on the slots' families, for the start of a run."""
        names = ", ".join(f.name for f in self.families())
        return f"{self.num_slots} slots over {self.distribution.name}: {names}"
