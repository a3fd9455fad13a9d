"""Plots of ``lopt bench``: a grid of per-task test-loss curves, and the aggregate scores."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lopt_core.bench.runner import TaskResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_task_grid(
    results: Sequence[TaskResult], names: Sequence[str], path: str | os.PathLike
) -> Path:
    """PNG: one panel per task, mean test loss vs step of each optimizer (log scale)."""
    plt = _pyplot()
    done = [r for r in results if r.skipped is None]
    if not done:
        raise ValueError("no task ran: nothing to plot.")
    cols = min(4, len(done))
    rows = math.ceil(len(done) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), dpi=110, squeeze=False)
    try:
        for ax, result in zip(axes.flat, done, strict=False):
            for i, name in enumerate(names):
                curves = result.curves[name]
                mean = result.mean_curve(name)
                mean = np.where(np.isfinite(mean), mean, np.nan)
                ax.plot(
                    curves.eval_steps,
                    mean,
                    label=name,
                    linewidth=2.2 if i == 0 else 1.2,
                    zorder=3 if i == 0 else 2,
                )
            ax.set_yscale("log")
            ax.set_title(result.task.label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="both", alpha=0.3)
        for ax in list(axes.flat)[len(done) :]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(5, len(names)), fontsize=8)
        for ax in axes[-1]:
            ax.set_xlabel("inner training step", fontsize=8)
        fig.supylabel("test loss (mean over runs)", fontsize=9)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_aggregate(aggregates: dict[str, dict[str, Any]], path: str | os.PathLike) -> Path:
    """PNG: IQM of normalized score and of speedup per optimizer, with 95% intervals."""
    plt = _pyplot()
    names = list(aggregates)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 0.45 * len(names) + 1.4), dpi=110, sharey=True
    )
    try:
        y = np.arange(len(names))[::-1]
        for ax, field, label in (
            (left, "normalized", "normalized score (IQM; 1 = best tuned baseline)"),
            (right, "speedup", "speedup over best tuned baseline (IQM)"),
        ):
            mid = np.array([aggregates[n][f"{field}_iqm"] for n in names], float)
            ci = np.array([aggregates[n][f"{field}_ci95"] for n in names], float)
            err = np.abs(np.stack([mid - ci[:, 0], ci[:, 1] - mid]))
            ax.errorbar(mid, y, xerr=np.nan_to_num(err), fmt="o", capsize=4)
            ax.axvline(1.0, color="0.5", linestyle="--", linewidth=1)
            ax.set_xlabel(label, fontsize=9)
            ax.grid(True, axis="x", alpha=0.3)
        left.set_yticks(y, names, fontsize=8)
        right.set_xscale("log")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
