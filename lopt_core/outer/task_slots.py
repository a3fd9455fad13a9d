"""Which task family each estimator slot holds, its compiled program, and its data positions.

A run over a ``TaskDistribution`` has ``S`` estimator slots. Slot ``s`` holds
the family ``distribution.sample(k)`` with ``k = fold_in(fold_in(tagged(key,
TASK_DRAWS), epoch), s)``, where ``epoch = step // resample_every`` (0 forever
when ``resample_every`` is 0): a pure function of the seed, the step and the
slot, so a resumed run and every worker draw the same families.

- ``ProgramCache``: one estimator, with its own jitted ``estimate``, per
  *distinct* family (equal families share it); at most ``max_programs`` are
  kept, the least recently used dropped first (its compiled code goes with it).
- ``DataLedger``: the data position of every ``Datasets`` the run reads, named
  by the draw that first brought it in, so that a resumed run redraws that
  family and fast-forwards its streams.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax

from lopt_core import keys as key_tags
from lopt_core.datasets import Datasets, DrawPositions
from lopt_core.jit import BackendJit
from lopt_core.outer.gradient_estimators import GradientEstimator
from lopt_core.task_distributions import TaskDistribution
from lopt_core.tasks import TaskFamily, as_family
from lopt_core.validation import non_negative_int, positive_int


def epoch_of(step: int, resample_every: int) -> int:
    """The resampling epoch of outer step ``step`` (0 for every step when never resampling)."""
    return step // resample_every if resample_every else 0


def slot_draw_id(epoch: int, slot: int) -> str:
    """The name of slot ``slot``'s draw at ``epoch``, as checkpoints record it."""
    return f"slot:{epoch}:{slot}"


def validation_draw_id(index: int) -> str:
    """The name of the ``index``-th held-out validation family's draw."""
    return f"validation:{index}"


# Held-out families validation draws from the distribution when none are named.
DEFAULT_VALIDATION_FAMILIES = 3


class TaskSlots:
    """The families the slots hold, drawn from ``distribution`` with keys from ``base_key``.

    Validation uses ``validation`` (families, or a number of held-out draws;
    None: ``DEFAULT_VALIDATION_FAMILIES`` draws). Draws of the current epoch are
    remembered, so asking twice gives the very same family object (and so the
    same ``Datasets``).
    """

    def __init__(
        self,
        distribution: TaskDistribution,
        base_key: jax.Array,
        num_slots: int,
        validation: Sequence[TaskFamily] | int | None = None,
    ):
        self.distribution = distribution
        self.num_slots = positive_int(num_slots, "num_estimators")
        if validation is None:
            validation = DEFAULT_VALIDATION_FAMILIES
        elif not isinstance(validation, int):
            validation = tuple(
                as_family(f, f"validation_families[{i}]") for i, f in enumerate(validation)
            )
        self.validation = validation
        self._key = key_tags.tagged(base_key, key_tags.TASK_DRAWS)
        self._validation_key = key_tags.tagged(base_key, key_tags.VALIDATION_FAMILIES)
        self._memo: dict[str, TaskFamily] = {}

    def _draw(self, draw_id: str, key: jax.Array) -> TaskFamily:
        if draw_id not in self._memo:
            family = self.distribution.sample(key)
            self._memo[draw_id] = as_family(family, f"{self.distribution.name}.sample(key)")
        return self._memo[draw_id]

    def family(self, epoch: int, slot: int) -> TaskFamily:
        """The family slot ``slot`` holds during resampling epoch ``epoch``."""
        key = jax.random.fold_in(jax.random.fold_in(self._key, epoch), slot)
        return self._draw(slot_draw_id(epoch, slot), key)

    def families(self, epoch: int) -> list[TaskFamily]:
        """Every slot's family at ``epoch``; forgets the draws of other epochs."""
        keep = {slot_draw_id(epoch, s) for s in range(self.num_slots)}
        self._memo = {
            k: v for k, v in self._memo.items() if k in keep or k.startswith("validation:")
        }
        return [self.family(epoch, s) for s in range(self.num_slots)]

    def validation_family(self, index: int) -> TaskFamily:
        """The ``index``-th validation family: named, or drawn with keys training never uses."""
        if not isinstance(self.validation, int):
            return self.validation[index]
        key = jax.random.fold_in(self._validation_key, index)
        return self._draw(validation_draw_id(index), key)

    def validation_families(self) -> list[TaskFamily]:
        """Every validation family."""
        count = self.validation if isinstance(self.validation, int) else len(self.validation)
        return [self.validation_family(i) for i in range(count)]

    def redraw(self, draw_id: str) -> TaskFamily:
        """The family a recorded draw name stands for."""
        kind, *numbers = draw_id.split(":")
        if kind == "slot" and len(numbers) == 2:
            return self.family(int(numbers[0]), int(numbers[1]))
        if kind == "validation" and len(numbers) == 1:
            return self.validation_family(int(numbers[0]))
        raise ValueError(f"Not a draw name of a task distribution run: {draw_id!r}.")


