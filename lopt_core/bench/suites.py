"""Evaluation suites: named, versioned lists of tasks, each with a step budget and seeds.

A suite is a plugin of kind ``suite``: its factory takes no argument and
returns a ``Suite``. ``lopt bench`` trains an optimizer on every task of a
suite and scores it against baselines tuned per task (``lopt_core.bench``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lopt_core.datasets import fresh_datasets
from lopt_core.tasks import Task, TaskFamily, as_family
from lopt_core.validation import positive_int


@dataclasses.dataclass(frozen=True)
class SuiteTask:
    """One task of a suite: a registered task (or task family) with its arguments.

    ``steps`` is the training budget, ``seeds`` the runs per optimizer (for a
    task family: sampled tasks), ``eval_every`` how often the test and
    inner_valid losses are recorded (default: the largest divisor of ``steps``
    up to a twentieth of it).
    """

    task: str
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    steps: int = 200
    seeds: int = 3
    eval_every: int | None = None

    def __post_init__(self):
        positive_int(self.steps, f"{self.task}: steps")
        positive_int(self.seeds, f"{self.task}: seeds")
        object.__setattr__(self, "args", dict(self.args))
        if self.eval_every is None:  # the largest divisor of steps up to a twentieth of it
            every = max(d for d in range(1, max(1, self.steps // 20) + 1) if self.steps % d == 0)
            object.__setattr__(self, "eval_every", every)
        positive_int(self.eval_every, f"{self.task}: eval_every")
        if self.steps % self.eval_every:
            raise ValueError(
                f"{self.task}: eval_every ({self.eval_every}) must divide steps ({self.steps})."
            )
        json.dumps(self.args)  # arguments must be plain JSON values: they key the baselines

    @property
    def label(self) -> str:
        """The task's name with its arguments, e.g. ``ImageMLPTask(hidden_sizes=[16])``."""
        if not self.args:
            return self.task
        args = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(self.args.items()))
        return f"{self.task}({args})"

    def build(self) -> TaskFamily:
        """The task (as the family of its seeds) or task family, from the registry.

        Built with ``fresh_datasets``: its data iterators start where a fresh
        process's would, whatever was drawn before, so every optimizer benched on
        the task reads the same batches, in any process.
        """
        from lopt_core.registry import get_registry

        registry = get_registry()
        kind = "task_family" if registry.has("task_family", self.task) else "task"
        with fresh_datasets():
            built = registry.create(kind, self.task, **self.args)
        if not isinstance(built, (Task, TaskFamily)):
            raise TypeError(f"{self.label} built a {type(built).__name__}, not a Task.")
        return as_family(built)

    def key_fields(self) -> dict[str, Any]:
        """What determines this task's results besides the optimizer (baseline archive keys)."""
        return {
            "task": self.task,
            "args": dict(sorted(self.args.items())),
            "steps": self.steps,
            "seeds": self.seeds,
            "eval_every": self.eval_every,
        }


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named, versioned list of ``SuiteTask``.

    ``baselines`` is a folder of shipped baseline results (``lopt_core.bench``
    archive files) that ``lopt bench`` reads before computing any; ``held_out``
    says that no built-in meta-training recipe trains on these tasks.
    """

    name: str
    tasks: Sequence[SuiteTask]
    version: int = 1
    description: str = ""
    baselines: Path | None = None
    held_out: bool = False

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise ValueError(f"suite {self.name!r} has no tasks.")
        labels = [t.label for t in self.tasks]
        repeated = sorted({x for x in labels if labels.count(x) > 1})
        if repeated:
            raise ValueError(f"suite {self.name!r} lists {', '.join(repeated)} more than once.")

    def select(self, names: Sequence[str]) -> Suite:
        """This suite restricted to the tasks whose ``task`` or ``label`` is in ``names``."""
        wanted = set(names)
        chosen = [t for t in self.tasks if t.task in wanted or t.label in wanted]
        unknown = wanted - {t.task for t in chosen} - {t.label for t in chosen}
        if unknown:
            raise ValueError(
                f"suite {self.name!r} has no task {', '.join(sorted(unknown))}; it has "
                f"{', '.join(t.label for t in self.tasks)}."
            )
        return dataclasses.replace(self, tasks=tuple(chosen))


def get_suite(name_or_suite: str | Suite) -> Suite:
    """A ``Suite`` as given, or the registered suite of that name."""
    if isinstance(name_or_suite, Suite):
        return name_or_suite
    from lopt_core.registry import get_registry

    return get_registry().create("suite", name_or_suite, expect=Suite)
