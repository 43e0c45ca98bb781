"""Left and right parts of a side-free organ prediction: ``kidney`` -> ``kidney_left``, ``kidney_right``.

The default network predicts the whole kidney, not each side (docs/method.md §4: side channels lock the
kidney-lesion channel to one side). Predictions still name sides: each connected component of the predicted
organ goes to the patient side of the body midline that its centroid lies on. The midline is the world x
(RAS, mm) of the centroid of the body (voxels above -500 HU); RAS +x points to the patient's right. A
horseshoe kidney (one component across the midline) goes to one side as a whole.

Example:
    >>> midline = body_midline_x_mm(ct_hu, affine)
    >>> parts = split_sides(kidney_mask, affine, midline, "kidney")   # {"kidney_left": ..., "kidney_right": ...}
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage

from rsuper import labels

BODY_HU = -500.0  # voxels above this are body (soft tissue, bone), below are air and the table's foam


def derived_side_classes(class_names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """{whole-organ class: (left class, right class)} for the union classes among ``class_names`` whose side
    classes are not outputs themselves (``["kidney", ...]`` -> ``{"kidney": ("kidney_left", "kidney_right")}``)."""
    out = {}
    for name in class_names:
        members = labels.organ_union_members(name)
        if members and not set(members) & set(class_names):
            left = next(m for m in members if m.endswith("_left"))
            right = next(m for m in members if m.endswith("_right"))
            out[name] = (left, right)
    return out


def body_midline_x_mm(ct_hu: np.ndarray, affine: np.ndarray) -> float:
    """World x (mm, RAS) of the body centroid of a CT (X, Y, Z) in HU with its voxel-to-world ``affine``."""
    body = np.asarray(ct_hu) > BODY_HU
    if not body.any():
        raise ValueError(f"no voxel above {BODY_HU} HU: cannot find the body midline (is the image a CT in HU?)")
    centroid = np.asarray(ndimage.center_of_mass(body), dtype=float)
    return float(np.asarray(affine, dtype=float)[0, :3] @ centroid + affine[0, 3])


def split_sides(mask: np.ndarray, affine: np.ndarray, midline_x_mm: float, organ_class: str) -> dict[str, np.ndarray]:
    """``{left class: bool mask, right class: bool mask}`` of a whole-organ ``mask`` (X, Y, Z): each
    26-connected component goes to the side of ``midline_x_mm`` where its centroid lies (world x > midline:
    patient right)."""
    members = labels.organ_union_members(organ_class)
    left_name = next(m for m in members if m.endswith("_left"))
    right_name = next(m for m in members if m.endswith("_right"))
    components, n = cc3d.connected_components(np.asarray(mask, dtype=bool), connectivity=26, return_N=True)
    side_of = np.zeros(n + 1, dtype=np.uint8)  # component label -> 0 background, 1 left, 2 right
    if n:
        centroids = np.asarray(ndimage.center_of_mass(np.ones(mask.shape, dtype=bool), components, range(1, n + 1)))
        row = np.asarray(affine, dtype=float)[0]
        side_of[1:] = np.where(centroids.reshape(n, 3) @ row[:3] + row[3] > midline_x_mm, 2, 1)
    sides = side_of[components]
    return {left_name: sides == 1, right_name: sides == 2}
