"""Figures of the evaluation (matplotlib, Agg backend). Every figure is written with its data as CSV
beside it (same stem), so it can be re-plotted elsewhere.

Example:
    >>> roc_figure({"model": roc_points}, "out/roc.png")   # also writes out/roc.csv
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rsuper.atomic import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | os.PathLike[str], data: pd.DataFrame) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    with atomic_path(path.with_suffix(".csv")) as tmp:
        data.to_csv(tmp, index=False)
    return path


def roc_figure(curves: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """ROC curves, one panel per organ, one line per model; ``curves`` has model, organ, fpr, tpr, auroc."""
    organs = sorted(curves["organ"].unique())
    fig, axes = plt.subplots(1, max(len(organs), 1), figsize=(4.2 * max(len(organs), 1), 4), squeeze=False)
    for ax, organ in zip(axes[0], organs):
        for model, g in curves[curves["organ"] == organ].groupby("model", sort=False):
            ax.plot(g["fpr"], g["tpr"], drawstyle="steps-post", label=f"{model} (AUROC {g['auroc'].iloc[0]:.3f})")
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.set(title=organ, xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path, curves)


def sweep_figure(sweep: pd.DataFrame, path: str | os.PathLike[str], xlabel: str = "volume threshold (mm³)"
                 ) -> Path:
    """Sensitivity, specificity and F1 against the threshold, one panel per organ."""
    organs = sorted(sweep["organ"].unique())
    fig, axes = plt.subplots(1, max(len(organs), 1), figsize=(4.2 * max(len(organs), 1), 3.6), squeeze=False)
    for ax, organ in zip(axes[0], organs):
        g = sweep[sweep["organ"] == organ]
        for key in ("sensitivity", "specificity", "f1"):
            ax.plot(g["threshold"], g[key], marker=".", label=key)
        if (g["threshold"] > 0).sum() > 1 and "volume" in xlabel:
            ax.set_xscale("symlog", linthresh=10)
        ax.set(title=organ, xlabel=xlabel, ylim=(0, 1.02))
        ax.legend(fontsize=8)
    return _save(fig, path, sweep)


def bar_figure(table: pd.DataFrame, path: str | os.PathLike[str], names: tuple[str, str]) -> Path:
    """Grouped bars of model A vs B per (organ, metric), with the delta B - A written above each pair.

    ``table`` has organ, metric, and one column per model name (values in [0, 1]).
    """
    a, b = names
    labels_ = [f"{o}\n{m}" for o, m in zip(table["organ"], table["metric"])]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(table) + 2), 4))
    ax.bar(x - 0.2, table[a], width=0.4, label=a)
    ax.bar(x + 0.2, table[b], width=0.4, label=b)
    for xi, va, vb in zip(x, table[a], table[b]):
        if np.isfinite(va) and np.isfinite(vb):
            ax.text(xi, max(va, vb) + 0.02, f"{100 * (vb - va):+.1f}", ha="center", fontsize=8)
    ax.set_xticks(x, labels_, fontsize=8)
    ax.set(ylim=(0, 1.12), ylabel="value (delta in points above)")
    ax.legend()
    return _save(fig, path, table)


def overlay_figure(ct_slice: np.ndarray, masks: dict[str, np.ndarray], path: str | os.PathLike[str],
                   title: str, data: pd.DataFrame) -> Path:
    """One axial CT slice (HU, window [-160, 240]) with mask contours; ``masks`` maps a label to a 2D mask."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(np.rot90(ct_slice), cmap="gray", vmin=-160, vmax=240)
    colors = ["lime", "red", "deepskyblue", "orange"]
    handles = []
    for (name, mask), color in zip(masks.items(), colors):
        if mask.any():
            ax.contour(np.rot90(mask.astype(float)), levels=[0.5], colors=color, linewidths=1.2)
        handles.append(plt.Line2D([], [], color=color, label=name))
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return _save(fig, path, data)
