"""Contrast-phase augmentation: one HU offset per organ, tumors move with their organ, nothing else moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from rsuper.data.augment import PatchAugmentation
from rsuper.data.contrast import OrganContrastShift, organ_channel_groups
from rsuper.io import normalize_ct

CLASSES = ["liver", "Kidney-Left", "kidney_right", "pancreas", "kidney_lesion", "liver_lesion", "pancreas_head"]
HU_PER_UNIT = 745.5  # rsuper.io.normalize_ct: [-991, 500] HU -> [-1, 1]


def _phantom_patch(size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """A portal-venous-like patch: liver 100 HU, left kidney 160 HU with a 70 HU tumor, fat elsewhere."""
    hu = np.full((size,) * 3, -90.0, np.float32)
    label = torch.zeros((len(CLASSES), *hu.shape), dtype=torch.uint8)
    label[0, 14:22, 2:22, 2:22] = 1
    hu[14:22, 2:22, 2:22] = 100.0
    label[1, 2:11, 2:11, 2:11] = 1
    hu[2:11, 2:11, 2:11] = 160.0
    label[4, 4:9, 4:9, 4:9] = 1
    hu[4:9, 4:9, 4:9] = 70.0
    return torch.from_numpy(normalize_ct(hu))[None], label


def test_groups_join_each_organ_with_its_lesion_channel():
    assert organ_channel_groups(CLASSES) == [[0, 5], [3], [1, 2, 4]]
    assert organ_channel_groups(["pancreas_head", "kidney_lesion"]) == []  # a lesion alone is not an organ


def test_each_organ_moves_by_one_offset_and_keeps_its_tumor_contrast():
    image, label = _phantom_patch()
    shift = OrganContrastShift(CLASSES, max_shift_hu=150.0, prob=1.0, edge_sigma_vox=0.0)
    out = shift(image, label, np.random.default_rng(4))
    delta_hu = ((out - image)[0] * HU_PER_UNIT).numpy()
    kidney, tumor, liver = delta_hu[3, 3, 3], delta_hu[6, 6, 6], delta_hu[18, 10, 10]
    assert abs(kidney) <= 150.0 and abs(liver) <= 150.0 and abs(kidney - liver) > 1.0
    assert tumor == pytest.approx(kidney, abs=1e-3)  # tumor - kidney contrast (-90 HU) is kept
    organ = label[[0, 1]].amax(0).bool().numpy()
    np.testing.assert_allclose(delta_hu[label[1].bool().numpy()], kidney, atol=1e-3)
    np.testing.assert_allclose(delta_hu[label[0].bool().numpy()], liver, atol=1e-3)
    assert np.all(delta_hu[~organ] == 0.0)  # fat, and the unannotated pancreas channel, are untouched


def test_soft_edge_keeps_values_in_range_and_fades_outside():
    image, label = _phantom_patch()
    out = OrganContrastShift(CLASSES, max_shift_hu=150.0, prob=1.0)(image, label, np.random.default_rng(1))
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    delta = (out - image)[0].abs()
    assert float(delta[12, 3, 3]) < float(delta[10, 3, 3])  # two voxels outside the kidney: less than its edge
    assert float(delta[23, 23, 0]) == pytest.approx(0.0, abs=1e-6)  # far from every organ


def test_probability_seed_and_off_switches():
    image, label = _phantom_patch(12)
    shift = OrganContrastShift(CLASSES, max_shift_hu=100.0, prob=0.3)
    changed = [not torch.equal(shift(image, label, np.random.default_rng(s)), image) for s in range(200)]
    assert 40 < sum(changed) < 80
    assert changed == [not torch.equal(shift(image, label, np.random.default_rng(s)), image) for s in range(200)]
    for off in (OrganContrastShift(CLASSES, 0.0, prob=1.0), OrganContrastShift(["pancreas_head"], 100.0, prob=1.0)):
        assert off(image, label, np.random.default_rng(0)) is image
    with pytest.raises(ValueError, match="max_shift_hu"):
        OrganContrastShift(CLASSES, -5.0)


def test_patch_augmentation_adds_the_shift_and_leaves_every_other_decision_alone():
    image, label = _phantom_patch(16)
    targets = torch.cat([label, torch.zeros((2 * len(CLASSES) + 1, *label.shape[1:]), dtype=torch.uint8)])
    targets[-1] = 1
    plain = PatchAugmentation(CLASSES, spatial_prob=0.0, intensity_prob=0.0)
    shifted = PatchAugmentation(CLASSES, spatial_prob=0.0, intensity_prob=0.0, organ_shift_hu=150.0,
                                organ_shift_prob=1.0)
    for seed in range(6):
        base_image, base_targets, _, base_mirrored = plain(image, targets, seed=seed)
        out_image, out_targets, _, mirrored = shifted(image, targets, seed=seed)
        assert mirrored == base_mirrored
        torch.testing.assert_close(out_targets, base_targets)
        inside = base_targets[[0, 1, 2]].amax(0).bool()
        near = torch.from_numpy(ndimage.binary_dilation(inside.numpy(), np.ones((3, 3, 3)), iterations=3))
        assert bool((out_image[0][~near] == base_image[0][~near]).all())
        assert bool(((out_image - base_image)[0][inside].abs() > 0).all())
