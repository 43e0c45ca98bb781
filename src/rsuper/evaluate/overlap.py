"""Voxel overlap metrics: Dice similarity coefficient and normalised surface Dice (NSD).

Convention (docs/method.md §8): a case with no foreground in truth and none predicted scores 1 on both
metrics; foreground in only one of them scores 0.

NSD (Nikolov et al. 2021) at tolerance tau mm: the surface of a mask is its foreground voxels that have a
6-connected background neighbour (the volume border counts as background); distances are Euclidean
between voxel centres in mm (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing_mm``).
NSD = (|{a in S_A : d(a, S_B) <= tau}| + |{b in S_B : d(b, S_A) <= tau}|) / (|S_A| + |S_B|).

Example:
    >>> dice(truth, pred), surface_dice(truth, pred, spacing_mm=(1, 1, 2), tolerance_mm=2.0)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DEFAULT_NSD_TOLERANCE_MM = 2.0


def dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """DSC of two binary masks of the same shape; 1.0 when both are empty."""
    _check_shapes(truth, pred)
    t, p = truth.astype(bool), pred.astype(bool)
    total = int(t.sum()) + int(p.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(t, p).sum()) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean surface voxels of a binary mask (foreground with a 6-connected background neighbour)."""
    m = mask.astype(bool)
    return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def surface_dice(truth: np.ndarray, pred: np.ndarray, spacing_mm: tuple[float, float, float],
                 tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM) -> float:
    """NSD of two binary (X, Y, Z) masks at ``tolerance_mm``; 1.0 when both are empty, 0.0 when one is."""
    _check_shapes(truth, pred)
    t, p = truth.astype(bool), pred.astype(bool)
    if not t.any() and not p.any():
        return 1.0
    if not t.any() or not p.any():
        return 0.0
    crop = _joint_box(t, p, spacing_mm, tolerance_mm)
    t, p = np.pad(t[crop], 1), np.pad(p[crop], 1)
    surf_t, surf_p = surface(t), surface(p)
    dist_to_t = ndimage.distance_transform_edt(~surf_t, sampling=spacing_mm)
    dist_to_p = ndimage.distance_transform_edt(~surf_p, sampling=spacing_mm)
    close = int((dist_to_p[surf_t] <= tolerance_mm).sum()) + int((dist_to_t[surf_p] <= tolerance_mm).sum())
    return close / (int(surf_t.sum()) + int(surf_p.sum()))


def _joint_box(t: np.ndarray, p: np.ndarray, spacing_mm, margin_mm: float) -> tuple[slice, ...]:
    """Bounding box of both masks plus ``margin_mm`` (crop for speed; distances inside are unchanged)."""
    idx = np.argwhere(t | p)
    margin = np.ceil(margin_mm / np.asarray(spacing_mm, dtype=float)).astype(int) + 1
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, t.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _check_shapes(truth: np.ndarray, pred: np.ndarray) -> None:
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction shapes differ: {truth.shape} vs {pred.shape}; "
                         "resample the prediction onto the truth's grid first")
