"""OrganContrastShift: each organ its own HU offset, lesions keep their contrast to their organ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsuper.data.augment import OrganContrastShift, PatchAugmentation
from rsuper.data.augment.contrast import HU_PER_UNIT, organ_channels

CLASSES = ["liver", "pancreas", "pancreas_head", "kidney", "kidney_lesion", "liver_lesion"]


def _patch():
    """Image 0 everywhere; liver x < 4 (a liver lesion at x = 1), kidney x >= 6 (its lesion at x = 7, and a lesion
    voxel outside every organ at x = 5); the pancreas head is a sub-segment inside the pancreas (y >= 6)."""
    image = torch.zeros(1, 8, 8, 4)
    targets = torch.zeros(3 * len(CLASSES) + 1, 8, 8, 4, dtype=torch.uint8)
    targets[0, :4] = 1  # liver
    targets[5, 1] = 1  # liver_lesion, inside the liver
    targets[1, 4:6, 6:] = 1  # pancreas
    targets[2, 4:6, 6:] = 1  # pancreas_head
    targets[3, 6:] = 1  # kidney
    targets[4, 7] = 1  # kidney_lesion inside the kidney
    targets[4, 5, :6] = 1  # a lesion voxel outside every organ
    image[0, 1] = -0.1  # the liver lesion is darker than its liver
    return image, targets


def test_organ_channels_are_whole_organs_and_sides_not_subsegments_nor_lesions():
    assert organ_channels(CLASSES) == [0, 1, 3]
    assert organ_channels(["kidney_left", "kidney_right", "kidney_lesion", "liver_segment_2"]) == [0, 1]


def test_each_organ_gets_its_own_offset_in_hu_and_nothing_else_moves():
    shift = OrganContrastShift(CLASSES, prob=1.0)
    image, targets = _patch()
    out = shift.apply((-150.0, 30.0, 75.0), image, targets)
    hu = out * HU_PER_UNIT
    assert torch.allclose(hu[0, 0], torch.tensor(-150.0))  # liver
    assert torch.allclose(hu[0, 1] - hu[0, 0], image[0, 1] * HU_PER_UNIT)  # the lesion keeps its contrast
    assert torch.allclose(hu[0, 4:6, 6:], torch.tensor(30.0), atol=1e-4)  # pancreas (head included, once)
    assert torch.allclose(hu[0, 6:], torch.tensor(75.0), atol=1e-4)  # kidney, its lesion with it
    assert torch.equal(out[0, 5, :6], image[0, 5, :6])  # a lesion voxel outside the organs: unchanged
    assert torch.equal(out[0, 4:6, :6], image[0, 4:6, :6])  # background
    assert torch.equal(shift.apply(None, image, targets), image)


def test_shifted_voxels_stay_in_the_normalised_range():
    image, targets = _patch()
    image[:] = 0.95
    out = OrganContrastShift(CLASSES, prob=1.0).apply((150.0, 150.0, 150.0), image, targets)
    assert out.max() <= 1.0 and out[0, 0].eq(1.0).all()


def test_sampling_draws_nothing_when_off_and_stays_within_the_range():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert OrganContrastShift(CLASSES, prob=0.0).sample(rng) is None
    assert rng.bit_generator.state == state  # off: the other transforms' draws are unchanged
    shift = OrganContrastShift(CLASSES, prob=1.0, max_hu=40.0)
    draws = np.array([shift.sample(rng) for _ in range(200)])
    assert draws.shape == (200, 3) and np.abs(draws).max() <= 40.0 and draws.std() > 10
    half = OrganContrastShift(CLASSES, prob=0.5)
    assert 60 < sum(half.sample(rng) is not None for _ in range(200)) < 140


@pytest.mark.parametrize("mirror_prob", [0.0, 1.0])
def test_patch_augmentation_shifts_organs_after_the_mirror_and_is_seeded(mirror_prob):
    aug = PatchAugmentation(CLASSES, mirror_prob=mirror_prob, spatial_prob=0.0, intensity_prob=0.0,
                            organ_shift_prob=1.0)
    image, targets = _patch()
    params = aug.sample(3)
    assert params == aug.sample(3) and len(params.organ_offsets_hu) == 3
    out, out_targets, _, mirrored = aug.apply(params, image, targets)
    liver = out_targets[0].bool()
    assert mirrored == bool(mirror_prob)
    assert torch.allclose(out[0][liver & ~out_targets[5].bool()] * HU_PER_UNIT,
                          torch.tensor(params.organ_offsets_hu[0]), atol=1e-3)
