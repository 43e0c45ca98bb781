"""Patch augmentation with MONAI that never cuts the chosen report group out of the patch.

Spatial: ``RandAffined`` (rotation up to +-15 deg about each axis, scale +-10 %), applied to a fraction
of the samples; intensity: ``RandScaleIntensityd``, ``RandShiftIntensityd``, ``RandGaussianNoised``.
No flips: mirroring would swap left/right classes (kidney_left, pancreas head/tail side).

The binary target channels (label, unknown, region, valid) are bit-packed, 24 per float32 channel (exact
integers), so one nearest-neighbour resampling moves all of them: ~17x less work than resampling each.
Voxels that come from outside the patch get ``valid`` = 0 (the dataset makes them unknown). If the
rotation/zoom would move part of the group out of the patch, the spatial part is dropped for that sample.

Every random decision comes from ``seed``, so a sample is reproducible.

Example:
    >>> aug = PatchAugmentation()
    >>> image, targets, spatial = aug(image, targets, seed=7, keep=region_union)
"""

from __future__ import annotations

import numpy as np
import torch

BITS = 24  # integers below 2**24 are exact in float32


def pack_bits(targets: torch.Tensor) -> torch.Tensor:
    """(N, X, Y, Z) {0,1} uint8 -> (ceil(N/24), X, Y, Z) float32 holding the bits as exact integers."""
    n = targets.shape[0]
    packed = torch.zeros((-(-n // BITS), *targets.shape[1:]), dtype=torch.int32)
    for i in range(n):
        packed[i // BITS] |= targets[i].to(torch.int32) << (i % BITS)
    return packed.float()


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: (ceil(n/24), X, Y, Z) float -> (n, X, Y, Z) uint8."""
    ints = packed.round().to(torch.int32)
    return torch.stack([((ints[i // BITS] >> (i % BITS)) & 1).to(torch.uint8) for i in range(n)])


def _touches_border(mask: torch.Tensor) -> bool:
    return any(bool(mask.select(a, i).any()) for a in range(3) for i in (0, -1))


class PatchAugmentation:
    """Seeded MONAI augmentation of one patch (see module doc).

    Args:
        spatial_prob: share of samples that get a rotation/zoom.
        intensity_prob: probability of each intensity transform.
        rotate_rad: maximum rotation about each axis (radians).
        scale: maximum relative zoom.
    """

    def __init__(
        self, spatial_prob: float = 0.2, intensity_prob: float = 0.15, rotate_rad: float = 0.26, scale: float = 0.1
    ) -> None:
        # MONAI is imported here: its import takes seconds and runs without augmentation do not need it.
        from monai.transforms import (
            Compose,
            RandAffined,
            RandGaussianNoised,
            RandScaleIntensityd,
            RandShiftIntensityd,
        )

        self.spatial_prob = spatial_prob
        self.spatial = RandAffined(
            keys=["image", "packed"],
            prob=1.0,
            rotate_range=(rotate_rad,) * 3,
            scale_range=(scale,) * 3,
            mode=("bilinear", "nearest"),
            padding_mode=("border", "zeros"),
        )
        self.intensity = Compose(
            [
                RandScaleIntensityd(keys="image", factors=0.1, prob=intensity_prob),
                RandShiftIntensityd(keys="image", offsets=0.1, prob=intensity_prob),
                RandGaussianNoised(keys="image", std=0.02, prob=intensity_prob),
            ]
        )

    def __call__(
        self, image: torch.Tensor, targets: torch.Tensor, seed: int, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Augments ``image`` (1, X, Y, Z) float32 and ``targets`` (N, X, Y, Z) uint8 (last channel = valid).

        ``keep`` (X, Y, Z) marks voxels that must stay inside the patch (the chosen group), or None.
        Returns ``(image, targets, spatial_applied)``.
        """
        from monai.utils import convert_to_tensor

        rng = np.random.default_rng([seed, 0xA5])
        spatial = bool(rng.random() < self.spatial_prob)
        if spatial:
            n = targets.shape[0]
            stacked = targets if keep is None else torch.cat([targets, keep[None].to(torch.uint8)])
            self.spatial.set_random_state(seed=int(rng.integers(2**32)))
            out = self.spatial({"image": image, "packed": pack_bits(stacked)})
            moved = unpack_bits(convert_to_tensor(out["packed"], track_meta=False), stacked.shape[0])
            if keep is not None and keep.any():
                after = moved[-1].bool()
                spatial = bool(after.any()) and (not _touches_border(after) or _touches_border(keep))
            if spatial:
                image, targets = convert_to_tensor(out["image"], track_meta=False).float(), moved[:n]
        self.intensity.set_random_state(seed=int(rng.integers(2**32)))
        image = convert_to_tensor(self.intensity({"image": image})["image"], track_meta=False).float()
        return image, targets, spatial
