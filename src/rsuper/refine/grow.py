"""Tumors grown to their reported size from the model's most tumor-like location (the Ball Loss construction).

For one organ of one CT, the reported tumors of a group (docs/method.md §4: the sub-segments they lie in)
are placed largest volume first, each exactly as the Ball Loss places a pseudo-tumor
(``rsuper.losses.ball.ball_pseudo_labels`` with margin m = 0, docs/method.md §5):

1. q = tumor probability restricted to the region R (the group's sub-segments dilated by a small margin,
   mm) less the voxels already taken by earlier tumors;
2. centre c = argmax of q summed over a ball of the tumor's largest reported diameter D (mm); q gets
   ``TIE_BREAK`` (1e-6) added on R, so that where the model sees nothing (q = 0) the ball goes where it
   overlaps R most instead of the corner of R's bounding box;
3. the tumor = the N' voxels of largest q inside the ball of diameter D at c and inside R, where
   N = round(V / v) is the reported volume V (mm³, docs/method.md §2) in voxels of volume v (mm³) and
   N' = min(N, candidates). With m = 0 the positive and extended sets of the Ball Loss coincide.

Where the model is blind on an organ, the same construction runs on ``darkness_score`` (the negated CT inside
the un-dilated sub-segments) instead of the probability: the darkest ball of the reported size, for tumors the
report calls hypoattenuating (``rsuper refine --intensity-where-blind``, docs/review_refine.md).

Everything is computed in the grid it is given (the CT's own grid for ``rsuper refine``), with the spacing in
mm, so an anisotropic grid keeps sizes in mm (the ball is an ellipsoid in voxels). ``fill`` = N' / N says
whether the tumor reached its reported volume inside R.

Example:
    >>> grown = grow_tumors(prob, tail_mask, diameters_mm=[20, 10], volumes_mm3=[4189, 524], spacing_mm=(1, 1, 2))
    >>> [t.voxels for t in grown], grown[0].centre_vox
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rsuper.losses.ball import ball_pseudo_labels
from rsuper.losses.geometry import bounding_box, check_spacing, dilate_mm, voxel_volume_mm3

TIE_BREAK = 1e-6
REGION_MARGIN_MM = 3.0
"""Default dilation (mm) of the reported sub-segments: the gating margin of ``rsuper predict``."""


@dataclass(frozen=True)
class GrownTumor:
    """One grown tumor. ``mask`` (X, Y, Z) bool in the input grid; ``target_voxels`` = N (reported volume in
    voxels); ``voxels`` = N' (grown); ``fill`` = N' / N; ``centre_vox`` the ball centre (array index);
    ``diameter_mm``/``volume_mm3`` as reported."""

    mask: np.ndarray
    diameter_mm: float
    volume_mm3: float
    target_voxels: int
    voxels: int
    centre_vox: tuple[int, int, int]

    @property
    def fill(self) -> float:
        return self.voxels / max(self.target_voxels, 1)


def region_with_margin(region: np.ndarray, spacing_mm: Sequence[float], margin_mm: float = REGION_MARGIN_MM
                       ) -> np.ndarray:
    """``region`` (bool) dilated by ``margin_mm`` (exact ball, mm; 0 = the region itself)."""
    return dilate_mm(torch.from_numpy(np.ascontiguousarray(region, dtype=bool)), margin_mm,
                     check_spacing(spacing_mm)).numpy()


def darkness_score(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """A growth score from intensity alone, (X, Y, Z) float32: the negated CT (HU) shifted to > 0 inside
    ``region`` (bool), 0 outside, so that the best ball of the reported size is the darkest one inside the region."""
    dark = -np.asarray(image, dtype=np.float32)
    inside = np.asarray(region, dtype=bool)
    if not inside.any():
        return np.zeros(dark.shape, np.float32)
    return np.where(inside, dark - dark[inside].min() + 1e-3, 0.0).astype(np.float32)


def grow_tumors(
    prob: np.ndarray,
    region: np.ndarray,
    diameters_mm: Sequence[float],
    volumes_mm3: Sequence[float],
    spacing_mm: Sequence[float],
    taken: np.ndarray | None = None,
) -> list[GrownTumor]:
    """Grows each reported tumor inside ``region`` (see the module docstring), largest volume first.

    Args:
        prob: (X, Y, Z) tumor probability in [0, 1] (or any score >= 0, e.g. ``darkness_score``).
        region: (X, Y, Z) bool, where the tumors may lie (already dilated when a margin is wanted).
        diameters_mm: largest reported diameter of each tumor (mm).
        volumes_mm3: reported volume of each tumor (mm³), same order.
        spacing_mm: voxel size along the array axes (mm).
        taken: optional (X, Y, Z) bool of voxels earlier groups already took (never reused).

    Returns:
        One :class:`GrownTumor` per reported tumor, in decreasing reported volume. A tumor for which no
        candidate voxel is left has ``voxels`` 0 and an empty mask.
    """
    spacing = check_spacing(spacing_mm)
    if prob.shape != region.shape:
        raise ValueError(f"prob {prob.shape} and region {region.shape} must have the same shape")
    if len(diameters_mm) != len(volumes_mm3):
        raise ValueError(f"{len(diameters_mm)} diameters but {len(volumes_mm3)} volumes")
    available = np.asarray(region, dtype=bool).copy()
    if taken is not None:
        available &= ~taken
    order = sorted(range(len(volumes_mm3)), key=lambda i: -float(volumes_mm3[i]))
    voxel_mm3 = voxel_volume_mm3(spacing)
    tumors: list[GrownTumor] = []
    for i in order:
        diameter, volume = float(diameters_mm[i]), float(volumes_mm3[i])
        target = max(1, int(np.floor(volume / voxel_mm3 + 0.5)))
        mask = np.zeros(prob.shape, dtype=bool)
        box = bounding_box(torch.from_numpy(available))
        centre = (-1, -1, -1)
        if box is not None:
            # Cropping to R's bounding box changes nothing: q and every candidate lie inside it.
            inside = torch.from_numpy(available[box])[None].float()
            q = torch.from_numpy(np.ascontiguousarray(prob[box], dtype=np.float32))[None] + TIE_BREAK * inside
            labels = ball_pseudo_labels(q, inside, torch.tensor([[diameter]]), torch.tensor([[volume]]), spacing,
                                        margin=0.0)
            mask[box] = labels.positive[0].numpy()
            if labels.centres_vox[0]:
                centre = tuple(int(c) + s.start for c, s in zip(labels.centres_vox[0][0], box))  # type: ignore
        available &= ~mask
        tumors.append(GrownTumor(mask=mask, diameter_mm=diameter, volume_mm3=volume, target_voxels=target,
                                 voxels=int(mask.sum()), centre_vox=centre))  # type: ignore[arg-type]
    return tumors
