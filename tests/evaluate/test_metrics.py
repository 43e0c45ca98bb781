"""Metric functions against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from rsuper.evaluate.detection import auroc, binary_metrics, bootstrap_ci, choose_operating_point, \
    predict_positive, roc_curve, threshold_sweep
from rsuper.evaluate.collect import opened_volume_mm3, opening_structure
from rsuper.evaluate.lesions import match_lesions, report_agreement
from rsuper.evaluate.overlap import dice, surface_dice
from rsuper.infer.findings import lesion_components, organ_summary


def _cubes(shift=(1, 0, 0)):
    truth = np.zeros((12, 12, 12), bool)
    truth[2:6, 2:6, 2:6] = True
    return truth, np.roll(truth, shift, axis=(0, 1, 2))


def test_dice_hand_values_and_empty_convention():
    truth, pred = _cubes()
    assert dice(truth, pred) == pytest.approx(2 * 48 / 128)  # 0.75
    empty = np.zeros_like(truth)
    assert dice(empty, empty) == 1.0 and dice(truth, empty) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        dice(truth, truth[:-1])


def test_nsd_hand_values():
    truth, pred = _cubes()
    # 56 surface voxels each; 36 of each lie exactly on the other's surface (counted by hand)
    assert surface_dice(truth, pred, (1, 1, 1), tolerance_mm=0.5) == pytest.approx(72 / 112)
    assert surface_dice(truth, pred, (1, 1, 1), tolerance_mm=1.0) == 1.0
    assert surface_dice(truth, truth, (1, 1, 1), tolerance_mm=0.0) == 1.0
    empty = np.zeros_like(truth)
    assert surface_dice(empty, empty, (1, 1, 1)) == 1.0 and surface_dice(truth, empty, (1, 1, 1)) == 0.0
    # a one-voxel shift along an axis of 3 mm spacing is 3 mm: the 16 voxels of the uncovered face are
    # > 2 mm away; on the 3 mm-shifted face the 4 face-centre voxels are 1 mm (in plane) from the other
    # ring, so 36 + 4 per side are within 2 mm; everything is within 3 mm
    zt, zp = _cubes(shift=(0, 0, 1))
    assert surface_dice(zt, zp, (1, 1, 3), tolerance_mm=2.0) == pytest.approx(80 / 112)
    assert surface_dice(zt, zp, (1, 1, 3), tolerance_mm=3.0) == 1.0


def test_binary_metrics_hand_table():
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    pred = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    m = binary_metrics(truth, pred)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 2, 1, 3)
    assert m["sensitivity"] == 0.5 and m["specificity"] == 0.75
    assert m["precision"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(4 / 7)


def test_auroc_hand_values_and_roc_curve():
    assert auroc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]) == 0.75
    assert auroc([1, 1, 0, 0], [0.5, 0.4, 0.5, 0.1]) == 0.625  # a tie counts 1/2
    assert np.isnan(auroc([1, 1], [0.2, 0.3]))
    curve = roc_curve(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1]))
    assert curve[["fpr", "tpr"]].values.tolist() == [[0, 0], [0, 0.5], [0.5, 0.5], [0.5, 1], [1, 1]]
    # trapezoid area under the step curve equals the Mann-Whitney value
    assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(0.75)


def test_volume_threshold_sweep_and_operating_point():
    truth = np.array([1, 1, 1, 0, 0, 0])
    volume = np.array([500.0, 80.0, 0.0, 60.0, 0.0, 0.0])
    assert predict_positive(volume, 0).tolist() == [True, True, False, True, False, False]
    sweep = threshold_sweep(truth, volume)
    assert sweep["threshold"].tolist() == [0.0, 60.0, 80.0, 500.0]
    assert choose_operating_point(sweep) == 80.0  # F1 0.8, specificity 1
    assert sweep.set_index("threshold").loc[80.0, "f1"] == pytest.approx(0.8)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    truth = rng.random(60) < 0.5
    score = truth + rng.normal(0, 0.8, 60)
    pred = score > 0.5
    a = bootstrap_ci(truth, pred, score, n=200, seed=3)
    assert a == bootstrap_ci(truth, pred, score, n=200, seed=3)
    sens = binary_metrics(truth, pred)["sensitivity"]
    assert a["sensitivity"][0] <= sens <= a["sensitivity"][1]
    assert a["auroc"][0] <= auroc(truth, score) <= a["auroc"][1]


def test_lesion_matching_counts():
    truth = np.zeros((20, 20, 20), bool)
    truth[1:4, 1:4, 1:4] = truth[10:14, 10:14, 10:14] = True
    pred = np.zeros_like(truth)
    pred[2:5, 2:5, 2:5] = pred[16:18, 16:18, 16:18] = pred[6:7, 6:7, 6:7] = True
    assert match_lesions(truth, pred) == {"true_lesions": 2, "pred_lesions": 3, "true_detected": 1,
                                          "pred_matched": 1}


def test_report_agreement_rules():
    a = report_agreement(2, 21.0, ["head"], 2, False, 20.0, ["head", "body"])
    assert a == {"count_agrees": True, "count_error": 0, "largest_diameter_error_mm": 1.0, "location_agrees": True}
    b = report_agreement(3, 0.0, [], 1, True, None, None)  # 'multiple' -> count is a lower bound
    assert b["count_agrees"] is True and b["largest_diameter_error_mm"] is None and b["location_agrees"] is None


def test_findings_box_diameters_volume_and_location():
    mask = np.zeros((20, 12, 8), np.uint8)
    mask[2:12, 3:9, 2:6] = 1  # 10 x 6 x 4 voxels at (1, 1, 2) mm -> 10 x 6 x 8 mm
    head = np.zeros(mask.shape, bool)
    head[:9] = True
    prob = mask * 0.7
    comps = lesion_components(mask, (1.0, 1.0, 2.0), probability=prob, subsegments={"pancreas_head": head},
                              organ="pancreas", affine=np.diag([1.0, 1.0, 2.0, 1.0]))
    assert len(comps) == 1
    c = comps[0]
    assert c["volume_mm3"] == 480.0 and c["diameters_mm"] == [10.0, 8.0, 6.0]
    assert c["max_probability"] == pytest.approx(0.7) and c["location"] == ["head"]
    assert c["centroid_mm"] == [6.5, 5.5, 7.0]


def test_principal_diameters_of_a_digital_ball():
    grid = np.indices((15, 15, 15)) - 7
    ball = (grid ** 2).sum(0) <= 4.5 ** 2  # ball of diameter 9 voxels
    assert ball.sum() == 389  # docs/method.md §10
    specks = np.zeros((40, 15, 15), bool)
    specks[:15] = ball
    specks[20:40:2, 0, 0] = True  # ten one-voxel components
    comps = lesion_components(specks, (1.0, 1.0, 1.0))
    assert len(comps) == 11 and comps[0]["voxels"] == 389
    assert comps[0]["diameters_mm"] == pytest.approx([9, 9, 9], abs=0.01)
    assert all(c["diameters_mm"] == [1.0, 1.0, 1.0] and c["volume_mm3"] == 1.0 for c in comps[1:])
    summary = organ_summary("liver", "liver_lesion", comps, max_listed=3)
    assert summary["count"] == 11 and summary["total_volume_mm3"] == 399.0 and len(summary["components"]) == 3


@pytest.mark.parametrize(
    "spacing, voxels", [((1.0, 1.0, 1.0), 7), ((0.8, 0.8, 3.0), 5), ((4.0, 4.0, 4.0), 1), ((0.5, 0.5, 0.5), 33)]
)
def test_opening_ball_is_one_mm_whatever_the_spacing(spacing, voxels):
    assert int(opening_structure(spacing).sum()) == voxels


def test_opening_keeps_small_tumors_on_coarse_grids():
    blob = np.zeros((12, 12, 12), bool)
    blob[4:6, 4:6, 4:6] = True  # 8 mm at 4 mm voxels: a real tumor, only 2 voxels thick
    assert opened_volume_mm3(blob, (4.0, 4.0, 4.0)) == 8 * 64.0
    assert opened_volume_mm3(blob, (1.0, 1.0, 1.0)) == 0.0  # 2 mm at 1 mm voxels: a speck
