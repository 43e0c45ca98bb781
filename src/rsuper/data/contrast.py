"""Contrast-phase augmentation: each organ's Hounsfield units shift by their own random offset.

Intravenous contrast brightens organs by different amounts in different phases (kidney parenchyma: roughly
+30 HU without contrast to +150 HU portal-venous; liver +50 to +100 HU), while a tumor keeps a similar
difference to its organ. A network trained on mask CTs of one phase learns absolute HU ("kidney tumor ~ 70 HU")
and then calls every healthy non-contrast kidney tumor. Shifting each organ, its tumors with it, by a random
offset teaches the difference rather than the absolute value.

The organ region of a patch is the union of the organ's mask channels and its lesion channel (label block of
the targets); voxels whose organ channel is not annotated are left alone. The region is softened by a Gaussian
(``edge_sigma_vox``), so the shift fades over about a voxel, as contrast does through partial volume.

Example:
    >>> shift = OrganContrastShift(["liver", "kidney_left", "kidney_right", "kidney_lesion"], max_shift_hu=150)
    >>> image = shift(image, label, rng)   # image (1, X, Y, Z) normalised CT, label (C, X, Y, Z) uint8
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from rsuper import labels
from rsuper.io import HU_CLIP

_NORMALISED_PER_HU = 2.0 / (HU_CLIP[1] - HU_CLIP[0])  # rsuper.io.normalize_ct maps the clip range onto [-1, 1]


def organ_channel_groups(class_names: Sequence[str]) -> list[list[int]]:
    """Channel indices of each organ present in ``class_names``: its mask classes plus its lesion class."""
    index = {labels.canonical_class_name(name): i for i, name in enumerate(class_names)}
    groups = []
    for organ, mask_classes in labels.ORGAN_MASK_CLASSES.items():
        organ_channels = [index[c] for c in mask_classes if c in index]
        if not organ_channels:
            continue
        lesion = labels.LESION_CLASS_OF_ORGAN.get(organ)
        groups.append(organ_channels + ([index[lesion]] if lesion in index else []))
    return groups


class OrganContrastShift:
    """Adds one uniform random offset in [-max_shift_hu, +max_shift_hu] HU to each organ of a patch.

    Args:
        class_names: output channels (C), in the order of the label block.
        max_shift_hu: largest offset in HU (0 turns the augmentation off).
        prob: probability that a patch is shifted at all (then every organ gets its own offset).
        edge_sigma_vox: Gaussian softening of the organ region, in voxels (0 = hard edge).
    """

    def __init__(
        self, class_names: Sequence[str], max_shift_hu: float, prob: float = 0.5, edge_sigma_vox: float = 0.7
    ) -> None:
        if max_shift_hu < 0 or not 0 <= prob <= 1:
            raise ValueError(f"max_shift_hu must be >= 0 and prob in [0, 1], got {max_shift_hu}, {prob}")
        self.groups = organ_channel_groups(class_names)
        self.max_shift = float(max_shift_hu) * _NORMALISED_PER_HU
        self.prob = float(prob) if self.groups and max_shift_hu > 0 else 0.0
        self.edge_sigma_vox = float(edge_sigma_vox)

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Shifted copy of ``image`` (1, X, Y, Z) normalised CT, clipped to [-1, 1]; ``label`` (C, X, Y, Z) {0, 1}."""
        if self.prob == 0.0 or rng.random() >= self.prob:
            return image
        offset = np.zeros(image.shape[1:], np.float32)
        for group, shift in zip(self.groups, rng.uniform(-self.max_shift, self.max_shift, len(self.groups))):
            region = label[group].amax(0).numpy().astype(np.float32)
            if not region.any():
                continue
            if self.edge_sigma_vox > 0:
                region = ndimage.gaussian_filter(region, self.edge_sigma_vox)
            offset += np.float32(shift) * region
        return (image + torch.from_numpy(offset)[None]).clamp_(-1.0, 1.0)
