"""No command writes into its inputs (issue #26 item 3): OUT may not be an input, lie inside one or contain one."""

from __future__ import annotations

import hashlib
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.models.checkpoint import make_payload, save_checkpoint
from rsuper.models.registry import build_model
from rsuper.paths import OutputOverlapsInputError, check_output_apart

runner = CliRunner()
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (20, 18, 12)
CLASSES = ["pancreas", "pancreatic_lesion"]


def _dataset(root, cases=("case1",)):
    """AbdomenAtlas layout: <case>/ct.nii.gz (HU) + segmentations/{pancreas,pancreatic_lesion}.nii.gz."""
    for case in cases:
        hu = np.full(SHAPE, -1000, np.int16)
        hu[5:15, 5:13, 3:9] = 40
        hu[2:4, 2:4, 2:4] = 400  # bone
        (root / case / "segmentations").mkdir(parents=True)
        nib.save(nib.Nifti1Image(hu, AFFINE), str(root / case / "ct.nii.gz"))
        organ = np.zeros(SHAPE, np.uint8)
        organ[6:14, 6:12, 4:8] = 1
        lesion = np.zeros(SHAPE, np.uint8)
        lesion[8:10, 8:10, 5:7] = 1
        nib.save(nib.Nifti1Image(organ, AFFINE), str(root / case / "segmentations" / "pancreas.nii.gz"))
        nib.save(nib.Nifti1Image(lesion, AFFINE), str(root / case / "segmentations" / "pancreatic_lesion.nii.gz"))
    return root


def _fingerprint(root):
    """{relative path: (sha256, mtime_ns)} of every file under ``root``."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _checkpoint(path):
    torch.manual_seed(0)
    model = build_model("dynunet_small", 1, len(CLASSES))
    save_checkpoint(path, make_payload("dynunet_small", 1, CLASSES, spacing_mm=(2.0, 2.0, 2.0),
                                       patch_size=(32, 32, 32), state_dict=model.state_dict()))
    return path


def _refused(result, *paths):
    """Exit 2 with one error line naming every path."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if "error" in line]
    assert len(lines) == 1, result.output
    text = " ".join(result.output.split())
    for path in paths:
        assert str(path) in text, (path, result.output)


def test_check_output_apart_rules(tmp_path):
    data = tmp_path / "data"
    (data / "c1").mkdir(parents=True)
    (tmp_path / "data2").mkdir()
    ckpt = tmp_path / "runs" / "final.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    inputs = {"INPUT": data, "--checkpoint": ckpt, "--masks": None}
    check_output_apart(tmp_path / "preds", inputs)  # a sibling is fine
    check_output_apart(tmp_path / "data2", inputs)  # a common name prefix is not containment
    for out, word in ((data, "is the input"), (data / "c1" / "out", "inside the input"),
                      (tmp_path, "contains the input"), (ckpt, "is the input")):
        with pytest.raises(OutputOverlapsInputError, match=word) as info:
            check_output_apart(out, inputs, output_label="OUT")
        message = str(info.value)
        assert "\n" not in message and str(out) in message and message.startswith("OUT ")
    # several inputs given as a list; the first overlap is named
    with pytest.raises(OutputOverlapsInputError, match="--cache"):
        check_output_apart(tmp_path / "c2" / "run", {"--cache": [tmp_path / "c1", tmp_path / "c2"]})


def test_symlinks_are_resolved(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    link = tmp_path / "link"
    os.symlink(data, link)
    with pytest.raises(OutputOverlapsInputError, match="is the input") as info:
        check_output_apart(link, {"DATASET": data})
    assert str(link) in str(info.value) and str(data) in str(info.value)
    with pytest.raises(OutputOverlapsInputError, match="inside the input"):
        check_output_apart(link / "out", {"DATASET": data})


def test_predict_dataset_onto_itself_is_refused_and_masks_survive(tmp_path):
    data = _dataset(tmp_path / "data")
    ckpt = _checkpoint(tmp_path / "final.pt")
    before = _fingerprint(data)
    res = runner.invoke(app, ["predict", "--checkpoint", str(ckpt), str(data), str(data)])
    _refused(res, data)
    res = runner.invoke(app, ["predict", "--checkpoint", str(ckpt), str(data / "case1" / "ct.nii.gz"), str(data)])
    _refused(res, data, data / "case1" / "ct.nii.gz")
    assert _fingerprint(data) == before


def test_organs_into_its_dataset_is_refused(tmp_path):
    data = _dataset(tmp_path / "data")
    before = _fingerprint(data)
    _refused(runner.invoke(app, ["organs", str(data), "--out", str(data)]), data)
    masks = _dataset(tmp_path / "masks")
    _refused(runner.invoke(app, ["organs", str(data), "--out", str(masks / "x"), "--masks-dir", str(masks)]),
             masks / "x", masks)
    assert _fingerprint(data) == before


def test_prepare_evaluate_extract_check_are_refused(tmp_path):
    data = _dataset(tmp_path / "data")
    before = _fingerprint(data)
    _refused(runner.invoke(app, ["prepare", str(data), "--out", str(data / "cache")]), data / "cache", data)
    _refused(runner.invoke(app, ["evaluate", "--pred", str(data), "--masks", str(tmp_path), "--out",
                                 str(tmp_path / "eval")]), tmp_path / "eval", tmp_path)
    _refused(runner.invoke(app, ["evaluate", "--compare", str(tmp_path / "a"), str(data), "--masks", str(data),
                                 "--out", str(tmp_path)]), tmp_path)
    reports = tmp_path / "reports.csv"
    reports.write_text("BDMAP ID,Report\ncase1,No lesion.\n")
    _refused(runner.invoke(app, ["extract", str(reports), "--out", str(tmp_path)]), tmp_path, reports)
    _refused(runner.invoke(app, ["extract", str(reports), "--out", str(tmp_path / "x"), "--cache", str(reports)]),
             reports)
    _refused(runner.invoke(app, ["check", str(data), "--reports", str(reports), "--json", str(reports)]), reports)
    _refused(runner.invoke(app, ["check", str(data), "--json", str(data / "check.json")]), data / "check.json")
    assert reports.read_text() == "BDMAP ID,Report\ncase1,No lesion.\n"
    assert _fingerprint(data) == before


def test_train_and_convert_checkpoint_are_refused(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    _refused(runner.invoke(app, ["train", "--cache", str(cache), "--out", str(cache), "--stage", "1"]), cache)
    ckpt = _checkpoint(tmp_path / "runs" / "s1" / "final.pt")
    before = ckpt.read_bytes()
    _refused(runner.invoke(app, ["train", "--cache", str(cache), "--stage", "2", "--init", str(ckpt),
                                 "--out", str(ckpt.parent)]), ckpt.parent, ckpt)
    (tmp_path / "classes.txt").write_text("liver\n")  # --classes is required since issue #26
    classes = ["--classes", str(tmp_path / "classes.txt")]
    _refused(runner.invoke(app, ["convert-checkpoint", str(ckpt), str(ckpt), *classes]), ckpt)
    assert ckpt.read_bytes() == before


def test_extract_score_json_onto_an_input_is_refused(tmp_path):
    gold = tmp_path / "gold"
    gold.mkdir()
    (gold / "tumors.csv").write_text("BDMAP ID,Standardized Organ\n")
    _refused(runner.invoke(app, ["extract-score", str(gold), str(gold), "--json", str(gold / "tumors.csv")]),
             gold / "tumors.csv")
