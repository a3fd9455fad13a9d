"""Plots of learning curves: log-scale loss against step, mean and spread per optimizer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lopt_core.evaluation import TrainingCurves


def plot_curves(
    curves: Sequence[TrainingCurves],
    path: str | os.PathLike,
    split: str = "test",
    title: str | None = None,
    marker_steps: Sequence[int] = (),
) -> Path:
    """Write a PNG of ``split`` loss vs step: one line (mean) and band (min to max) per optimizer.

    ``marker_steps`` draws dashed vertical lines, e.g. at the meta-training horizon.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_curves needs at least one TrainingCurves, got none.")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for c in curves:
            losses = c.losses(split)
            with np.errstate(invalid="ignore"):
                mean = np.nanmean(np.where(np.isfinite(losses), losses, np.nan), axis=0)
            (line,) = ax.plot(c.eval_steps, mean, label=c.name, linewidth=1.8)
            ax.fill_between(
                c.eval_steps,
                np.nanmin(losses, 0),
                np.nanmax(losses, 0),
                color=line.get_color(),
                alpha=0.18,
                linewidth=0,
            )
        for step in marker_steps:
            ax.axvline(step, color="0.5", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("inner training step")
        ax.set_ylabel(f"{split} loss (mean; band: min to max over runs)")
        ax.set_title(title or f"{split} loss")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
