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
                                              ({"augment": False, "mirror_prob": 0.5}, "none"),
                                              ({"data": {"augment": {"enabled": True, "mirror_prob": 0.5}}}, "mirror"),
                                              ({"data": {"augment": {"enabled": False, "mirror_prob": 0.5}}}, "none")])
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


def _ct_dataset(root):
    (root / "case1").mkdir(parents=True)
    hu = np.random.default_rng(0).normal(0, 200, (24, 24, 16)).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, np.diag([2.0, 2.0, 2.0, 1.0])), str(root / "case1" / "ct.nii.gz"))
    return root


def test_cli_predict_never_imports_the_network_a_checkpoint_names(tmp_path, monkeypatch):
    """Issue #26 item 1: a checkpoint naming `package.module:factory` must not import or run it."""
    (tmp_path / "rsuper_evil_predict.py").write_text(
        "from pathlib import Path\n"
        "Path(__file__).with_name('imported.marker').write_text('imported')\n"
        "def make(in_channels, num_classes, **kwargs):\n"
        "    Path(__file__).with_name('called.marker').write_text('called')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("dynunet_small", 1, len(CLASSES))
    payload = make_payload("dynunet_small", 1, CLASSES, (2.0, 2.0, 2.0), (32, 32, 32), model.state_dict())
    payload["model"]["name"] = "rsuper_evil_predict:make"
    torch.save(payload, tmp_path / "evil.pt")
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(tmp_path / "evil.pt"),
                                   str(_ct_dataset(tmp_path / "data")), str(tmp_path / "out")])
    output = "".join(res.output.split())  # rich folds long paths anywhere
    assert res.exit_code == 2, res.output
    assert "'rsuper_evil_predict:make'isnotaregisterednetwork" in output and "--model" in output
    assert not (tmp_path / "imported.marker").exists() and not (tmp_path / "called.marker").exists()
    assert not (tmp_path / "out").exists()


def test_cli_predict_model_option_builds_the_network_the_user_names(tmp_path, monkeypatch):
    (tmp_path / "rsuper_own_predict.py").write_text(
        "from rsuper.models.registry import build_model\n"
        "def make(in_channels, num_classes, **kwargs):\n"
        "    return build_model('dynunet_small', in_channels, num_classes, **kwargs)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("dynunet_small", 1, len(CLASSES))
    save_checkpoint(tmp_path / "own.pt", make_payload("rsuper_own_predict:make", 1, CLASSES, (2.0, 2.0, 2.0),
                                                      (32, 32, 32), model.state_dict()))
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(tmp_path / "own.pt"), "--model",
                                   "rsuper_own_predict:make", str(_ct_dataset(tmp_path / "data")),
                                   str(tmp_path / "out"), "--tta", "none"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "case1" / "segmentations" / "pancreatic_lesion.nii.gz").is_file()


def test_cli_predict_refuses_class_names_that_are_paths(tmp_path):
    """Issue #26 item 2: a checkpoint class `../../../escaped/liver` must not be written outside OUT."""
    model = build_model("dynunet_small", 1, len(CLASSES))
    names = CLASSES[:-1] + ["../../../escaped/pancreatic_lesion"]
    torch.save(make_payload("dynunet_small", 1, names, (2.0, 2.0, 2.0), (32, 32, 32), model.state_dict()),
               tmp_path / "bad_classes.pt")
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(tmp_path / "bad_classes.pt"),
                                   str(_ct_dataset(tmp_path / "data")), str(tmp_path / "a" / "b" / "out")])
    output = "".join(res.output.split())  # rich folds long paths anywhere
    assert res.exit_code == 2, res.output
    assert "bad_classes.pt:classname'../../../escaped/pancreatic_lesion'isnotallowed" in output
    assert not list(tmp_path.rglob("escaped*"))
