"""Contrast-phase augmentation of a training patch: each organ shifted by its own HU offset.

A contrast phase changes each organ's enhancement by its own amount (a kidney is ~150 HU darker without contrast
than in the portal-venous phase, a liver ~55 HU, the pancreas brighter in the arterial phase), while fat, air and
bone keep theirs. A network trained on few mask CTs of one phase learns "this organ darker than usual = tumor"
and calls every healthy organ of another phase (BENCHMARKS.md, issue 28). This transform shifts each organ
channel's voxels (organ masks include their lesions, the AbdomenAtlas convention, so a lesion keeps its contrast
to its organ) by an offset drawn independently per organ from U(-``max_hu``, +``max_hu``), on ``prob`` of the
patches. Organs are the whole-organ and organ-side channels (``labels.ORGAN_MASK_CLASSES``), not sub-segments
(inside their organ) nor lesions. Offsets are converted to normalised CT units (1 = 745.5 HU) and the shifted
voxels clipped to the normalised range [-1, 1] as the cache's are.

Example:
    >>> shift = OrganContrastShift(["liver", "kidney", "kidney_lesion"], prob=0.25)
    >>> image = shift.apply(shift.sample(rng), image, targets)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rsuper import labels
from rsuper.io import CT_NORMALISATION

HU_PER_UNIT = CT_NORMALISATION["half_range_hu"]  # 745.5 HU = 1 normalised unit


def organ_channels(class_names: Sequence[str]) -> list[int]:
    """Indices of the whole-organ and organ-side channels of ``class_names`` (e.g. liver, kidney, kidney_left)."""
    organs = set(labels.ORGAN_MASK_CLASSES) | {c for parts in labels.ORGAN_MASK_CLASSES.values() for c in parts}
    return [i for i, name in enumerate(class_names) if name in organs]


class OrganContrastShift:
    """Per-organ HU offsets, U(-max_hu, max_hu) each, on ``prob`` of the patches (0: never)."""

    def __init__(self, class_names: Sequence[str] | None, prob: float = 0.0, max_hu: float = 150.0) -> None:
        self.prob, self.max_hu = prob, max_hu
        self.channels = organ_channels(list(class_names or []))

    def sample(self, rng: np.random.Generator) -> tuple[float, ...] | None:
        """One offset in HU per organ channel, or None (not shifted). Draws nothing when ``prob`` is 0."""
        if self.prob <= 0 or not self.channels or rng.random() >= self.prob:
            return None
        return tuple(float(v) for v in rng.uniform(-self.max_hu, self.max_hu, size=len(self.channels)))

    def apply(self, offsets_hu: tuple[float, ...] | None, image: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``image`` (1, X, Y, Z) with each organ's voxels (label block of ``targets``, (N, X, Y, Z) uint8) shifted
        by its offset; a voxel in two organ channels (a side and its whole organ) gets the first one's."""
        if offsets_hu is None:
            return image
        image, done = image.clone(), torch.zeros(image.shape[1:], dtype=torch.bool)
        for channel, offset in zip(self.channels, offsets_hu, strict=True):
            mask = targets[channel].bool() & ~done
            image[0][mask] = (image[0][mask] + offset / HU_PER_UNIT).clamp(-1.0, 1.0)
            done |= mask
        return image
