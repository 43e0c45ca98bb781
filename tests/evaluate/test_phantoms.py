"""evaluate on generated phantoms: the true masks as a "perfect model" score 1 against the gold report
tables; an empty model finds nothing (sensitivity 0, specificity 1, DSC 1 only on tumor-free CTs)."""

from __future__ import annotations

import numpy as np
import pytest

from rsuper.evaluate.result import EvaluationSettings
from rsuper.evaluate.run import evaluate_predictions
from rsuper.io import load_nifti, save_nifti
from rsuper.synthetic.phantoms import generate_dataset


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("ph")
    generate_dataset(root, n_mask=1, n_report=1, n_test=4, spacing_mm=5.0, seed=3)
    empty = root / "empty"
    for seg in (root / "truth").glob("*/segmentations"):
        for path in seg.glob("*_lesion.nii.gz"):
            mask = load_nifti(path)
            save_nifti(mask.with_array(np.zeros(mask.shape, np.uint8)), empty / seg.parent.name / "segmentations" / path.name)
    return root


def test_true_masks_score_one_against_gold_reports(phantoms):
    r = evaluate_predictions(phantoms / "truth", None, reports=phantoms / "gold" / "tumors.csv",
                             masks=phantoms / "truth", settings=EvaluationSettings(n_bootstrap=20))
    assert set(r.detection["organ"]) == {"liver", "pancreas", "kidney"}
    assert r.detection["positives"].sum() > 0
    for key in ("sensitivity", "specificity", "f1"):
        assert (r.detection[key].dropna() == 1.0).all(), r.detection[["organ", key]]
    assert (r.overlap[["dsc_mean", "nsd_mean"]] == 1.0).all().all()
    assert (r.agreement["count_agreement"] == 1.0).all()
    located = r.agreement.dropna(subset=["location_agreement"])
    assert len(located) and (located["location_agreement"] == 1.0).all()


def test_empty_model_against_per_ct_table(phantoms):
    r = evaluate_predictions(phantoms / "empty", None, reports=phantoms / "gold" / "cases.csv",
                             masks=phantoms / "truth", settings=EvaluationSettings(n_bootstrap=20))
    det = r.detection.set_index("organ")
    assert (det.loc[det["positives"] > 0, "sensitivity"] == 0).all()
    assert (det["specificity"] == 1).all()
    per_case = r.per_case
    healthy = per_case["mask_volume_mm3"] == 0
    assert (per_case.loc[healthy, "dsc"] == 1).all() and (per_case.loc[~healthy, "dsc"] == 0).all()
