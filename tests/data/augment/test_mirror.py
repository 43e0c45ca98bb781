"""Left-right mirror of training patches: channel bookkeeping and seeding."""

from __future__ import annotations

import numpy as np
import torch

from rsuper.data.augment import PatchAugmentation

CLASSES = ["liver", "kidney_left", "kidney_right", "pancreas_head", "adrenal_gland_left", "kidney_lesion"]


def _sample(c=len(CLASSES), size=(8, 6, 4)):
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.normal(size=(1, *size)).astype(np.float32))
    targets = torch.from_numpy((rng.random((3 * c + 1, *size)) > 0.5).astype(np.uint8))
    targets[-1] = 1
    return image, targets


def test_mirrored_sample_swaps_pairs_and_hides_side_defined_channels():
    c = len(CLASSES)
    aug = PatchAugmentation(CLASSES, mirror_prob=1.0, spatial_prob=0.0, intensity_prob=0.0)
    image, targets = _sample()
    out_image, out, _, mirrored = aug(image.clone(), targets.clone(), seed=3)
    assert mirrored
    torch.testing.assert_close(out_image, image.flip(1))
    flipped = targets.flip(1)
    for block in (0, 1, 2):  # label, unknown, region
        torch.testing.assert_close(out[block * c + 1], flipped[block * c + 2])  # kidney_left <- right
        torch.testing.assert_close(out[block * c + 2], flipped[block * c + 1])
        torch.testing.assert_close(out[block * c + 5], flipped[block * c + 5])  # lesion channel moves only
    assert bool((out[c + 3] == 1).all()) and bool((out[c + 4] == 1).all())  # side-defined: unknown
    torch.testing.assert_close(out[-1], flipped[-1])


def test_mirror_is_seeded_and_off_without_class_names():
    image, targets = _sample()
    aug = PatchAugmentation(CLASSES, mirror_prob=0.5, spatial_prob=0.0, intensity_prob=0.0)
    mirrored = [not torch.equal(aug(image, targets, seed=s)[0], image) for s in range(40)]
    assert 8 < sum(mirrored) < 32
    assert mirrored == [not torch.equal(aug(image, targets, seed=s)[0], image) for s in range(40)]
    plain = PatchAugmentation(None, spatial_prob=0.0, intensity_prob=0.0)
    assert all(torch.equal(plain(image, targets, seed=s)[0], image) for s in range(10))
