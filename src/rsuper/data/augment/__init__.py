"""Patch augmentation of training samples (docs/method.md §4), TorchIO style: sample, then apply.

Each transform draws its parameters from a ``numpy`` generator (``sample``) and then applies a deterministic
operation with them (``apply``); :class:`PatchAugmentation` composes them in a fixed order, all from one
generator seeded by the sample's seed, so a sample is reproducible from its key alone:

1. :class:`RandomAffine` (``spatial``): rotation up to ±15° about each axis and zoom ±10 % on 20 % of the
   samples, dropped for a sample when it would move part of the chosen report group out of the patch;
2. :class:`LeftRightMirror` (``mirror``): array axis 0 (patient left-right in the RAS cache) on ``mirror_prob``
   of the samples, with the left/right channel bookkeeping;
3. :class:`RandomIntensity` (``intensity``): intensity scale, shift and Gaussian noise, each with probability 0.15.

Targets travel as one uint8 stack (label, unknown, region) x C + valid; for the rotation/zoom they are
bit-packed (:mod:`rsuper.data.augment.bits`) so that one nearest-neighbour resampling moves all of them.

Example:
    >>> aug = PatchAugmentation(class_names)
    >>> params = aug.sample(seed=7)            # AugmentParams(affine_seed=None, mirror=True, intensity_seed=...)
    >>> image, targets, spatial, mirrored = aug.apply(params, image, targets, keep=region_union)
"""

from rsuper.data.augment.bits import BITS, pack_bits, unpack_bits
from rsuper.data.augment.intensity import RandomIntensity
from rsuper.data.augment.mirror import LeftRightMirror
from rsuper.data.augment.patch import AugmentParams, PatchAugmentation
from rsuper.data.augment.spatial import RandomAffine

__all__ = [
    "BITS",
    "AugmentParams",
    "LeftRightMirror",
    "PatchAugmentation",
    "RandomAffine",
    "RandomIntensity",
    "pack_bits",
    "unpack_bits",
]
