"""Rotation and zoom of a training patch (MONAI ``RandAffined``) that never cuts the report group out of it.

The parameter of one patch is a seed: MONAI's rotation angles and zoom factors are a deterministic function of
it (``RandAffined.set_random_state``). The image is resampled linearly (border padding); the binary targets,
bit-packed, with one nearest-neighbour resampling (zeros from outside the patch, so ``valid`` becomes 0 there).
If the rotation/zoom would move part of the chosen group (``keep``) out of the patch, it is dropped for that patch.

Example:
    >>> affine = RandomAffine(prob=0.2)
    >>> seed = affine.sample(rng)              # None: no rotation/zoom for this patch
    >>> image, targets, applied = affine.apply(seed, image, targets, keep=group)
"""

from __future__ import annotations

import numpy as np
import torch

from rsuper.data.augment.bits import pack_bits, unpack_bits


def _touches_border(mask: torch.Tensor) -> bool:
    return any(bool(mask.select(a, i).any()) for a in range(3) for i in (0, -1))


class RandomAffine:
    """Rotation up to ``rotate_rad`` about each axis and zoom up to ``scale`` on ``prob`` of the patches."""

    def __init__(self, prob: float = 0.2, rotate_rad: float = 0.26, scale: float = 0.1) -> None:
        # MONAI is imported here: its import takes seconds and runs without augmentation do not need it.
        from monai.transforms import RandAffined

        self.prob = prob
        self.transform = RandAffined(
            keys=["image", "packed"],
            prob=1.0,
            rotate_range=(rotate_rad,) * 3,
            scale_range=(scale,) * 3,
            mode=("bilinear", "nearest"),
            padding_mode=("border", "zeros"),
        )

    def sample(self, rng: np.random.Generator) -> int | None:
        """The seed of MONAI's rotation/zoom for this patch, or None for none (one or two draws from ``rng``)."""
        if not rng.random() < self.prob:
            return None
        return int(rng.integers(2**32))

    def apply(
        self, seed: int | None, image: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Rotated/zoomed ``image`` (1, X, Y, Z) float32 and ``targets`` (N, X, Y, Z) uint8, and whether it was
        applied: not for ``seed`` None, nor when ``keep`` (X, Y, Z), inside the patch before, would touch its
        border after without having touched it before (or vanish)."""
        if seed is None:
            return image, targets, False
        from monai.utils import convert_to_tensor

        n = targets.shape[0]
        stacked = targets if keep is None else torch.cat([targets, keep[None].to(torch.uint8)])
        self.transform.set_random_state(seed=seed)
        out = self.transform({"image": image, "packed": pack_bits(stacked)})
        moved = unpack_bits(convert_to_tensor(out["packed"], track_meta=False), stacked.shape[0])
        if keep is not None and keep.any():
            after = moved[-1].bool()
            if not after.any() or (_touches_border(after) and not _touches_border(keep)):
                return image, targets, False
        return convert_to_tensor(out["image"], track_meta=False).float(), moved[:n], True
