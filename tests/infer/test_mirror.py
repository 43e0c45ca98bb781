"""Left-right mirroring: channel bookkeeping, mirrored training samples, and flip TTA at inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsuper.data.augment import PatchAugmentation
from rsuper.infer.predict import PredictOptions, Predictor, predict_probabilities
from rsuper.labels import mirror_channel_map, mirror_partner

CLASSES = ["liver", "kidney_left", "kidney_right", "pancreas_head", "adrenal_gland_left", "kidney_lesion"]


def test_partners_and_channel_map():
    assert mirror_partner("kidney_left") == "kidney_right" and mirror_partner("Kidney-Right") == "kidney_left"
    assert mirror_partner("pancreas_tail") is None and mirror_partner("liver_segment_7") is None
    assert mirror_partner("kidney_lesion") == "kidney_lesion"
    source, side_defined = mirror_channel_map(CLASSES)
    assert source == [0, 2, 1, 3, 4, 5]
    assert side_defined == [3, 4]  # pancreas_head, and adrenal_gland_left without its right partner


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


def _patient_left(x):
    """1 on the half of the window with larger array x (patient left in RAS), 0 elsewhere; shape of ``x``."""
    n = x.shape[2]
    return (torch.arange(n) >= n // 2).to(x.dtype).view(1, 1, n, 1, 1).expand_as(x)


class SidedNet(torch.nn.Module):
    """Position-aware known model on a single window: kidney_left fires on the half with larger array x
    (patient left in RAS), kidney_right on the other half, pancreas_head on the right half."""

    size_divisor = 1

    def forward(self, x):
        left = _patient_left(x)
        sided = torch.cat([20 * (2 * left - 1), 20 * (1 - 2 * left), 20 * (1 - 2 * left)], dim=1)
        return sided, sided * 0


@pytest.mark.parametrize("tta", ["none", "mirror", "flips"])
def test_flip_tta_keeps_left_and_right_channels(tta):
    predictor = Predictor(model=SidedNet().eval(), class_names=["kidney_left", "kidney_right", "pancreas_head"],
                          spacing_mm=(2.0, 2.0, 2.0), patch_size=(8, 8, 8))
    probs = predict_probabilities(predictor, np.zeros((8, 8, 8), np.float32), PredictOptions(tta=tta))
    assert probs[0, 4:].min() > 0.99 and probs[0, :4].max() < 0.01  # kidney_left on the left half only
    assert probs[1, :4].min() > 0.99 and probs[1, 4:].max() < 0.01
    assert probs[2, :4].min() > 0.99 and probs[2, 4:].max() < 0.01  # x-flips never averaged into it


class LeftLockedLesionNet(torch.nn.Module):
    """A kidney-lesion channel locked to the image's left half (logit +20 there, -20 elsewhere); counts passes."""

    size_divisor = 1

    def __init__(self):
        super().__init__()
        self.passes = 0

    def forward(self, x):
        self.passes += 1
        left = _patient_left(x)
        return 20 * (2 * left - 1), left * 0


@pytest.mark.parametrize(("tta", "passes"), [("none", 1), ("mirror", 2), ("flips", 8)])
def test_mirror_tta_makes_a_side_locked_lesion_channel_symmetric(tta, passes):
    net = LeftLockedLesionNet().eval()
    predictor = Predictor(model=net, class_names=["kidney_lesion"], spacing_mm=(2.0, 2.0, 2.0), patch_size=(8, 8, 8))
    probs = predict_probabilities(predictor, np.zeros((8, 8, 8), np.float32), PredictOptions(tta=tta)).astype(float)
    assert net.passes == passes
    if tta == "none":
        assert probs[0, 4:].min() > 0.99 and probs[0, :4].max() < 0.01
    else:  # each side: once 1, once 0 -> 0.5 everywhere, the same on both sides
        np.testing.assert_allclose(probs[0], 0.5, atol=1e-3)


def test_unknown_tta_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="tta must be one of auto, none, mirror, flips"):
        PredictOptions(tta=True)
