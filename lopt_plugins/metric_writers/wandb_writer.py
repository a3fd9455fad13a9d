"""``wandb``: a run's metrics as a Weights & Biases run (``WANDB_MODE=offline``: no network)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lopt_core.metric_writers import MetricWriter


class WandbWriter(MetricWriter):
    """A W&B run in ``project`` (``entity``, ``name`` default: the run folder's name,
    ``tags``), its files under ``dir`` (default: the run folder, so
    ``<run>/wandb/``). ``mode`` is W&B's (``"online"``, ``"offline"``,
    ``"disabled"``); None leaves it to W&B, which reads ``WANDB_MODE``
    (offline runs are synced later with ``wandb sync <run>/wandb/offline-run-*``).

    Each row is one ``log`` call with its step as ``<section>/step`` (the section is
    the names' first part: ``outer``, ``validation``, ``eval``...), and each
    section is plotted against its own step, so rows of different kinds never
    fight over W&B's own step counter. The settings and the operative config go
    to the run's config.
    """

    name = "wandb"
    install_hint = "pip install 'lopt[wandb]' (or: pip install wandb)"

    def __init__(
        self,
        project: str = "lopt",
        entity: str | None = None,
        name: str | None = None,
        mode: str | None = None,
        tags: Sequence[str] = (),
        dir: str | os.PathLike | None = None,
    ):
        self.project, self.entity, self.run_name, self.mode = project, entity, name, mode
        self.tags, self.dir = tuple(tags), dir
        self.run: Any = None
        self.sections: set[str] = set()

    def open(self, run_dir: Path) -> None:
        import wandb

        run_dir = Path(run_dir)
        folder = Path(self.dir) if self.dir is not None else run_dir
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            name=self.run_name or run_dir.resolve().name,
            mode=self.mode,
            tags=list(self.tags) or None,
            dir=str(folder),
            settings=wandb.Settings(console="off", silent=True),
        )

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        row = dict(values)
        for section in {name.split("/", 1)[0] for name in values}:
            if section not in self.sections:
                self.sections.add(section)
                self.run.define_metric(f"{section}/step")
                self.run.define_metric(f"{section}/*", step_metric=f"{section}/step")
            row[f"{section}/step"] = step
        self.run.log(row)

    def text(self, name: str, text: str) -> None:
        self.run.config.update({name: text}, allow_val_change=True)

    def hparams(self, params: Mapping[str, Any]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
