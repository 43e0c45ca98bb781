"""PatchAugmentation: parameters sampled from one seeded stream, then applied deterministically."""

from __future__ import annotations

import numpy as np
import torch

from rsuper.data.augment import AugmentParams, PatchAugmentation

CLASSES = ["liver", "kidney_left", "kidney_right", "pancreas_head", "kidney_lesion"]


def _patch(seed: int = 0, size=(16, 16, 16)):
    rng = np.random.default_rng(seed)
    image = torch.from_numpy(rng.normal(size=(1, *size)).astype(np.float32))
    targets = torch.from_numpy((rng.random((3 * len(CLASSES) + 1, *size)) > 0.7).astype(np.uint8))
    targets[-1] = 1
    return image, targets


def test_parameters_come_from_one_stream_in_the_order_of_the_transforms():
    aug = PatchAugmentation(CLASSES, mirror_prob=0.5, spatial_prob=0.5)
    for seed in range(20):
        rng = np.random.default_rng([seed, 0xA5])
        spatial = rng.random() < 0.5
        affine_seed = int(rng.integers(2**32)) if spatial else None
        expected = AugmentParams(affine_seed, bool(rng.random() < 0.5), int(rng.integers(2**32)))
        assert aug.sample(seed) == expected


def test_apply_is_deterministic_and_the_call_is_sample_then_apply():
    aug = PatchAugmentation(CLASSES, spatial_prob=1.0, intensity_prob=1.0)
    image, targets = _patch()
    for seed in (1, 2, 3):
        params = aug.sample(seed)
        once = aug.apply(params, image.clone(), targets.clone())
        twice = aug.apply(params, image.clone(), targets.clone())
        called = aug(image.clone(), targets.clone(), seed=seed)
        for a, b, c in zip(once, twice, called):
            assert torch.equal(a, b) if torch.is_tensor(a) else a == b
            assert torch.equal(a, c) if torch.is_tensor(a) else a == c
        assert once[2] and not torch.equal(once[0], image)  # rotated/zoomed


def test_a_rotation_that_would_cut_the_group_is_dropped():
    aug = PatchAugmentation(CLASSES, spatial_prob=1.0, intensity_prob=0.0, mirror_prob=0.0)
    image, targets = _patch()
    keep = torch.zeros(16, 16, 16, dtype=torch.bool)
    keep[1:15, 1:15, 1:15] = True  # almost the whole patch: any rotation moves part of it to the border
    out_image, out_targets, spatial, mirrored = aug(image, targets, seed=5, keep=keep)
    assert not spatial and not mirrored
    assert torch.equal(out_image, image) and torch.equal(out_targets, targets)
