"""rsuper refine --intensity-where-blind: a lesion channel the model is blind on is grown from the CT's darkness."""

from __future__ import annotations

import numpy as np
import pandas as pd
from review_helpers import (SHAPE, TAIL_TUMORS, ball, organ_masks, tail_probability, write_dataset_case,
                            write_prediction_case, write_reports, write_volume)

from rsuper.io import load_nifti
from rsuper.refine.grow import darkness_score
from rsuper.refine.run import RefineOptions, refine_cases
from rsuper.refine.status import ChannelSight, channel_sight
from rsuper.reports.schema import CaseFindings, Lesion


def hypo_tail_report(case_id: str, attenuation: str = "hypo") -> CaseFindings:
    return CaseFindings(case_id=case_id, lesions=[
        Lesion(organ="pancreas", location=["tail"], size_mm=[size], attenuation=attenuation)
        for size in (20, 10)])


def dark_tail_ct() -> np.ndarray:
    """Parenchyma ~40 HU, the two tail tumors of TAIL_TUMORS at ~-10 HU, fat (-100 HU) outside the organs."""
    rng = np.random.default_rng(1)
    ct = np.where(organ_masks()["pancreas"], 40.0, -100.0) + rng.normal(0, 5, SHAPE)
    for centre, diameter in TAIL_TUMORS:
        ct[ball(centre, diameter)] -= 50
    return ct


def write_cases(root, reports: dict[str, CaseFindings], prob: np.ndarray):
    data, pred = root / "data", root / "pred"
    for case_id in reports:
        write_dataset_case(data, case_id)
        write_volume(dark_tail_ct(), data / case_id / "ct.nii.gz", dtype=np.int16)
        write_prediction_case(pred, case_id, {"pancreatic_lesion": prob, "kidney_lesion": np.zeros(SHAPE)})
    return data, pred, write_reports(root / "tumors.csv", list(reports.values()))


def blind_model() -> np.ndarray:
    return np.where(organ_masks()["pancreas"], 0.05, 0.0).astype(np.float32)


def test_channel_sight_needs_a_blind_share_over_enough_groups():
    sight = {s.lesion_class: s for s in channel_sight(
        [("pancreatic_lesion", 0.1)] * 4 + [("pancreatic_lesion", 0.9)] + [("kidney_lesion", 0.1)] * 2)}
    assert sight["pancreatic_lesion"] == ChannelSight("pancreatic_lesion", 5, 4) and sight["pancreatic_lesion"].blind
    assert not sight["kidney_lesion"].blind  # 2/2 blind, but fewer than 3 groups
    assert not ChannelSight("x", 5, 3).blind  # 60 % < 80 %


def test_darkness_score_is_positive_inside_and_darkest_where_the_ct_is():
    ct = dark_tail_ct()
    tail = organ_masks()["pancreas_tail"]
    score = darkness_score(ct, tail)
    assert (score[~tail] == 0).all() and (score[tail] > 0).all()
    assert np.unravel_index(np.argmax(score), SHAPE) in set(zip(*np.nonzero(ball(*TAIL_TUMORS[0]) | ball(*TAIL_TUMORS[1]))))


def test_a_blind_channel_grows_hypo_tumors_from_darkness_and_keeps_only_vouched_masks(tmp_path):
    reports = {f"hypo{i}": hypo_tail_report(f"hypo{i}") for i in range(3)}
    reports["unstated"] = hypo_tail_report("unstated", attenuation="u")
    data, pred, tumors = write_cases(tmp_path, reports, blind_model())
    out = tmp_path / "refined"
    table = refine_cases(pred, tumors, out, [data], RefineOptions(intensity_where_blind=True)).set_index("case_id")
    channels = pd.read_csv(out / "refine_channels.csv").set_index("lesion_class")
    assert channels.loc["pancreatic_lesion", "blind_groups"] == 4 and channels.loc["pancreatic_lesion", "blind"]
    assert table.loc["hypo0", "status"] == "from intensity"
    assert "pancreas: the model is blind on it (max p 0.05" in table.loc["hypo0", "reasons"]
    assert table.loc["unstated", "status"] == "partly accepted"  # not hypoattenuating: the model's growth (kidney ok)
    folder = out / "from_intensity" / "hypo0" / "segmentations"
    lesion = load_nifti(folder / "pancreatic_lesion.nii.gz").array > 0
    truth = ball(*TAIL_TUMORS[0]) | ball(*TAIL_TUMORS[1])
    assert 2 * (lesion & truth).sum() / (lesion.sum() + truth.sum()) > 0.8
    assert load_nifti(folder / "kidney_lesion.nii.gz").array.sum() == 0  # the report calls the kidneys tumor-free
    assert not (out / "needs_review" / "hypo0").exists()
    rows = pd.read_csv(out / "refine_tumors.csv")
    assert set(rows[rows["case_id"] == "hypo0"]["source"]) == {"intensity"}
    assert set(rows[rows["case_id"] == "unstated"]["source"]) == {"model"}


def test_without_the_option_or_where_the_model_sees_nothing_is_grown_from_intensity(tmp_path):
    reports = {f"hypo{i}": hypo_tail_report(f"hypo{i}") for i in range(3)}
    data, pred, tumors = write_cases(tmp_path, reports, blind_model())
    off = refine_cases(pred, tumors, tmp_path / "off", [data])
    assert set(off["status"]) == {"partly accepted"} and not (tmp_path / "off" / "from_intensity").exists()
    seeing = tmp_path / "seeing"
    data, pred, tumors = write_cases(seeing, reports, tail_probability())
    on = refine_cases(pred, tumors, seeing / "out", [data], RefineOptions(intensity_where_blind=True))
    assert set(on["status"]) == {"accepted"}
    assert not pd.read_csv(seeing / "out" / "refine_channels.csv")["blind"].any()


def test_a_blind_channel_without_the_ct_is_grown_from_the_model_with_the_reason(tmp_path):
    reports = {f"hypo{i}": hypo_tail_report(f"hypo{i}") for i in range(3)}
    data, pred, tumors = write_cases(tmp_path, reports, blind_model())
    (data / "hypo0" / "ct.nii.gz").unlink()
    table = refine_cases(pred, tumors, tmp_path / "out", [data], RefineOptions(intensity_where_blind=True))
    table = table.set_index("case_id")
    assert table.loc["hypo1", "status"] == "from intensity" and table.loc["hypo0", "status"] == "partly accepted"
    assert "pancreas: the model is blind on it, but no ct.nii.gz of this case" in table.loc["hypo0", "reasons"]