@dataclasses.dataclass
class SlotProgram:
    """A family's estimator and its jitted ``estimate`` (compiled on first use)."""

    family: TaskFamily
    estimator: GradientEstimator
    estimate: BackendJit


class ProgramCache:
    """Estimators by family, built by ``build(family)``; at most ``max_programs`` kept."""

    def __init__(self, build: Callable[[TaskFamily], GradientEstimator], max_programs: int):
        self.build = build
        self.max_programs = positive_int(max_programs, "max_programs")
        self._entries: collections.OrderedDict[TaskFamily, SlotProgram] = collections.OrderedDict()
        self.built = 0  # estimators built so far (each compiles its programs once)
        self.evicted = 0

    def get(self, family: TaskFamily) -> SlotProgram:
        """The program of ``family`` (or of an equal family built before)."""
        entry = self._entries.get(family)
        if entry is None:
            estimator = self.build(family)
            entry = SlotProgram(family, estimator, BackendJit(estimator.estimate))
            self._entries[family] = entry
            self.built += 1
        self._entries.move_to_end(family)
        return entry

    def trim(self, keep: int) -> None:
        """Drop least recently used programs beyond ``max_programs`` (keeping the last ``keep``)."""
        while len(self._entries) > max(self.max_programs, keep):
            self._entries.popitem(last=False)
            self.evicted += 1

    def __len__(self) -> int:
        return len(self._entries)

    def compiled_programs(self) -> int:
        """Programs the kept estimators have compiled (one each when nothing retraces)."""
        return sum(e.estimate._cache_size() for e in self._entries.values())


class DataLedger:
    """Per ``Datasets`` the run reads: the draw that first brought it, and batches drawn.

    ``restore`` takes a checkpoint's positions; a dataset tracked afterwards
    under a recorded draw name is fast-forwarded to its recorded position.
    """

    def __init__(self):
        self._tracked: dict[int, tuple[str, Datasets, DrawPositions, dict[str, int]]] = {}
        self._pending: dict[str, dict[str, int]] = {}

    def track(self, family: TaskFamily, draw_id: str) -> None:
        """Count the draws from ``family``'s data from now on (once per ``Datasets``)."""
        datasets = family.datasets
        if datasets is None or id(datasets) in self._tracked:
            return
        positions = DrawPositions(datasets)
        before = self._pending.pop(draw_id, {})
        for split, count in before.items():
            if split in positions.splits:
                positions.skip(split, non_negative_int(count, "batches_drawn"))
        positions.rebase()
        self._tracked[id(datasets)] = (draw_id, datasets, positions, before)

    def positions(self) -> dict[str, dict[str, int]]:
        """Batches drawn per split, by draw name (for a checkpoint's header)."""
        out = {}
        for draw_id, _, positions, before in self._tracked.values():
            drawn = positions.drawn()
            out[draw_id] = {s: before.get(s, 0) + n for s, n in drawn.items()}
        return out

    def restore(self, recorded: dict[str, dict[str, Any]]) -> list[str]:
        """Take a checkpoint's positions; returns the draw names to track again (redraw)."""
        self._pending = {k: {s: int(n) for s, n in v.items()} for k, v in recorded.items()}
        return list(self._pending)
