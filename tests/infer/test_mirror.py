"""Left-right mirroring at inference: the channel map and the flip TTA (training patches: tests/data/augment)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
