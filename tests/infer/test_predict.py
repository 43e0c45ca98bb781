"""Predict end to end on small synthetic CTs with a known (threshold) model: grid, gating, findings."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from rsuper.infer.predict import PredictOptions, Predictor, find_ct_inputs, gate_lesions, predict_case, predict_cases
from rsuper.io import load_nifti
from rsuper.models.checkpoint import untrained_classes_of

CLASSES = ["liver", "liver_lesion", "pancreas", "pancreatic_lesion"]


class ThresholdNet(torch.nn.Module):
    """Known model: liver where the normalised CT > 0 (HU > -245), liver_lesion where it > 0.6 (HU > 202),
    pancreas nowhere, pancreatic_lesion everywhere (must be removed by gating). Returns (final, aux)."""

    size_divisor = 1

    def forward(self, x):
        liver = 40 * x
        lesion = 40 * (x - 0.6)
        final = torch.cat([liver, lesion, -torch.ones_like(x) * 20, torch.ones_like(x) * 20], dim=1)
        return final, final * 0


def _ct(tmp_path, affine, shape=(40, 36, 14), name="ct.nii.gz"):
    """CT with a 'liver' box (HU 100) and a 'lesion' (HU 400) inside it, in voxel coords of the file."""
    hu = np.full(shape, -1000, dtype=np.int16)
    hu[8:30, 6:28, 3:11] = 100
    hu[12:18, 10:16, 5:8] = 400
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(hu, affine), str(path))
    return path, hu


def _predictor(spacing=(1.5, 1.5, 1.5)):
    return Predictor(model=ThresholdNet().eval(), class_names=CLASSES, spacing_mm=spacing, patch_size=(16, 16, 16))


LPS_ANISO = np.array([[-0.8, 0, 0, 20.0], [0, -0.8, 0, 30.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [np.diag([1.0, 1.0, 1.0, 1.0]), LPS_ANISO])
def test_masks_land_in_the_input_grid(tmp_path, affine):
    ct_path, hu = _ct(tmp_path / "in", affine)
    findings = predict_case(_predictor(), ct_path, tmp_path / "out" / "c1", PredictOptions(save_probabilities=True))
    ct = load_nifti(ct_path)
    for name in CLASSES:
        mask = load_nifti(tmp_path / "out" / "c1" / "segmentations" / f"{name}.nii.gz")
        assert mask.shape == ct.shape
        np.testing.assert_allclose(mask.affine, ct.affine, atol=1e-6)
        assert mask.array.dtype == np.uint8
        assert nib.aff2axcodes(mask.affine) == nib.aff2axcodes(ct.affine)
    liver = load_nifti(tmp_path / "out" / "c1" / "segmentations" / "liver.nii.gz").array.astype(bool)
    truth = hu > 0
    dsc = 2 * (liver & truth).sum() / (liver.sum() + truth.sum())
    assert dsc > 0.9, dsc
    lesion = load_nifti(tmp_path / "out" / "c1" / "segmentations" / "liver_lesion.nii.gz").array.astype(bool)
    assert lesion.any() and (lesion & (hu == 400)).sum() / lesion.sum() > 0.6
    # pancreas not predicted -> its lesion channel is gated to nothing everywhere
    assert not load_nifti(tmp_path / "out" / "c1" / "segmentations" / "pancreatic_lesion.nii.gz").array.any()
    prob = load_nifti(tmp_path / "out" / "c1" / "probabilities" / "liver.nii.gz")
    assert prob.array.dtype == np.uint8 and prob.array.max() == 255
    assert findings["organs"]["liver"]["count"] == 1
    assert findings["organs"]["pancreas"]["count"] == 0
    true_lesion_mm3 = (hu == 400).sum() * abs(np.linalg.det(affine[:3, :3]))
    assert findings["organs"]["liver"]["total_volume_mm3"] == pytest.approx(true_lesion_mm3, rel=0.5)
    on_disk = json.loads((tmp_path / "out" / "c1" / "findings.json").read_text())
    assert on_disk["lesions"][0]["organ"] == "liver" and len(on_disk["lesions"][0]["size_mm"]) == 3


def test_gating_uses_dilated_organ_and_kidney_union():
    names = ["kidney_left", "kidney_right", "kidney_lesion"]
    probs = np.zeros((3, 30, 10, 10), dtype=np.float16)
    probs[0, 2:6] = 0.9
    probs[1, 20:24] = 0.9
    probs[2] = 0.8
    gated = gate_lesions(names, probs, spacing_mm=(1.0, 1.0, 1.0), dilation_mm=3.0)
    assert gated == {"kidney_lesion": True}
    kept = probs[2, :, 5, 5] > 0
    # organ x in [2,6) and [20,24), dilated by 3 mm -> [0,9) and [17,27)
    assert kept.nonzero()[0].tolist() == list(range(0, 9)) + list(range(17, 27))


def test_tta_and_resume(tmp_path):
    ct_path, _ = _ct(tmp_path / "data" / "caseA", np.eye(4))
    _ct(tmp_path / "data" / "caseB", np.eye(4))
    inputs = find_ct_inputs(tmp_path / "data")
    assert [c for c, _ in inputs] == ["caseA", "caseB"]
    options = PredictOptions(tta="flips", sw_batch_size=4)
    first = predict_cases(_predictor(), inputs, tmp_path / "out", options)
    assert first == {"caseA": "done", "caseB": "done"}
    stamp = (tmp_path / "out" / "caseA" / "findings.json").stat().st_mtime_ns
    (tmp_path / "out" / "caseB" / "segmentations" / "liver.nii.gz").unlink()
    second = predict_cases(_predictor(), inputs, tmp_path / "out", options)
    assert second == {"caseA": "skipped", "caseB": "done"}
    assert (tmp_path / "out" / "caseA" / "findings.json").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "out" / "caseA" / "findings.json").read_text())["tta"] == "flips"


def test_find_ct_inputs_flat_folder_and_errors(tmp_path):
    for name in ("b_0000.nii.gz", "a.nii.gz"):
        _ct(tmp_path / "flat", np.eye(4), name=name)
    assert [c for c, _ in find_ct_inputs(tmp_path / "flat")] == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="no CT found"):
        (tmp_path / "empty").mkdir()
        find_ct_inputs(tmp_path / "empty")


def test_findings_max_probability_is_the_whole_ct_maximum(tmp_path):
    ct_path, _ = _ct(tmp_path, np.eye(4))
    findings = predict_case(_predictor(), ct_path, tmp_path / "out")
    # lesion logits 40 * (x - 0.6) at HU 400 (x = 0.866): sigmoid(10.6) ~ 1; pancreas lesion gated to 0
    assert findings["organs"]["liver"]["max_probability"] > 0.99
    assert findings["organs"]["pancreas"]["max_probability"] == 0.0


def test_untrained_classes_are_written_empty_and_do_not_gate(tmp_path):
    ct_path, _ = _ct(tmp_path / "in", np.diag([1.0, 1.0, 1.0, 1.0]))
    predictor = _predictor()
    predictor.untrained_classes = ("liver",)  # as a checkpoint with supervised_voxels {"liver": 0} says
    findings = predict_case(predictor, ct_path, tmp_path / "out" / "c1")
    seg = tmp_path / "out" / "c1" / "segmentations"
    assert not load_nifti(seg / "liver.nii.gz").array.any()
    assert findings["untrained_classes"] == ["liver"]
    # the untrained liver channel does not gate: its lesion channel stays as the network predicts it
    assert findings["gating"]["gated"]["liver_lesion"] is False
    assert load_nifti(seg / "liver_lesion.nii.gz").array.any()


def test_untrained_classes_come_from_the_checkpoint_counts():
    assert untrained_classes_of({"supervised_voxels": {"liver": 10, "pancreas_head": 0}}) == ("pancreas_head",)
    assert untrained_classes_of({}) == ()  # older checkpoints: nothing known, nothing dropped
