"""Side split of a whole-kidney prediction: components go to the patient side of the body midline (RAS +x = right)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from rsuper.infer.predict import PredictOptions, Predictor, gate_lesions, predict_case
from rsuper.infer.sides import body_midline_x_mm, derived_side_classes, split_sides
from rsuper.io import load_nifti

LPS = np.array([[-2.0, 0, 0, 60.0], [0, -2.0, 0, 40.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]])


def _body_and_kidneys(shape=(60, 40, 12)):
    """HU volume (body box, two 'kidneys' left and right of the body centre in array axis 0) and the kidney mask."""
    hu = np.full(shape, -1000, dtype=np.int16)
    hu[5:55, 5:35, :] = 40
    kidneys = np.zeros(shape, dtype=bool)
    kidneys[10:18, 15:25, 3:9] = True  # low axis-0 index
    kidneys[42:50, 15:25, 3:9] = True  # high axis-0 index
    return hu, kidneys


def test_derived_side_classes_only_for_whole_organs_without_their_sides():
    assert derived_side_classes(["liver", "kidney", "kidney_lesion"]) == {"kidney": ("kidney_left", "kidney_right")}
    assert derived_side_classes(["kidney", "kidney_left", "kidney_right"]) == {}
    assert derived_side_classes(["kidney_left", "kidney_right"]) == {}


@pytest.mark.parametrize("affine, right_is_high_index", [(np.diag([2.0, 2.0, 3.0, 1.0]), True), (LPS, False)])
def test_components_go_to_the_patient_side_in_world_coordinates(affine, right_is_high_index):
    hu, kidneys = _body_and_kidneys()
    midline = body_midline_x_mm(hu, affine)
    assert midline == pytest.approx(affine[0, 0] * 29.5 + affine[0, 3])
    parts = split_sides(kidneys, affine, midline, "kidney")
    high = np.zeros_like(kidneys)
    high[30:] = True
    right_expected = kidneys & (high if right_is_high_index else ~high)
    np.testing.assert_array_equal(parts["kidney_right"], right_expected)
    np.testing.assert_array_equal(parts["kidney_left"], kidneys & ~right_expected)


def test_a_single_kidney_and_an_empty_mask():
    hu, kidneys = _body_and_kidneys()
    kidneys[30:] = False  # only the low-index kidney: patient right is +x, so with a RAS affine it is the left one
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    parts = split_sides(kidneys, affine, body_midline_x_mm(hu, affine), "kidney")
    assert parts["kidney_left"].sum() == kidneys.sum() and not parts["kidney_right"].any()
    empty = split_sides(np.zeros_like(kidneys), affine, 0.0, "kidney")
    assert not empty["kidney_left"].any() and not empty["kidney_right"].any()
    with pytest.raises(ValueError, match="midline"):
        body_midline_x_mm(np.full((4, 4, 4), -1000), affine)


class WholeKidneyNet(torch.nn.Module):
    """Known model with a side-free kidney channel: kidney where HU > 53, kidney_lesion where HU > 202."""

    size_divisor = 1

    def forward(self, x):
        final = torch.cat([40 * (x - 0.4), 40 * (x - 0.6)], dim=1)
        return final, final * 0


def test_predict_writes_derived_sides_and_locates_lesions_by_them(tmp_path):
    hu, kidneys = _body_and_kidneys()
    hu[5:55, 5:35, :] = -100  # body fat: not kidney
    hu[kidneys] = 100
    hu[44:48, 18:22, 4:8] = 400  # a lesion in the high-index kidney = patient right (RAS affine)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    ct_path = tmp_path / "in" / "ct.nii.gz"
    ct_path.parent.mkdir()
    nib.save(nib.Nifti1Image(hu, affine), str(ct_path))
    predictor = Predictor(model=WholeKidneyNet().eval(), class_names=["kidney", "kidney_lesion"],
                          spacing_mm=(2.0, 2.0, 3.0), patch_size=(16, 16, 8))
    findings = predict_case(predictor, ct_path, tmp_path / "out" / "c1", PredictOptions(tta="none"))
    seg = tmp_path / "out" / "c1" / "segmentations"
    right = load_nifti(seg / "kidney_right.nii.gz").array.astype(bool)
    left = load_nifti(seg / "kidney_left.nii.gz").array.astype(bool)
    assert right[42:50].sum() > 0.8 * kidneys[42:50].sum() and not right[:30].any()
    assert left[10:18].sum() > 0.8 * kidneys[10:18].sum() and not left[30:].any()
    assert findings["derived_classes"] == {"kidney": ["kidney_left", "kidney_right"]}
    assert findings["gating"]["gated"] == {"kidney_lesion": True}
    lesions = json.loads((tmp_path / "out" / "c1" / "findings.json").read_text())["lesions"]
    assert len(lesions) == 1 and lesions[0]["organ"] == "kidney" and lesions[0]["location"] == ["right"]


def test_gating_prefers_the_whole_organ_channel():
    probs = np.zeros((2, 30, 10, 10), dtype=np.float16)
    probs[0, 10:14] = 0.9
    probs[1] = 0.8
    assert gate_lesions(["kidney", "kidney_lesion"], probs, spacing_mm=(1.0, 1.0, 1.0), dilation_mm=2.0) == {
        "kidney_lesion": True}
    assert probs[1, :, 5, 5].nonzero()[0].tolist() == list(range(8, 16))
