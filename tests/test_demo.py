"""`rsuper demo --quick` end to end: every artefact exists and parses (no quality claim at this size)."""

from __future__ import annotations

import json

import nibabel as nib
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.demo import HEADLINE_METRICS, MODEL_NAMES
from rsuper.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Comparison report" in result.output
    return out


def test_quick_demo_writes_every_artefact(demo_out):
    data = demo_out / "data"
    for split in ("masks", "reports", "test"):
        assert any((data / split).iterdir()), split
    tumors = pd.read_csv(demo_out / "extract" / "tumors.csv")
    report_ids = set(pd.read_csv(data / "reports.csv").query("split == 'reports'")["BDMAP ID"])
    assert set(tumors["BDMAP ID"]) == report_ids  # extracted from the report text of the report split only
    for case in report_ids:
        for part in ("pancreas_head", "pancreas_body", "pancreas_tail"):
            assert (demo_out / "organs" / case / "segmentations" / f"{part}.nii.gz").is_file()
    for name in ("stage1", *MODEL_NAMES):
        payload = load_checkpoint(demo_out / "runs" / name / "final.pt")
        assert payload["class_names"][-3:] == ["pancreatic_lesion", "kidney_lesion", "liver_lesion"]
        assert len(pd.read_csv(demo_out / "runs" / name / "metrics.csv")) >= 1
    test_ids = sorted(p.name for p in (data / "test").iterdir())
    for name in MODEL_NAMES:
        for case in test_ids:
            seg = demo_out / "predictions" / name / case / "segmentations" / "pancreatic_lesion.nii.gz"
            ct = nib.load(data / "test" / case / "ct.nii.gz")
            assert nib.load(seg).shape == ct.shape
            findings = json.loads((demo_out / "predictions" / name / case / "findings.json").read_text())
            assert findings["tta"] == "mirror"  # the plan's predict_tta


def test_quick_demo_comparison_outputs_parse(demo_out):
    compare = demo_out / "compare"
    table = pd.read_csv(compare / "comparison.csv")
    assert set(MODEL_NAMES) <= set(table.columns)
    assert set(HEADLINE_METRICS) <= set(table["metric"])
    for png in ("bars.png", "roc.png"):
        assert (compare / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (compare / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") or "<html" in html
    assert "data:image/png;base64," in html
    summary = json.loads((demo_out / "summary.json").read_text())
    assert {row["organ"] for row in summary} == {"pancreas", "kidney", "liver"}


def test_rerun_resumes_without_retraining(demo_out):
    final = demo_out / "runs" / "R-Super" / "final.pt"
    before = final.stat().st_mtime_ns
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(demo_out)])
    assert result.exit_code == 0, result.output
    assert "reusing" in result.output
    assert final.stat().st_mtime_ns == before


def test_rerun_with_another_plan_is_refused(demo_out):
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(demo_out), "--seed", "7"])
    assert result.exit_code == 2
    assert "another plan" in result.output and "seed: 0 -> 7" in result.output


def test_quick_demo_reviews_the_test_set_and_refines_the_report_cts(demo_out):
    queue = pd.read_csv(demo_out / "review" / "test" / "review_queue.csv")
    assert sorted(queue["case_id"]) == sorted(p.name for p in (demo_out / "data" / "test").iterdir())
    assert queue["agreement"].is_monotonic_increasing
    refine = pd.read_csv(demo_out / "refine" / "refine.csv")
    assert set(refine["status"]) <= {"accepted", "partly accepted", "needs review", "not refinable"} and len(refine)
    html = (demo_out / "compare" / "report.html").read_text()
    assert "Review queue of the test set" in html and "Refined masks of the report CTs" in html
