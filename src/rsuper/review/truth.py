"""Review and refine outputs against true masks (phantoms, or any CTs with lesion masks): how good are they?

- :func:`queue_truth`: per CT, whether the model is wrong at CT level (for some organ, its call differs from
  "the true lesion mask is non-empty") next to the CT's agreement; the AUROC of (1 - agreement) for "model
  wrong" says whether the queue puts the wrong CTs first.
- :func:`refined_truth`: per refined CT and organ, the lesion DSC of the refined mask and of the raw
  thresholded prediction against the true mask (in the true mask's grid; ``rsuper.evaluate.collect.on_grid``).
- :func:`refined_tumor_truth`: per refined tumor, whether its ball centre lies on a true tumor, next to refine's
  agreement (how much of the tumor the model calls tumor); :func:`refined_tumor_summary` compares the confident
  tumors (agreement >= 0.5) with the rest.

Example:
    >>> per_ct = queue_truth(organs, "data/test"); queue_auroc(per_ct)
    >>> table = refined_truth("refined", "refined/predictions", "data/truth"); refined_summary(table)
    >>> tumors = refined_tumor_truth("refined", "refined/predictions", "data/truth"); refined_tumor_summary(tumors)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from rsuper.evaluate.collect import load_truth_mask, on_grid
from rsuper.evaluate.detection import auroc
from rsuper.evaluate.overlap import dice
from rsuper.io import load_nifti
from rsuper.labels import ORGAN_OF_LESION_CLASS
from rsuper.refine.status import ACCEPTED, STATUS_FOLDERS


def queue_truth(organs: pd.DataFrame, masks_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per CT: ``agreement`` (minimum over its organs), ``model_wrong`` and the wrong organs."""
    rows = []
    for case_id, g in organs.groupby("case_id", sort=True):
        wrong = []
        for row in g.to_dict("records"):
            truth = load_truth_mask(Path(masks_dir), case_id, row["lesion_class"])
            if truth is not None and bool(truth.array.any()) != bool(row["model_positive"]):
                wrong.append(row["organ"])
        rows.append({"case_id": case_id, "agreement": float(g["agreement"].min()), "model_wrong": bool(wrong),
                     "wrong_organs": " / ".join(wrong)})
    return pd.DataFrame(rows)


def queue_auroc(per_ct: pd.DataFrame) -> float:
    """AUROC of (1 - agreement) for ``model_wrong`` (NaN when only one class is present)."""
    truth = per_ct["model_wrong"].to_numpy(bool)
    if truth.all() or not truth.any():
        return float("nan")
    return float(auroc(truth, 1.0 - per_ct["agreement"].to_numpy(float)))


