"""PatchAugmentation: the rotation/zoom, the left-right mirror and the intensity transforms of one patch.

All parameters of a patch come from one generator, ``numpy.random.default_rng([seed, 0xA5])``, drawn in the
order the transforms apply (rotation/zoom, mirror, intensity): :meth:`PatchAugmentation.sample` gives them as
an :class:`AugmentParams`, :meth:`PatchAugmentation.apply` applies them deterministically.

Example:
    >>> aug = PatchAugmentation(class_names, mirror_prob=0.5)
    >>> image, targets, spatial, mirrored = aug(image, targets, seed=7, keep=region_union)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rsuper.data.augment.intensity import RandomIntensity
from rsuper.data.augment.mirror import LeftRightMirror
from rsuper.data.augment.spatial import RandomAffine

STREAM = 0xA5  # the augmentation's own stream of a sample seed: numpy.random.default_rng([seed, STREAM])


@dataclass(frozen=True)
class AugmentParams:
    """The random decisions of one patch: MONAI seeds of the rotation/zoom (None: none) and of the intensity
    transforms, and whether it is mirrored left-right."""

    affine_seed: int | None
    mirror: bool
    intensity_seed: int


class PatchAugmentation:
    """Seeded augmentation of one patch (see :mod:`rsuper.data.augment`).

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
        class_names: Sequence[str] | None = None,
        mirror_prob: float = 0.5,
        spatial_prob: float = 0.2,
        intensity_prob: float = 0.15,
        rotate_rad: float = 0.26,
        scale: float = 0.1,
    ) -> None:
        self.spatial = RandomAffine(spatial_prob, rotate_rad, scale)
        self.mirror = LeftRightMirror(class_names, mirror_prob)
        self.intensity = RandomIntensity(intensity_prob)

    def sample(self, seed: int) -> AugmentParams:
        """The parameters of the patch of ``seed``."""
        rng = np.random.default_rng([seed, STREAM])
        affine_seed = self.spatial.sample(rng)
        mirror = self.mirror.sample(rng)
        return AugmentParams(affine_seed=affine_seed, mirror=mirror, intensity_seed=self.intensity.sample(rng))

    def apply(
        self, params: AugmentParams, image: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
        """Augments ``image`` (1, X, Y, Z) float32 and ``targets`` (N, X, Y, Z) uint8 (last channel = valid).

        ``keep`` (X, Y, Z) marks voxels that must stay inside the patch (the chosen group), or None.
        Returns ``(image, targets, spatial_applied, mirrored)``.
        """
        image, targets, spatial = self.spatial.apply(params.affine_seed, image, targets, keep)
        if params.mirror:
            image, targets = self.mirror.apply(image, targets)
        image = self.intensity.apply(params.intensity_seed, image)
        return image, targets, spatial, params.mirror

    def __call__(
        self, image: torch.Tensor, targets: torch.Tensor, seed: int, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
        """``apply(sample(seed), image, targets, keep)``."""
        return self.apply(self.sample(seed), image, targets, keep)
