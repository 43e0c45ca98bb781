"""evaluate / compare end to end on synthetic prediction folders: a perfect model and a shifted one."""

from __future__ import annotations

import base64
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.evaluate.compare import compare_predictions
from rsuper.evaluate.result import EvaluationSettings
from rsuper.evaluate.run import evaluate_predictions
from rsuper.reports.schema import CaseFindings, Lesion
from rsuper.reports.tables import write_cases_csv, write_tumors_csv

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])
SHAPE = (24, 24, 16)
TUMOR_CASES = ("c0", "c1", "c2")
CASES = TUMOR_CASES + ("c3", "c4", "c5")


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), AFFINE), str(path))


def _truth(case):
    m = np.zeros(SHAPE, bool)
    if case in TUMOR_CASES:
        m[8:12, 8:12, 6:10] = True  # 4^3 = 64 mm^3 cube
    return m


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    for case in CASES:
        truth = _truth(case)
        _save(root / "truth" / case / "segmentations" / "pancreatic_lesion.nii.gz", truth)
        ct = np.where(truth, 80, 40).astype(np.int16)
        nib.save(nib.Nifti1Image(ct, AFFINE), str(root / "truth" / case / "ct.nii.gz"))
        head = np.zeros(SHAPE, bool)
        head[:12] = True
        for model in ("A", "B"):
            _save(root / model / case / "segmentations" / "pancreas_head.nii.gz", head)
        # A: perfect, with probabilities (0.9 in tumors, 0.2 elsewhere)
        _save(root / "A" / case / "segmentations" / "pancreatic_lesion.nii.gz", truth)
        _save(root / "A" / case / "probabilities" / "pancreatic_lesion.nii.gz",
              np.where(truth, 230, 51) if case in TUMOR_CASES else np.full(SHAPE, 51))
        # B: tumors shifted by one voxel along x, plus a 3^3 false positive in c3
        pred = np.roll(truth, 1, axis=0)
        if case == "c3":
            pred[2:5, 2:5, 2:5] = True
        _save(root / "B" / case / "segmentations" / "pancreatic_lesion.nii.gz", pred)
    findings = [CaseFindings(case_id=c, lesions=[Lesion(organ="pancreas", location=["head"], size_mm=[4, 4, 4])]
                             if c in TUMOR_CASES else []) for c in CASES]
    write_tumors_csv(findings, root / "tumors.csv")
    write_cases_csv(findings, root / "cases.csv")
    return root


def test_perfect_model_scores_one(data):
    r = evaluate_predictions(data / "A", data / "out_A", reports=data / "tumors.csv", masks=data / "truth",
                             settings=EvaluationSettings(n_bootstrap=50))
    det = r.detection.iloc[0]
    assert (det["organ"], det["sensitivity"], det["specificity"], det["f1"], det["auroc"]) == ("pancreas", 1, 1, 1, 1)
    assert det["auroc_score"] == "max_probability"
    ov = r.overlap.iloc[0]
    assert ov["dsc_mean"] == 1.0 and ov["nsd_mean"] == 1.0  # tumor-free cases score 1 too
    assert r.lesions.iloc[0][["lesion_recall", "lesion_precision"]].tolist() == [1.0, 1.0]
    agree = r.agreement.iloc[0]
    assert agree["count_agreement"] == 1.0 and agree["location_agreement"] == 1.0
    assert agree["largest_diameter_mae_mm"] < 1.0
    assert len(r.probability_sweep) and (data / "out_A" / "probability_sweep.png").is_file()
    for name in ("per_case.csv", "detection.csv", "detection_sweep.csv", "overlap.csv", "lesions.csv",
                 "report_agreement.csv", "roc.png", "roc.csv", "sweep.png", "sweep.csv", "metrics.json",
                 "report.html"):
        assert (data / "out_A" / name).is_file(), name
    assert json.loads((data / "out_A" / "metrics.json").read_text())["settings"]["nsd_tolerance_mm"] == 2.0


