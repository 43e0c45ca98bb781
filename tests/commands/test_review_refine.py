"""`rsuper review` and `rsuper refine` on the command line: example in the help, one-line errors, outputs apart."""

from __future__ import annotations

import numpy as np
import pytest
from review_helpers import tail_probability, tail_report, write_dataset_case, write_prediction_case, write_reports
from typer.testing import CliRunner

from rsuper.cli import app

runner = CliRunner()


@pytest.fixture()
def inputs(tmp_path):
    write_dataset_case(tmp_path / "data", "c")
    write_prediction_case(tmp_path / "pred", "c", {"pancreatic_lesion": tail_probability()})
    return tmp_path, write_reports(tmp_path / "tumors.csv", [tail_report("c")])


def _error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


@pytest.mark.parametrize("command", ["review", "refine"])
def test_help_has_an_example(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and f"Example: rsuper {command} " in result.output


def test_review_refuses_an_output_inside_an_input(inputs):
    root, reports = inputs
    result = runner.invoke(app, ["review", "--pred", str(root / "pred"), "--reports", str(reports),
                                 "--out", str(root / "pred" / "review")])
    assert result.exit_code == 2 and "lies inside the input --pred" in result.output
    assert len(_error_lines(result)) == 1 and not (root / "pred" / "review").exists()


def test_review_bad_reports_is_one_line(inputs):
    root, _ = inputs
    result = runner.invoke(app, ["review", "--pred", str(root / "pred"), "--reports", str(root / "nope.csv"),
                                 "--out", str(root / "review")])
    assert result.exit_code == 2 and _error_lines(result) == [f"error: --reports {root / 'nope.csv'} not found"]
    bad = root / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    result = runner.invoke(app, ["review", "--pred", str(root / "pred"), "--reports", str(bad), "--out",
                                 str(root / "review")])
    assert result.exit_code == 2 and len(_error_lines(result)) == 1 and "no case id column" in result.output


def test_refine_needs_one_source_and_keeps_out_apart(inputs):
    root, reports = inputs
    base = ["refine", "--reports", str(reports), str(root / "data")]
    result = runner.invoke(app, [*base, str(root / "refined")])
    assert result.exit_code == 2 and _error_lines(result) == ["error: give either --checkpoint CKPT or --pred PRED"]
    result = runner.invoke(app, [*base, str(root / "data" / "refined"), "--pred", str(root / "pred")])
    assert result.exit_code == 2 and "lies inside the input DATASET" in result.output
    assert len(_error_lines(result)) == 1 and not (root / "data" / "refined").exists()


def test_refine_and_review_run(inputs):
    root, reports = inputs
    result = runner.invoke(app, ["refine", "--reports", str(reports), "--pred", str(root / "pred"),
                                 str(root / "data"), str(root / "refined"), "--intensity-where-blind"])
    assert result.exit_code == 0, result.output
    assert (root / "refined" / "accepted" / "c" / "segmentations" / "pancreatic_lesion.nii.gz").is_file()
    assert "from_intensity" in result.output and (root / "refined" / "refine_channels.csv").is_file()
    result = runner.invoke(app, ["review", "--pred", str(root / "pred"), "--reports", str(reports), "--out",
                                 str(root / "review"), "--images", str(root / "data")])
    assert result.exit_code == 0, result.output
    assert (root / "review" / "review.html").is_file() and np.isclose(
        float((root / "review" / "review_queue.csv").read_text().splitlines()[1].split(",")[2]), 1.0, atol=0.05)
