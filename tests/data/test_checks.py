"""`rsuper check` on generated datasets with planted faults."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.data.checks import check_dataset
from rsuper.io import Volume, save_nifti

runner = CliRunner()
AFFINE = np.array([[-2.0, 0, 0, 30.0], [0, -2.0, 0, 40.0], [0, 0, 2.5, -50.0], [0, 0, 0, 1]])
SHAPE = (32, 32, 24)


def _write_case(root, case_id, rng, lesion=None, ct=None):
    """A small HU-like CT with liver and pancreas masks; ``lesion`` = None (no file), "empty" or "full"."""
    if ct is None:
        ct = rng.normal(40, 20, SHAPE)
        ct[:4] = -1000
        ct = ct.astype(np.int16)
    save_nifti(Volume(ct, AFFINE), root / case_id / "ct.nii.gz")
    seg = root / case_id / "segmentations"
    liver = np.zeros(SHAPE, np.uint8)
    liver[5:15, 5:20, 5:15] = 1
    pancreas = np.zeros(SHAPE, np.uint8)
    pancreas[18:26, 10:14, 8:12] = 1
    save_nifti(Volume(liver, AFFINE), seg / "liver.nii.gz")
    save_nifti(Volume(pancreas, AFFINE), seg / "pancreas.nii.gz")
    if lesion is not None:
        tumor = np.zeros(SHAPE, np.uint8)
        if lesion == "full":
            tumor[20:23, 11:13, 9:11] = 1
        save_nifti(Volume(tumor, AFFINE), seg / "pancreatic_lesion.nii.gz")


def _reports_csv(path, ids):
    pd.DataFrame({"BDMAP ID": ids, "Report": [f"Report of {i}. Pancreas unremarkable." for i in ids]}).to_csv(
        path, index=False
    )


def _digest(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_planted_faults_are_all_named_and_exit_nonzero(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "reports"
    for case in ("BDMAP_A", "BDMAP_B", "BDMAP_C", "BDMAP_D"):
        _write_case(root, case, rng)
    # fault 1: truncated CT
    ct = root / "BDMAP_A" / "ct.nii.gz"
    ct.write_bytes(ct.read_bytes()[:300])
    # fault 2: liver mask whose affine is shifted by 2 mm
    shifted = AFFINE.copy()
    shifted[0, 3] += 2.0
    liver = np.zeros(SHAPE, np.uint8)
    liver[5:15, 5:20, 5:15] = 1
    save_nifti(Volume(liver, shifted), root / "BDMAP_B" / "segmentations" / "liver.nii.gz")
    # fault 3: empty lesion file in a report case
    empty_lesion = root / "BDMAP_C" / "segmentations" / "pancreatic_lesion.nii.gz"
    save_nifti(Volume(np.zeros(SHAPE, np.uint8), AFFINE), empty_lesion)
    csv = tmp_path / "reports.csv"
    _reports_csv(csv, ["BDMAP_A", "BDMAP_B", "BDMAP_C", "BDMAP_D"])
    before = _digest(root)

    out_json = tmp_path / "check.json"
    result = runner.invoke(app, ["check", str(root), "--reports", str(csv), "--json", str(out_json)],
                           terminal_width=240)
    assert result.exit_code == 1, result.output
    for needle in ("BDMAP_A", "unreadable", "BDMAP_B", "affine_mismatch", "BDMAP_C", "empty_lesion"):
        assert needle in result.output, needle
    assert "BDMAP_D" not in result.output
    payload = json.loads(out_json.read_text())
    kinds = {(p["case_id"], p["kind"]) for p in payload["problems"] if p["blocking"]}
    assert kinds == {
        ("BDMAP_A", "unreadable"), ("BDMAP_B", "affine_mismatch"), ("BDMAP_C", "empty_lesion")
    }
    assert _digest(root) == before, "check modified its inputs"


def test_clean_dataset_exits_zero(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "masks"
    _write_case(root, "case_1", rng, lesion="empty")  # empty lesion file is fine in a mask dataset
    _write_case(root, "case_2", rng, lesion="full")
    result = runner.invoke(app, ["check", str(root)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "0 blocking" in result.output


def test_other_faults_library(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "data"
    _write_case(root, "normalised", rng, ct=rng.uniform(-1, 1, SHAPE).astype(np.float32))
    nan_ct = rng.normal(0, 300, SHAPE).astype(np.float32)
    nan_ct[0, 0, 0] = np.nan
    _write_case(root, "nan", rng, ct=nan_ct)
    _write_case(root, "labels", rng)
    non_binary = np.zeros(SHAPE, np.uint8)
    non_binary[1, 1, 1] = 255
    save_nifti(Volume(non_binary, AFFINE), root / "labels" / "segmentations" / "spleen.nii.gz")
    _write_case(root, "small", rng)
    save_nifti(Volume(np.zeros((32, 32, 20), np.uint8), AFFINE), root / "small" / "segmentations" / "spleen.nii.gz")
    _write_case(root, "good", rng, lesion="full")
    csv = tmp_path / "reports.csv"
    pd.DataFrame({
        "id": ["good", "good", "ghost", "labels", "nan", "small"],
        "Findings": ["a", "b", "c", "", "d", "e"],
    }).to_csv(csv, index=False)
    problems = check_dataset(root, csv)
    found = {(p.case_id, p.kind, p.blocking) for p in problems}
    assert ("normalised", "not_hu", True) in found
    assert ("nan", "nan_inf", True) in found
    assert ("labels", "non_binary", True) in found
    assert ("small", "shape_mismatch", True) in found
    assert ("good", "duplicate_id", True) in found          # two different reports for one id
    assert ("labels", "empty_report", True) in found
    assert ("normalised", "ct_without_report", False) in found
    assert ("good", "lesion_in_report_case", False) in found
    orphan = [p for p in problems if p.kind == "report_without_ct"]
    assert len(orphan) == 1 and "ghost" in orphan[0].message
    assert not any(p.case_id == "good" and p.kind in ("not_hu", "non_binary", "unreadable") for p in problems)


def test_bad_reports_columns_give_a_clear_error(tmp_path):
    rng = np.random.default_rng(3)
    _write_case(tmp_path / "d", "c1", rng)
    csv = tmp_path / "r.csv"
    pd.DataFrame({"patient": ["c1"], "text": ["x"]}).to_csv(csv, index=False)
    result = runner.invoke(app, ["check", str(tmp_path / "d"), "--reports", str(csv)], terminal_width=240)
    assert result.exit_code == 2
    assert "BDMAP ID" in result.output and "patient" in result.output


def test_unknown_layout_is_blocking(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["check", str(tmp_path / "empty")], terminal_width=240)
    assert result.exit_code == 1
    assert "no cases found" in result.output


def test_nnunet_label_map_values_are_checked_against_dataset_json(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "Dataset001"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "pancreas": 2}}))
    for case, bad_value in (("ok", 2), ("bad", 7)):
        ct = rng.normal(40, 20, SHAPE)
        ct[:4] = -1000
        save_nifti(Volume(ct.astype(np.int16), AFFINE), root / "imagesTr" / f"{case}_0000.nii.gz")
        label_map = np.zeros(SHAPE, np.uint8)
        label_map[2:6, 2:6, 2:6] = 1
        label_map[10:12, 10:12, 10:12] = bad_value
        save_nifti(Volume(label_map, AFFINE), root / "labelsTr" / f"{case}.nii.gz")
    problems = check_dataset(root)
    assert [(p.case_id, p.kind) for p in problems] == [("bad", "non_binary")]
    assert "[7]" in problems[0].message


def test_windows_1252_reports_are_read_with_a_warning(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "reports"
    _write_case(root, "c1", rng)
    _write_case(root, "c2", rng)
    csv = tmp_path / "r.csv"
    csv.write_bytes("BDMAP ID,Report\nc1,3.1 × 2.4 cm mass in the pancreatic head.\nc2,No mass.\n".encode("cp1252"))
    result = runner.invoke(app, ["check", str(root), "--reports", str(csv)], terminal_width=240)
    assert result.exit_code == 0, result.output
    (problem,) = [p for p in check_dataset(root, reports_csv=csv) if p.kind == "not_utf8"]
    assert not problem.blocking and "c1" in problem.message and "c2" not in problem.message
    assert "Windows-1252" in problem.message
