"""The review queue: per CT and organ, prediction versus report in numbers and words, CTs ranked by agreement.

Reads a prediction folder in the AbdomenAtlas layout (``<case>/segmentations/<lesion>.nii.gz``, optional
``<case>/probabilities/`` and ``<case>/findings.json`` from ``rsuper predict``; masks of other tools work
too, facts are then recomputed from them) and a report table (``tumors.csv`` or ``cases.csv``, read by
``rsuper.evaluate.collect.load_report_truth``). The score is ``rsuper.review.agreement``'s.

Example:
    >>> organs = organ_table("preds", load_report_truth("extract/tumors.csv"))
    >>> ranked_queue(organs).head()
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsuper import labels
from rsuper.data.cases import find_mask_files
from rsuper.evaluate.collect import (ReportTruth, lesion_classes_of, predicted_organ, prediction_cases,
                                     read_findings)
from rsuper.io import load_nifti
from rsuper.review.agreement import case_agreement, organ_agreement
from rsuper.reports.words import lesions_text, place_of_voxel, place_text

QUEUE_COLUMNS = ["rank", "case_id", "agreement", "disputed_organs", "reason"]


def _subsegments(case_dir: Path, organ: str) -> dict[str, np.ndarray]:
    files = find_mask_files(case_dir / "segmentations")
    out = {}
    for name in labels.SUBSEGMENTS_OF_ORGAN.get(organ, {}).values():
        if name in files:
            out[name] = np.asarray(load_nifti(files[name]).array) > 0
    return out


def _probability_peak(case_dir: Path, lesion_class: str) -> tuple[float, tuple[int, int, int]] | None:
    """(highest probability, its voxel) from ``<case>/probabilities/<lesion>.nii.gz``; None without the file."""
    path = find_mask_files(case_dir / "probabilities").get(lesion_class)
    if path is None:
        return None
    volume = load_nifti(path)
    array = np.asarray(volume.array)
    flat = int(np.argmax(array))
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    return float(array.flat[flat]) / scale, tuple(int(i) for i in np.unravel_index(flat, array.shape))  # type: ignore


def _model_text(row: dict[str, Any]) -> str:
    p = row["max_probability"]
    where = f" in the {row['max_probability_place']}" if row.get("max_probability_place") else ""
    prob = f"max probability {p:.2f}" if p is not None and np.isfinite(p) else ""
    if not row["model_positive"]:
        if row["model_count"] == 0:
            text = "none above 0.5"
        else:
            text = f"{row['model_count']} small finding(s), {row['model_volume_mm3']:.0f} mm³ after opening, under the call"
        return f"{text}, {prob}{where}" if prob else text
    text = lesions_text(row["model_count"], place_text(row["organ"], row["model_location"]), row["model_largest_mm"])
    return f"{text} ({prob})" if prob else text


def reason_text(row: dict[str, Any]) -> str:
    """``report: 2 lesions in the pancreatic tail, 31 mm; model: none above 0.5, max probability 0.38 in the body``."""
    report = lesions_text(row["report_count"], place_text(row["organ"], row["report_locations"]),
                          row["report_largest_mm"], row["report_multiple"])
    return f"{row['organ']}: report: {report}; model: {_model_text(row)}"


def organ_table(pred_dir: str | os.PathLike[str], truth: ReportTruth, volume_threshold_mm3: float = 0.0,
                progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """One row per (CT, organ) assessable against the report: facts, agreement terms, reason and the voxel a
    picture should go through (``focus_vox``: the largest predicted lesion, else the probability peak, else
    the centre of the reported sub-segment or organ as predicted)."""
    cases = prediction_cases(pred_dir)
    rows = []
    for i, (case_id, case_dir) in enumerate(cases.items()):
        findings = read_findings(case_dir)
        for lesion_class in lesion_classes_of(case_dir):
            organ = labels.ORGAN_OF_LESION_CLASS[lesion_class]
            if not truth.covers(case_id, organ):
                continue
            pred = predicted_organ(case_dir, lesion_class, findings)
            comps = pred.summary["components"]
            facts = truth.get(case_id, organ)
            peak = _probability_peak(case_dir, lesion_class)
            max_p = peak[0] if peak else pred.max_probability
            positive = pred.volume_mm3 > 0 and pred.volume_mm3 >= volume_threshold_mm3
            subs = _subsegments(case_dir, organ)
            focus = None
            if comps:
                focus = tuple(int(round(c)) for c in comps[0]["centroid_vox"])
            elif peak and peak[0] > 0:
                focus = peak[1]
            row: dict[str, Any] = {
                "case_id": case_id, "organ": organ, "lesion_class": lesion_class,
                "report_count": facts.count, "report_multiple": facts.multiple,
                "report_largest_mm": facts.largest_mm, "report_locations": facts.locations or [],
                "model_positive": bool(positive), "model_volume_mm3": round(pred.volume_mm3, 1),
                "model_count": len(comps),
                "model_largest_mm": comps[0]["largest_diameter_mm"] if comps else 0.0,
                "model_location": comps[0].get("location", []) if comps else [],
                "max_probability": max_p,
                "max_probability_place": place_of_voxel(organ, peak[1], subs) if peak else (
                    place_text(organ, comps[0].get("location", [])) if comps else ""),
                "focus_vox": list(focus) if focus else None,
            }
            row.update(organ_agreement(facts.count, facts.multiple, facts.largest_mm, facts.locations,
                                       row["model_positive"], row["model_count"], row["model_largest_mm"],
                                       row["model_location"], max_p))
            row["reason"] = reason_text(row)
            rows.append(row)
        if progress is not None:
            progress(i + 1, len(cases))
    return pd.DataFrame(rows)


def ranked_queue(organs: pd.DataFrame) -> pd.DataFrame:
    """One row per CT, lowest agreement first (ties: case id): the CT's agreement (minimum over organs), its
    disputed organs and the reasons of those (of the worst organ when none is disputed)."""
    rows = []
    if not len(organs):
        return pd.DataFrame(columns=QUEUE_COLUMNS)
    for case_id, g in organs.groupby("case_id", sort=True):
        disputed = g[g["disputed"]].sort_values("agreement")
        shown = disputed if len(disputed) else g.sort_values("agreement").head(1)
        rows.append({"case_id": case_id, "agreement": case_agreement(g["agreement"].tolist()),
                     "disputed_organs": " / ".join(disputed["organ"]), "reason": " | ".join(shown["reason"])})
    queue = pd.DataFrame(rows).sort_values(["agreement", "case_id"], kind="stable").reset_index(drop=True)
    queue.insert(0, "rank", np.arange(1, len(queue) + 1))
    return queue[QUEUE_COLUMNS]
