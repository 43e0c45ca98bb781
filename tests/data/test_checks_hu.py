"""A CT that `rsuper check` calls non-HU is refused by prepare and predict unless --allow-non-hu
(issue #26 item 8); the rule has one home (rsuper.data.checks.hu_problem)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.data.checks import check_case, hu_problem
from rsuper.data.cases import discover_cases
from rsuper.data.preprocess import prepare_dataset
from rsuper.infer.predict import PredictOptions, Predictor, predict_case
from rsuper.models.checkpoint import make_payload, save_checkpoint
from rsuper.models.registry import build_model

runner = CliRunner()
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (20, 18, 12)


def _dataset(root, normalised):
    """One case whose CT is in HU or normalised to [0, 1] (what `rsuper check` flags as not_hu)."""
    hu = np.full(SHAPE, -1000.0, np.float32)
    hu[5:15, 5:13, 3:9] = 40.0
    hu[2:4, 2:4, 2:4] = 400.0  # bone
    ct = (hu + 1000.0) / 1500.0 if normalised else hu
    (root / "case1" / "segmentations").mkdir(parents=True)
    nib.save(nib.Nifti1Image(ct.astype(np.float32), AFFINE), str(root / "case1" / "ct.nii.gz"))
    organ = np.zeros(SHAPE, np.uint8)
    organ[6:14, 6:12, 4:8] = 1
    nib.save(nib.Nifti1Image(organ, AFFINE), str(root / "case1" / "segmentations" / "pancreas.nii.gz"))
    return root


def test_the_rule_is_the_checks_rule(tmp_path):
    data = _dataset(tmp_path / "d", normalised=True)
    problems = check_case(discover_cases(data)[0], data, report_case=False)
    assert [p.kind for p in problems] == ["not_hu"] and problems[0].blocking
    reason = hu_problem(nib.load(str(data / "case1" / "ct.nii.gz")).get_fdata())
    assert reason is not None and reason in problems[0].message
    assert hu_problem(np.array([-1000.0, 40.0, 300.0])) is None


def test_prepare_refuses_a_non_hu_ct_unless_allowed(tmp_path):
    data = _dataset(tmp_path / "d", normalised=True)
    result = prepare_dataset(data, tmp_path / "cache", 4.0)
    assert list(result.failed) == ["case1"] and "Hounsfield" in result.failed["case1"]
    assert not (tmp_path / "cache" / "case1").exists()
    res = runner.invoke(app, ["prepare", str(data), "--out", str(tmp_path / "cache"), "--spacing", "4"])
    assert res.exit_code == 1 and "--allow-non-hu" in " ".join(res.output.split()), res.output
    res = runner.invoke(app, ["prepare", str(data), "--out", str(tmp_path / "cache"), "--spacing", "4",
                              "--allow-non-hu"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cache" / "case1" / "meta.json").is_file()
    ok = prepare_dataset(_dataset(tmp_path / "hu", normalised=False), tmp_path / "cache_hu", 4.0)
    assert ok.prepared == ["case1"]


def _checkpoint(path):
    torch.manual_seed(0)
    classes = ["pancreas", "pancreatic_lesion"]
    model = build_model("dynunet_small", 1, len(classes))
    save_checkpoint(path, make_payload("dynunet_small", 1, classes, spacing_mm=(2.0, 2.0, 2.0),
                                       patch_size=(32, 32, 32), state_dict=model.state_dict()))
    return path


def test_predict_refuses_a_non_hu_ct_unless_allowed(tmp_path):
    data = _dataset(tmp_path / "d", normalised=True)
    ckpt = _checkpoint(tmp_path / "final.pt")
    predictor = Predictor.from_checkpoint(ckpt)
    with pytest.raises(ValueError, match="Hounsfield.*--allow-non-hu"):
        predict_case(predictor, data / "case1" / "ct.nii.gz", tmp_path / "p" / "case1", PredictOptions(tta="none"))
    predict_case(predictor, data / "case1" / "ct.nii.gz", tmp_path / "p" / "case1",
                 PredictOptions(tta="none", allow_non_hu=True))
    assert (tmp_path / "p" / "case1" / "findings.json").is_file()
    res = runner.invoke(app, ["predict", "--checkpoint", str(ckpt), str(data), str(tmp_path / "cli"), "--tta", "none"])
    assert res.exit_code == 1 and "Hounsfield" in res.output and "--allow-non-hu" in res.output, res.output
    assert not (tmp_path / "cli" / "case1" / "findings.json").exists()
    res = runner.invoke(app, ["predict", "--checkpoint", str(ckpt), str(data), str(tmp_path / "cli"), "--tta", "none",
                              "--allow-non-hu"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "case1" / "findings.json").is_file()


@pytest.mark.parametrize("command", ["prepare", "predict"])
def test_help_documents_the_override(command):
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0 and "--allow-non-hu" in res.output
