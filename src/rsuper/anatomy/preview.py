"""PNG overlay of organ and sub-segment masks on the CT, to check a case at a glance.

Four panels in radiological convention (patient RIGHT on the image's LEFT, anterior/superior up):
an axial and a coronal slice through the pancreas (or the largest organ), and an axial slice through the
kidneys, and the axial maximum projection of all masks (the whole pancreas split at once). Sub-segments
are drawn over their organ with their own colours and a legend.

Example:
    >>> write_preview(ct, {"pancreas_head": head, "liver": liver}, "out/case1/preview.png", title="case1")
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from rsuper.atomic import atomic_path  # noqa: E402
from rsuper.io import Volume, to_canonical  # noqa: E402

COLOURS: dict[str, str] = {
    "liver": "#2ca02c",
    "spleen": "#9467bd",
    "pancreas": "#ff7f0e",
    "kidney_left": "#1f77b4",
    "kidney_right": "#17becf",
    "pancreas_head": "#d62728",
    "pancreas_body": "#ffbf00",
    "pancreas_tail": "#e377c2",
    **{f"liver_segment_{i}": c for i, c in enumerate(plt.get_cmap("tab10").colors[:8], start=1)},
}
"""Overlay colour per class; later entries are drawn on top of earlier ones."""


def _slice(array: np.ndarray, view: str, index: int) -> np.ndarray:
    """2D display image (rows, cols) of a canonical RAS array, radiological convention.

    ``view`` "axial"/"coronal" takes slice ``index``; "projection" is the axial maximum over all slices.
    """
    if view == "axial":
        return array[::-1, ::-1, index].T
    if view == "projection":
        return array[::-1, ::-1, :].max(axis=2).T
    return array[::-1, index, ::-1].T


def _centre(masks: dict[str, np.ndarray], names: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray:
    for name in names:
        if name in masks and masks[name].any():
            return np.argwhere(masks[name]).mean(0).round().astype(int)
    return np.array(shape) // 2


def write_preview(
    ct: Volume, masks: dict[str, np.ndarray], path: str | os.PathLike[str], title: str = ""
) -> None:
    """Writes a PNG overlay (atomic) of ``masks`` (class -> bool array on ``ct``'s grid) on ``ct`` (HU)."""
    canon_ct = to_canonical(ct)
    canon = {k: to_canonical(ct.with_array(np.asarray(v, dtype=np.uint8))).array > 0 for k, v in masks.items()}
    shown = [k for k in COLOURS if k in canon and canon[k].any()]
    has_segments = any(k.startswith("liver_segment_") for k in shown)
    if has_segments:
        shown = [k for k in shown if k != "liver"]
    sx, sy, sz = canon_ct.spacing_mm
    pancreas_c = _centre(canon, ("pancreas", "pancreas_head", "liver"), canon_ct.shape)
    kidney_c = _centre(canon, ("kidney_right", "kidney_left", "kidney"), canon_ct.shape)
    panels = [
        ("axial", int(pancreas_c[2]), sy / sx, "axial through pancreas"),
        ("coronal", int(pancreas_c[1]), sz / sx, "coronal through pancreas"),
        ("axial", int(kidney_c[2]), sy / sx, "axial through kidneys"),
        ("projection", int(pancreas_c[2]), sy / sx, "axial projection of the masks"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 10))
    window = np.clip((canon_ct.array.astype(np.float32) + 160.0) / 400.0, 0.0, 1.0)
    for ax, (view, index, aspect, label) in zip(axes.ravel(), panels):
        background = _slice(window, "axial", index) if view == "projection" else _slice(window, view, index)
        ax.imshow(background, cmap="gray", aspect=aspect, interpolation="nearest")
        for name in shown:
            layer = _slice(canon[name], view, index).astype(float)
            layer[layer == 0] = np.nan
            ax.imshow(layer, cmap=ListedColormap([COLOURS[name]]), alpha=0.55, aspect=aspect, interpolation="nearest")
        ax.set_title(label if view == "projection" else f"{label} ({view} slice {index})", fontsize=10)
        ax.text(0.02, 0.5, "R", color="yellow", transform=ax.transAxes, fontsize=14, weight="bold")
        ax.text(0.95, 0.5, "L", color="yellow", transform=ax.transAxes, fontsize=14, weight="bold")
        ax.axis("off")
    handles = [Patch(color=COLOURS[name], label=name) for name in shown]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5) or 1, fontsize=9, frameon=False)
    fig.suptitle(f"{title}  (radiological view: patient right on image left)", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
