"""Voxel metrics are scored in the truth's grid (issue #26 item 7): a coarser prediction cannot score 1."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.evaluate import overlap
from rsuper.evaluate.collect import GridMismatchWarning
from rsuper.evaluate.compare import compare_predictions
from rsuper.evaluate.result import EvaluationSettings
from rsuper.evaluate.run import evaluate_predictions
from rsuper.io import Volume, resample_to_grid

FINE = np.diag([1.0, 1.0, 1.0, 1.0])
COARSE = np.array([[3.0, 0, 0, 1.0], [0, 3.0, 0, 1.0], [0, 0, 3.0, 1.0], [0, 0, 0, 1]])  # voxel centres on fine ones
FINE_SHAPE, COARSE_SHAPE = (30, 30, 30), (10, 10, 10)


def _save(path, array, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), str(path))


@pytest.fixture
def data(tmp_path):
    """Truth: a ball of radius 4 mm at 1 mm. Prediction: the truth sampled (nearest) on a 3 mm grid."""
    grid = np.indices(FINE_SHAPE).transpose(1, 2, 3, 0)
    truth = np.linalg.norm(grid - 15.0, axis=-1) <= 4.0
    coarse = resample_to_grid(Volume(truth.astype(np.uint8), FINE), COARSE_SHAPE, COARSE, order=0).array
    for case in ("c1", "c2"):
        _save(tmp_path / "truth" / case / "segmentations" / "pancreatic_lesion.nii.gz", truth, FINE)
        _save(tmp_path / "truth" / case / "ct.nii.gz", np.where(truth, 80, 40), FINE)
    _save(tmp_path / "coarse" / "c1" / "segmentations" / "pancreatic_lesion.nii.gz", coarse, COARSE)
    _save(tmp_path / "coarse" / "c2" / "segmentations" / "pancreatic_lesion.nii.gz", truth, FINE)  # same grid
    _save(tmp_path / "fine" / "c1" / "segmentations" / "pancreatic_lesion.nii.gz", truth, FINE)
    _save(tmp_path / "fine" / "c2" / "segmentations" / "pancreatic_lesion.nii.gz", truth, FINE)
    upsampled = resample_to_grid(Volume(coarse, COARSE), FINE_SHAPE, FINE, order=0).array > 0
    return tmp_path, truth, upsampled


def test_coarse_prediction_is_scored_in_the_truth_grid(data):
    root, truth, upsampled = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_predictions(root / "coarse", None, masks=root / "truth",
                                      settings=EvaluationSettings(n_bootstrap=10))
    rows = result.per_case.set_index("case_id")
    expected = overlap.dice(truth, upsampled)
    assert expected < 0.9
    assert rows.loc["c1", "dsc"] == pytest.approx(expected)
    assert rows.loc["c1", "nsd"] == pytest.approx(overlap.surface_dice(truth, upsampled, (1.0, 1.0, 1.0), 2.0))
    assert rows.loc["c1", "mask_volume_mm3"] == pytest.approx(float(truth.sum()))
    assert rows.loc["c2", "dsc"] == 1.0
    grid_warnings = [str(w.message) for w in caught if issubclass(w.category, GridMismatchWarning)]
    assert len(grid_warnings) == 1 and "c1" in grid_warnings[0] and "\n" not in grid_warnings[0]


def test_cli_warns_once_per_case_with_another_grid(data):
    root, truth, upsampled = data
    res = CliRunner().invoke(app, ["evaluate", "--pred", str(root / "coarse"), "--masks", str(root / "truth"),
                                   "--out", str(root / "eval"), "--bootstrap", "10"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if "grid" in line and "warning" in line]
    assert len(lines) == 1 and "c1" in lines[0], res.output


def test_compare_overlays_with_a_coarser_model(data):
    root, truth, upsampled = data
    with pytest.warns(GridMismatchWarning, match="case c1 in .*coarse"):
        table = compare_predictions((root / "fine", root / "coarse"), root / "cmp", masks=root / "truth",
                                    names=("fine", "coarse"), images=root / "truth",
                                    settings=EvaluationSettings(n_bootstrap=10))
    row = table.set_index(["organ", "metric"]).loc[("pancreas", "dsc_mean")]
    assert row["fine"] == 1.0 and row["coarse"] == pytest.approx((overlap.dice(truth, upsampled) + 1) / 2)
    assert sorted((root / "cmp" / "overlays").glob("*.png"))
