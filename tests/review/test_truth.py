"""Refined tumors against true masks: ball centres mapped through world mm, confident vs the rest."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rsuper.io import Volume, save_nifti
from rsuper.review.truth import refined_tumor_summary, refined_tumor_truth

PRED_AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])  # prediction grid: 2 mm, origin 0
TRUTH_AFFINE = np.array([[-1.0, 0, 0, 39.0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])  # 1 mm, x flipped


def _write(tmp_path):
    refine, pred, truth = tmp_path / "refine", tmp_path / "pred", tmp_path / "truth"
    refine.mkdir()
    mask = np.zeros((40, 40, 40), bool)
    mask[5:12, 20:28, 20:28] = True  # world x 27..34 mm, y 20..27 mm, z 20..27 mm
    for case in ("a", "b"):
        save_nifti(Volume(mask.astype(np.uint8), TRUTH_AFFINE), truth / case / "segmentations" / "kidney_lesion.nii.gz")
        save_nifti(Volume(np.zeros((20, 20, 20), np.float32), PRED_AFFINE),
                   pred / case / "probabilities" / "kidney_lesion.nii.gz")
    pd.DataFrame([  # prediction voxel (15, 12, 12) = world (30, 24, 24) mm: on the tumor; (2, 2, 2) = 4 mm: not
        {"case_id": "a", "lesion_class": "kidney_lesion", "agreement": 0.8, "centre_vox": "[15, 12, 12]",
         "source": "model"},
        {"case_id": "a", "lesion_class": "kidney_lesion", "agreement": 0.1, "centre_vox": "[2, 2, 2]", "source": "model"},
        {"case_id": "b", "lesion_class": "kidney_lesion", "agreement": 0.3, "centre_vox": "[15, 12, 12]",
         "source": "model"},
        {"case_id": "b", "lesion_class": "kidney_lesion", "agreement": 0.5, "centre_vox": "[2, 2, 2]", "source": "model"},
        {"case_id": "c", "lesion_class": "kidney_lesion", "agreement": 0.9, "centre_vox": "[1, 1, 1]", "source": "model"},
    ]).to_csv(refine / "refine_tumors.csv", index=False)
    return refine, pred, truth


def test_centres_are_compared_in_world_mm_and_cases_without_truth_are_left_out(tmp_path):
    table = refined_tumor_truth(*_write(tmp_path))
    assert list(table["case_id"]) == ["a", "a", "b", "b"]
    assert list(table["on_true_tumor"]) == [True, False, True, False]


def test_confident_tumors_are_compared_with_the_rest(tmp_path):
    summary = refined_tumor_summary(refined_tumor_truth(*_write(tmp_path))).iloc[0]
    assert (summary["tumors"], summary["confident"]) == (4, 2)  # agreements 0.8 and 0.5
    assert summary["on_tumor_confident"] == 0.5 and summary["on_tumor_rest"] == 0.5
    assert summary["auroc_agreement"] == 0.75  # on-tumor 0.8, 0.3 vs off-tumor 0.1, 0.5: 3 of 4 pairs ordered


def test_refined_masks_are_scored_per_organ_with_organ_level_acceptance(tmp_path):
    """A partly accepted CT counts as accepted for its accepted organs only (refine.csv's accepted_organs)."""
    from rsuper.review.truth import refined_summary, refined_truth

    refine, pred, truth = tmp_path / "refine", tmp_path / "pred", tmp_path / "truth"
    tumor = np.zeros((8, 8, 8), np.uint8)
    tumor[2:5, 2:5, 2:5] = 1
    grid = np.eye(4)
    for case, folder in (("full", "accepted"), ("part", "needs_review")):
        for lesion in ("kidney_lesion", "pancreatic_lesion"):
            for root in (truth / case, refine / folder / case, pred / case):
                save_nifti(Volume(tumor, grid), root / "segmentations" / f"{lesion}.nii.gz")
    refine.mkdir(exist_ok=True)
    pd.DataFrame([{"case_id": "full", "status": "accepted", "confidence": 0.9, "accepted_organs": "kidney / pancreas"},
                  {"case_id": "part", "status": "partly accepted", "confidence": 0.2, "accepted_organs": "kidney"}]
                 ).to_csv(refine / "refine.csv", index=False)
    table = refined_truth(refine, pred, truth)
    accepted = table.set_index(["case_id", "lesion_class"])["accepted"].to_dict()
    assert accepted == {("full", "kidney_lesion"): True, ("full", "pancreatic_lesion"): True,
                        ("part", "kidney_lesion"): True, ("part", "pancreatic_lesion"): False}
    summary = refined_summary(table).set_index("lesion_class")
    assert summary.loc["kidney_lesion", "accepted"] == 2 and summary.loc["pancreatic_lesion", "accepted"] == 1