def test_shifted_model_hand_values(data):
    r = evaluate_predictions(data / "B", None, reports=data / "cases.csv", masks=data / "truth",
                             settings=EvaluationSettings(n_bootstrap=50))
    det = r.detection.iloc[0]
    # tp 3, fn 0, fp 1 (c3: 3^3 speck survives opening as a 7-voxel cross), tn 2
    assert (det["tp"], det["fn"], det["fp"], det["tn"]) == (3, 0, 1, 2)
    assert det["specificity"] == pytest.approx(2 / 3) and det["f1"] == pytest.approx(6 / 7)
    per_case = r.per_case.set_index("case_id")
    assert per_case.loc["c3", "pred_volume_mm3"] == 7.0 and per_case.loc["c3", "pred_volume_raw_mm3"] == 27.0
    # DSC: 0.75 on the 3 shifted cubes, 0 on c3 (FP), 1 on the two empty cases
    assert per_case["dsc"].tolist() == pytest.approx([0.75, 0.75, 0.75, 0.0, 1.0, 1.0])
    assert r.overlap.iloc[0]["dsc_mean"] == pytest.approx((3 * 0.75 + 2) / 6)
    assert r.lesions.iloc[0][["lesion_recall", "lesion_precision"]].tolist() == [1.0, 0.75]


def test_operating_point_given_or_from_validation(data):
    fixed = evaluate_predictions(data / "B", None, reports=data / "tumors.csv",
                                 settings=EvaluationSettings(volume_threshold_mm3=10, n_bootstrap=20))
    assert fixed.detection.iloc[0]["specificity"] == 1.0  # the 7 mm^3 speck is below 10 mm^3
    val = evaluate_predictions(data / "B", None, reports=data / "tumors.csv", masks=data / "truth",
                               settings=EvaluationSettings(val_ids={"c0", "c3", "c4"}, n_bootstrap=20))
    det = val.detection.iloc[0]
    assert det["volume_threshold_mm3"] == 32.0  # a 4^3 cube is 32 voxels after opening
    assert det["n"] == 3 and det["f1"] == 1.0
    # validation CTs only choose the threshold: DSC is over the other three (0.75, 0.75, 1.0)
    assert val.overlap.iloc[0]["cases"] == 3
    assert val.overlap.iloc[0]["dsc_mean"] == pytest.approx(2.5 / 3)


def test_compare_writes_table_figures_and_self_contained_html(data):
    table = compare_predictions((data / "A", data / "B"), data / "cmp", reports=data / "tumors.csv",
                                masks=data / "truth", names=("perfect", "shifted"), images=data / "truth",
                                settings=EvaluationSettings(n_bootstrap=20))
    row = table.set_index(["organ", "metric"]).loc[("pancreas", "dsc_mean")]
    assert row["perfect"] == 1.0 and row["delta"] == pytest.approx((3 * 0.75 + 2) / 6 - 1)
    for name in ("comparison.csv", "bars.png", "bars.csv", "roc.png", "roc.csv", "disagreements.csv",
                 "perfect/detection.csv", "shifted/per_case.csv"):
        assert (data / "cmp" / name).is_file(), name
    worst = pd.read_csv(data / "cmp" / "disagreements.csv")
    assert worst.iloc[0]["case_id"] == "c3"  # the only differing CT-level call
    pngs = sorted((data / "cmp" / "overlays").glob("*.png"))
    assert pngs and all(p.with_suffix(".csv").is_file() for p in pngs)
    html = (data / "cmp" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 + len(pngs) and "src='http" not in html
    assert base64.b64decode(html.split("base64,")[1].split("'")[0])[:4] == b"\x89PNG"


def test_cli_evaluate_and_compare(data):
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--pred", str(data / "A"), "--reports", str(data / "tumors.csv"),
                              "--out", str(data / "cli"), "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    assert "CT-level detection" in res.output and (data / "cli" / "report.html").is_file()
    res = runner.invoke(app, ["evaluate", "--compare", str(data / "A"), str(data / "B"), "--names", "a", "b",
                              "--masks", str(data / "truth"), "--out", str(data / "cli_cmp"), "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    assert (data / "cli_cmp" / "report.html").is_file()
    res = runner.invoke(app, ["evaluate", "--pred", str(data / "A"), "--out", str(data / "x")])
    assert res.exit_code != 0 and "--reports" in res.output
