"""rsuper review on hand-made predictions and reports: ranking, reasons in words, files, overlays."""

from __future__ import annotations

import numpy as np
import pandas as pd
from review_helpers import SHAPE, ball, organ_masks, tail_probability, tail_report, write_dataset_case, \
    write_prediction_case, write_reports

from rsuper.reports.schema import CaseFindings, Lesion
from rsuper.review.run import review_predictions


def _missed_probability() -> np.ndarray:
    """Nothing above 0.5; the highest probability, 0.38, in the pancreatic body."""
    prob = np.where(organ_masks()["pancreas"], 0.02, 0.0).astype(np.float32)
    prob[ball((22, 20, 10), 6.0)] = 0.38
    return prob


def test_queue_ranks_disagreements_first_with_the_reason_in_words(tmp_path):
    pred, images = tmp_path / "pred", tmp_path / "ct"
    probs = {"agree": tail_probability(), "missed": _missed_probability(),
             "unreported": tail_probability(), "healthy": np.zeros(SHAPE, np.float32)}
    for case_id, prob in probs.items():
        write_prediction_case(pred, case_id, {"pancreatic_lesion": prob})
        write_dataset_case(images, case_id, classes=())
    report_31mm = CaseFindings(case_id="missed", lesions=[
        Lesion(organ="pancreas", location=["tail"], size_mm=[31], evidence="Two tail masses, the larger 3.1 cm."),
        Lesion(organ="pancreas", location=["tail"], size_mm=[12])])
    reports = write_reports(tmp_path / "tumors.csv", [
        tail_report("agree"), report_31mm, CaseFindings(case_id="unreported", lesions=[]),
        CaseFindings(case_id="healthy", lesions=[])])
    queue, organs = review_predictions(pred, reports, tmp_path / "review", images=images)
    assert list(queue["case_id"][:2]) == ["unreported", "missed"]  # 0.5 * (1 - 0.9) = 0.05, then 0.5 * 0.38
    assert set(queue["case_id"][2:]) == {"agree", "healthy"} and (queue["agreement"][2:] >= 0.5).all()
    missed = queue.set_index("case_id").loc["missed"]
    assert missed["reason"] == ("pancreas: report: 2 lesions in the pancreatic tail, 31 mm; "
                                "model: none above 0.5, max probability 0.38 in the pancreatic body")
    assert "report: none; model: 2 lesions in the pancreatic tail" in queue.set_index("case_id").loc["unreported", "reason"]
    agree = organs.set_index("case_id").loc["agree"]
    assert agree["model_count"] == 2 and agree["count_term"] == 1.0 and agree["location_term"] == 1.0
    written = pd.read_csv(tmp_path / "review" / "review_queue.csv")
    assert list(written["rank"]) == [1, 2, 3, 4]
    page = (tmp_path / "review" / "review.html").read_text()
    assert "Two tail masses, the larger 3.1 cm." in page and page.count("data:image/png;base64") == 4  # the top 20: all 4 CTs
    assert (tmp_path / "review" / "overlays" / "missed_pancreas.png").is_file()
