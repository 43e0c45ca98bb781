"""`rsuper predict` from a real checkpoint payload (tiny DynUNet): grid, outputs, resume, errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.infer.predict import PredictOptions, Predictor, resolve_tta
from rsuper.io import load_nifti
from rsuper.models.checkpoint import make_payload, save_checkpoint
from rsuper.models.registry import build_model

CLASSES = ["pancreas", "pancreas_head", "pancreas_body", "pancreas_tail", "pancreatic_lesion"]


def _checkpoint(path, config=None):
    torch.manual_seed(0)
    model = build_model("dynunet_small", 1, len(CLASSES))
    save_checkpoint(path, make_payload("dynunet_small", 1, CLASSES, spacing_mm=(2.0, 2.0, 2.0),
                                       patch_size=(32, 32, 32), state_dict=model.state_dict(), config=config))


@pytest.mark.parametrize(("config", "auto"), [(None, "none"), ({"augment": True, "mirror_prob": 0.5}, "mirror"),
                                              ({"augment": True, "mirror_prob": 0.0}, "none"),
                                              ({"augment": False, "mirror_prob": 0.5}, "none")])
def test_auto_tta_mirrors_only_for_a_network_trained_on_mirrored_patches(tmp_path, config, auto):
    _checkpoint(tmp_path / "final.pt", config)
    predictor = Predictor.from_checkpoint(tmp_path / "final.pt")
    assert resolve_tta("auto", predictor) == auto
    assert resolve_tta("flips", predictor) == "flips" and resolve_tta("none", predictor) == "none"
    assert PredictOptions().tta == "auto"


def test_cli_predict_lps_anisotropic_ct(tmp_path):
    _checkpoint(tmp_path / "final.pt")
    affine = np.array([[-0.9, 0, 0, 40.0], [0, -0.9, 0, 60.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]])
    hu = np.random.default_rng(0).normal(0, 200, (45, 50, 12)).astype(np.int16)
    (tmp_path / "data" / "case7").mkdir(parents=True)
    nib.save(nib.Nifti1Image(hu, affine), str(tmp_path / "data" / "case7" / "ct.nii.gz"))
    runner = CliRunner()
    args = ["predict", "--checkpoint", str(tmp_path / "final.pt"), str(tmp_path / "data"), str(tmp_path / "out"),
            "--save-probabilities", "--tta", "mirror"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    ct = load_nifti(tmp_path / "data" / "case7" / "ct.nii.gz")
    for folder in ("segmentations", "probabilities"):
        for name in CLASSES:
            out = load_nifti(tmp_path / "out" / "case7" / folder / f"{name}.nii.gz")
            assert out.shape == ct.shape and out.orientation == "LPS"
            np.testing.assert_allclose(out.affine, ct.affine, atol=1e-6)
    findings = json.loads((tmp_path / "out" / "case7" / "findings.json").read_text())
    assert findings["grid"] == {"shape": [45, 50, 12], "spacing_mm": [0.9, 0.9, 3.0], "orientation": "LPS"}
    assert findings["tta"] == "mirror"
    assert set(findings["organs"]) == {"pancreas"} and findings["gating"]["gated"] == {"pancreatic_lesion": True}
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "1 already done" in res.output


def test_cli_predict_clear_errors(tmp_path):
    runner = CliRunner()
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    res = runner.invoke(app, ["predict", "--checkpoint", str(tmp_path / "missing.pt"), str(tmp_path / "ct.nii.gz"),
                              str(tmp_path / "out")])
    assert res.exit_code == 2 and "missing.pt" in res.output
    _checkpoint(tmp_path / "final.pt")
    res = runner.invoke(app, ["predict", "--checkpoint", str(tmp_path / "final.pt"), str(tmp_path / "ct.nii.gz"),
                              str(tmp_path / "out")])
    assert res.exit_code == 1 and "ct.nii.gz" in res.output and "failed" in res.output
    res = runner.invoke(app, ["predict", "--checkpoint", str(tmp_path / "final.pt"), str(tmp_path / "ct.nii.gz"),
                              str(tmp_path / "out"), "--tta", "yes"])
    assert res.exit_code == 2 and "mirror" in res.output and "flips" in res.output
