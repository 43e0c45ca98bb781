"""Lesion-level evaluation: component matching against true masks, and agreement with report facts.

Matching rule: lesions are 26-connected components (cc3d). A true lesion is *detected* when at least
one predicted component overlaps it by >= 1 voxel (IoU > 0); a predicted component is a *true positive*
when it overlaps at least one true lesion. Recall = detected true lesions / true lesions; precision =
matched predicted components / predicted components (summed over cases before dividing).

Report agreement (per CT and organ, cases with a report): predicted count vs reported count (a
``multiple`` row makes the reported count a lower bound), largest predicted diameter vs the largest
reported diameter (mm, both known and > 0), and location: the largest predicted lesion's sub-segment
token is one of the reported tokens (cases where both are known).

Example:
    >>> match_lesions(truth_mask, pred_mask)
    {'true_lesions': 2, 'pred_lesions': 3, 'true_detected': 2, 'pred_matched': 2}
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rsuper.infer.findings import component_labels


def match_lesions(truth: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """Counts true/predicted components and those matched by overlap (see module docstring)."""
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction shapes differ: {truth.shape} vs {pred.shape}")
    t_lab, n_t = component_labels(truth)
    p_lab, n_p = component_labels(pred)
    both = (t_lab > 0) & (p_lab > 0)
    return {
        "true_lesions": n_t,
        "pred_lesions": n_p,
        "true_detected": int(len(np.unique(t_lab[both]))),
        "pred_matched": int(len(np.unique(p_lab[both]))),
    }


def lesion_detection_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-organ lesion recall/precision from per-case ``match_lesions`` columns."""
    out = []
    for organ, g in rows.groupby("organ", sort=True):
        true_n, pred_n = int(g["true_lesions"].sum()), int(g["pred_lesions"].sum())
        out.append({
            "organ": organ, "cases": len(g), "true_lesions": true_n, "pred_lesions": pred_n,
            "lesion_recall": g["true_detected"].sum() / true_n if true_n else float("nan"),
            "lesion_precision": g["pred_matched"].sum() / pred_n if pred_n else float("nan"),
        })
    return pd.DataFrame(out)


def report_agreement(pred_count: int, pred_largest_mm: float, pred_location: list[str],
                     report_count: int, report_multiple: bool, report_largest_mm: float | None,
                     report_locations: list[str] | None) -> dict[str, float | bool | None]:
    """Agreement of one CT/organ's predicted facts with its report (None = not assessable)."""
    if report_multiple:
        count_agrees = pred_count >= report_count
    else:
        count_agrees = pred_count == report_count
    diameter_err = None
    if report_largest_mm and pred_largest_mm > 0:
        diameter_err = float(pred_largest_mm - report_largest_mm)
    location_agrees = None
    if report_locations and pred_location:
        location_agrees = bool(set(pred_location) & set(report_locations))
    return {"count_agrees": count_agrees, "count_error": pred_count - report_count,
            "largest_diameter_error_mm": diameter_err, "location_agrees": location_agrees}


def report_agreement_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-organ rates: count agreement, mean |count error|, largest-diameter MAE (mm) and Pearson r,
    location agreement, over CTs whose report has >= 1 lesion in the organ (count: all CTs)."""
    out = []
    for organ, g in rows.groupby("organ", sort=True):
        pos = g[g["report_count"] > 0]
        d = pos.dropna(subset=["largest_diameter_error_mm"])
        loc = pos.dropna(subset=["location_agrees"])
        r = float("nan")
        if len(d) >= 3 and d["pred_largest_mm"].std() > 0 and d["report_largest_mm"].std() > 0:
            r = float(np.corrcoef(d["pred_largest_mm"], d["report_largest_mm"])[0, 1])
        out.append({
            "organ": organ, "cases": len(g),
            "count_agreement": float(g["count_agrees"].astype(bool).mean()) if len(g) else float("nan"),
            "count_mae": float(g["count_error"].abs().mean()) if len(g) else float("nan"),
            "diameter_cases": len(d),
            "largest_diameter_mae_mm": float(d["largest_diameter_error_mm"].abs().mean()) if len(d) else float("nan"),
            "largest_diameter_pearson_r": r,
            "location_cases": len(loc),
            "location_agreement": float(loc["location_agrees"].astype(bool).mean()) if len(loc) else float("nan"),
        })
    return pd.DataFrame(out)
