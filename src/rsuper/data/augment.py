"""Patch augmentation with MONAI that never cuts the chosen report group out of the patch.

Spatial: ``RandAffined`` (rotation up to +-15 deg about each axis, scale +-10 %), applied to a fraction
of the samples; a left-right mirror (array axis 0 of the RAS cache) of half the samples; intensity:
``RandScaleIntensityd``, ``RandShiftIntensityd``, ``RandGaussianNoised``.

The mirror is meant to stop a network trained on few masks from learning "tumors are on the side they
were on in the training CTs" (seen on the demo: a kidney-tumor channel that fired only in right
kidneys). It does not always suffice: a lesion channel can still lock onto one side of a left/right pair
(BENCHMARKS.md session 14; ``benchmarks/bench_mirror.py`` measures it). Mirrored samples swap the channels
of left/right pairs (``kidney_left`` <-> ``kidney_right``) and make channels defined by the patient's side
(pancreas head/body/tail, liver segments) unknown.

The binary target channels (label, unknown, region, valid) are bit-packed, 24 per float32 channel (exact
integers), so one nearest-neighbour resampling moves all of them: ~17x less work than resampling each.
Voxels that come from outside the patch get ``valid`` = 0 (the dataset makes them unknown). If the
rotation/zoom would move part of the group out of the patch, the spatial part is dropped for that sample.

Every random decision comes from ``seed``, so a sample is reproducible.

Example:
    >>> aug = PatchAugmentation()
    >>> image, targets, spatial, mirrored = aug(image, targets, seed=7, keep=region_union)
"""

from __future__ import annotations

import numpy as np
import torch

from rsuper.anatomy.labels import mirror_channel_map

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
        class_names: output channels (C); needed for the mirror (pairs to swap, side-defined channels).
        mirror_prob: share of samples mirrored left-right (0 without ``class_names``).
        spatial_prob: share of samples that get a rotation/zoom.
        intensity_prob: probability of each intensity transform.
        rotate_rad: maximum rotation about each axis (radians).
        scale: maximum relative zoom.
    """

    def __init__(
        self,
        class_names: list[str] | None = None,
        mirror_prob: float = 0.5,
        spatial_prob: float = 0.2,
        intensity_prob: float = 0.15,
        rotate_rad: float = 0.26,
        scale: float = 0.1,
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
        self.mirror_prob = mirror_prob if class_names else 0.0
        self.mirror_source, self.side_defined = mirror_channel_map(list(class_names or []))
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
    ) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
        """Augments ``image`` (1, X, Y, Z) float32 and ``targets`` (N, X, Y, Z) uint8 (last channel = valid).

        ``keep`` (X, Y, Z) marks voxels that must stay inside the patch (the chosen group), or None.
        Returns ``(image, targets, spatial_applied, mirrored)``.
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
        mirrored = bool(rng.random() < self.mirror_prob)
        if mirrored:
            image, targets = self._mirror(image, targets)
        self.intensity.set_random_state(seed=int(rng.integers(2**32)))
        image = convert_to_tensor(self.intensity({"image": image})["image"], track_meta=False).float()
        return image, targets, spatial, mirrored

    def _mirror(self, image: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-right mirror (axis 0 of X, Y, Z); targets = (label, unknown, region) x C + valid."""
        c = len(self.mirror_source)
        image, targets = torch.flip(image, dims=[1]), torch.flip(targets, dims=[1])
        order = [block * c + s for block in range(3) for s in self.mirror_source] + list(range(3 * c, targets.shape[0]))
        targets = targets[order]
        for i in self.side_defined:
            targets[c + i] = 1
        return image, targets
