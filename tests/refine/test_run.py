"""rsuper.refine.run on hand-made CTs: statuses with reasons, masks in the CT's grid, the AbdomenAtlas layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from review_helpers import (AFFINE, SHAPE, SPACING_MM, TAIL_TUMORS, ball, tail_probability, tail_report,
                            write_dataset_case, write_prediction_case, write_reports)

from rsuper.data.cases import discover_masks
from rsuper.infer.findings import lesion_components
from rsuper.io import load_nifti
from rsuper.refine.run import RefineOptions, refine_cases
from rsuper.reports.schema import CaseFindings, Lesion


@pytest.fixture()
def refined(tmp_path):
    data, pred = tmp_path / "data", tmp_path / "pred"
    quiet = np.where(tail_probability() > 0, 0.05, 0.0).astype(np.float32)
    cases = {
        "two": (tail_probability(), tail_report("two")),
        "healthy": (quiet, CaseFindings(case_id="healthy", lesions=[])),
        "unsized": (tail_probability(), CaseFindings(case_id="unsized", lesions=[
            Lesion(organ="pancreas", location=["tail"], size_mm=None)])),
        "missed": (quiet, tail_report("missed")),
        "extra": (tail_probability(), CaseFindings(case_id="extra", lesions=[])),
    }
    for case_id, (prob, _) in cases.items():
        write_dataset_case(data, case_id)
        write_prediction_case(pred, case_id, {"pancreatic_lesion": prob, "kidney_lesion": np.zeros(SHAPE)})
    reports = write_reports(tmp_path / "tumors.csv", [f for _, f in cases.values()])
    out = tmp_path / "refined"
    table = refine_cases(pred, reports, out, [data]).set_index("case_id")
    return out, table


def test_statuses_and_reasons(refined):
    out, table = refined
    assert table.loc["two", "status"] == "accepted" and table.loc["two", "confidence"] > 0.9
    assert table.loc["healthy", "status"] == "accepted"
    assert table.loc["unsized", "status"] == "not refinable" and "unknown size" in table.loc["unsized", "reasons"]
    assert table.loc["missed", "status"] == "partly accepted"  # the quiet kidney channel is accepted on its own
    assert "the model calls 0% of it tumor" in table.loc["missed", "reasons"]
    assert table.loc["extra", "status"] == "partly accepted" and table.loc["extra", "accepted_organs"] == "kidney"
    assert "p 0.90) in the pancreatic tail where the report places none" in table.loc["extra", "reasons"]
    assert (out / "refine.csv").is_file() and len(pd.read_csv(out / "refine_tumors.csv")) == 4  # two + missed


def test_masks_agree_with_the_report_in_the_ct_grid(refined):
    out, _ = refined
    two = load_nifti(out / "accepted" / "two" / "segmentations" / "pancreatic_lesion.nii.gz")
    assert two.shape == SHAPE and np.allclose(two.affine, AFFINE) and two.array.dtype == np.uint8
    comps = lesion_components(two.array > 0, SPACING_MM)
    assert [round(c["largest_diameter_mm"] / 10) for c in comps] == [2, 1]  # 20 and 10 mm
    truth = ball(*TAIL_TUMORS[0]) | ball(*TAIL_TUMORS[1])
    assert 2 * (truth & (two.array > 0)).sum() / (truth.sum() + (two.array > 0).sum()) > 0.9
    healthy = out / "accepted" / "healthy" / "segmentations"
    assert {p.name for p in healthy.iterdir()} == {"pancreatic_lesion.nii.gz", "kidney_lesion.nii.gz"}
    assert all(load_nifti(p).array.sum() == 0 for p in healthy.iterdir())  # "no lesion": empty masks
    assert not (out / "accepted" / "unsized").exists() and not (out / "needs_review" / "unsized").exists()
    assert sorted(discover_masks(out / "accepted")) == ["extra", "healthy", "two"]  # a folder for prepare --masks-dir


def test_a_partly_accepted_ct_gives_only_its_accepted_organs_to_training(refined):
    """The accepted organs go to accepted/ (the others are absent there: unknown when trained on), unless another
    organ has a reported tumor (it would lose its report supervision); needs_review/ holds every channel."""
    out, table = refined
    assert table.loc["extra", "folder"] == "accepted + needs_review"  # report: no lesion; model: a pancreatic one
    accepted = out / "accepted" / "extra" / "segmentations"
    assert {p.name for p in accepted.iterdir()} == {"kidney_lesion.nii.gz"}
    assert load_nifti(accepted / "kidney_lesion.nii.gz").array.sum() == 0
    assert table.loc["missed", "folder"] == "needs_review"  # its reported pancreatic tumors stay report-supervised
    review = out / "needs_review" / "missed" / "segmentations"
    assert {p.name for p in review.iterdir()} == {"pancreatic_lesion.nii.gz", "kidney_lesion.nii.gz"}
    assert load_nifti(review / "pancreatic_lesion.nii.gz").array.sum() > 0  # grown where the model sees nothing


def test_a_location_without_its_mask_falls_back_to_the_organ_or_is_not_refinable_when_strict(tmp_path):
    data, pred = tmp_path / "data", tmp_path / "pred"
    write_dataset_case(data, "c", classes=("pancreas",))  # no sub-segment masks anywhere
    write_prediction_case(pred, "c", {"pancreatic_lesion": tail_probability()}, organs=False)
    reports = write_reports(tmp_path / "tumors.csv", [tail_report("c")])
    loose = refine_cases(pred, reports, tmp_path / "loose", [data]).iloc[0]
    assert loose["status"] == "needs review"
    assert "location pancreatic tail has no mask; grown within the whole pancreas" in loose["reasons"]
    strict = refine_cases(pred, reports, tmp_path / "strict", [data], RefineOptions(strict_location=True)).iloc[0]
    assert strict["status"] == "not refinable" and "has no mask" in strict["reasons"]


def test_a_rerun_moves_a_case_whose_status_changed(tmp_path, refined):
    out, _ = refined
    pred, data = out.parent / "pred", out.parent / "data"
    from rsuper.refine.status import StatusRules

    table = refine_cases(pred, out.parent / "tumors.csv", out, [data],
                         RefineOptions(rules=StatusRules(accept_confidence=1.0))).set_index("case_id")
    assert table.loc["two", "status"] == "partly accepted"  # was accepted; the quiet kidney channel still is
    assert (out / "needs_review" / "two").is_dir() and not (out / "accepted" / "two").exists()
    table = refine_cases(pred, out.parent / "tumors.csv", out, [data]).set_index("case_id")
    assert table.loc["two", "status"] == "accepted" and not (out / "needs_review" / "two").exists()