def refined_truth(refine_out: str | os.PathLike[str], pred_dir: str | os.PathLike[str],
                  masks_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Per refined CT (accepted, partly accepted or needs review) and lesion class with a true mask: status,
    ``accepted`` (the organ's masks were accepted), true tumor volume (mm³), ``dsc_refined`` and ``dsc_raw``
    (the prediction's thresholded mask)."""
    refine_out, pred_dir = Path(refine_out), Path(pred_dir)
    table = pd.read_csv(refine_out / "refine.csv")
    rows = []
    for record in table.to_dict("records"):
        organs = record.get("accepted_organs")  # NaN when none (or a refine.csv from before organ-level acceptance)
        accepted_organs = set(organs.split(" / ")) if isinstance(organs, str) else set()
        folder = STATUS_FOLDERS.get(record["status"])
        if folder is None:
            continue
        seg = refine_out / folder / record["case_id"] / "segmentations"
        for path in sorted(seg.glob("*.nii.gz")):
            lesion_class = path.name.removesuffix(".nii.gz")
            truth = load_truth_mask(Path(masks_dir), record["case_id"], lesion_class)
            raw_path = pred_dir / record["case_id"] / "segmentations" / path.name
            if truth is None or not raw_path.is_file():
                continue
            refined = on_grid(load_nifti(path), truth).array > 0
            raw = on_grid(load_nifti(raw_path), truth).array > 0
            accepted = record["status"] == ACCEPTED or ORGAN_OF_LESION_CLASS.get(lesion_class) in accepted_organs
            rows.append({"case_id": record["case_id"], "lesion_class": lesion_class, "status": record["status"],
                         "accepted": accepted, "confidence": record["confidence"],
                         "true_volume_mm3": float(truth.array.sum()) * float(np.prod(truth.spacing_mm)),
                         "dsc_refined": dice(truth.array, refined), "dsc_raw": dice(truth.array, raw)})
    return pd.DataFrame(rows)


def refined_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per lesion class, over the CTs with a true tumor: n, mean DSC raw / refined, refined of the accepted
    organs / the rest."""
    rows = []
    if not len(table):
        return pd.DataFrame()
    for lesion_class, g in table[table["true_volume_mm3"] > 0].groupby("lesion_class", sort=True):
        accepted = g[g["accepted"]]
        rest = g[~g["accepted"]]
        rows.append({"lesion_class": lesion_class, "tumor_cts": len(g), "dsc_raw": g["dsc_raw"].mean(),
                     "dsc_refined": g["dsc_refined"].mean(), "accepted": len(accepted),
                     "dsc_refined_accepted": accepted["dsc_refined"].mean() if len(accepted) else float("nan"),
                     "dsc_refined_rest": rest["dsc_refined"].mean() if len(rest) else float("nan")})
    return pd.DataFrame(rows)


CONFIDENT_AGREEMENT = 0.5  # refined tumors the model calls tumor over at least half of their voxels


def refined_tumor_truth(refine_out: str | os.PathLike[str], pred_dir: str | os.PathLike[str],
                        masks_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Per refined tumor of ``refine_tumors.csv``: lesion class, source, agreement and ``on_true_tumor`` (its ball
    centre, a voxel index of the CT's grid, which ``rsuper predict`` gives ``pred_dir/<case>/probabilities/
    <lesion>.nii.gz``, mapped through world mm into the true mask's grid, lies on a true tumor); tumors without a
    true mask or probability are left out."""
    table = pd.read_csv(Path(refine_out) / "refine_tumors.csv")
    rows, grids = [], {}
    for record in table.to_dict("records"):
        case_id, lesion_class = record["case_id"], record["lesion_class"]
        key = (case_id, lesion_class)
        if key not in grids:
            prob_path = Path(pred_dir) / case_id / "probabilities" / f"{lesion_class}.nii.gz"
            truth = load_truth_mask(Path(masks_dir), case_id, lesion_class)
            grids[key] = None if truth is None or not prob_path.is_file() else (load_nifti(prob_path).affine, truth)
        if grids[key] is None:
            continue
        affine, truth = grids[key]
        world = affine @ np.append(np.asarray(json.loads(record["centre_vox"]), dtype=float), 1.0)
        index = np.rint(np.linalg.solve(truth.affine, world)[:3]).astype(int)
        inside = bool(np.all(index >= 0) and np.all(index < truth.array.shape))
        rows.append({"case_id": case_id, "lesion_class": lesion_class, "source": record.get("source", "model"),
                     "agreement": float(record["agreement"]),
                     "on_true_tumor": inside and bool(truth.array[tuple(index)])})
    return pd.DataFrame(rows)


def refined_tumor_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per lesion class: refined tumors, the share on a true tumor among the confident ones (agreement >= 0.5)
    and the rest, and the AUROC of agreement for "on a true tumor" (NaN when a side is empty)."""
    rows = []
    for lesion_class, g in table.groupby("lesion_class", sort=True):
        on = g["on_true_tumor"].to_numpy(bool)
        confident = g["agreement"].to_numpy(float) >= CONFIDENT_AGREEMENT
        rows.append({"lesion_class": lesion_class, "tumors": len(g), "confident": int(confident.sum()),
                     "on_tumor_confident": on[confident].mean() if confident.any() else float("nan"),
                     "on_tumor_rest": on[~confident].mean() if (~confident).any() else float("nan"),
                     "auroc_agreement": float(auroc(on, g["agreement"].to_numpy(float)))
                     if 0 < on.sum() < len(on) else float("nan")})
    return pd.DataFrame(rows)
