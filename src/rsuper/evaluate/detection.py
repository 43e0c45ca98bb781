"""CT-level tumor detection metrics (docs/method.md §8): a CT is positive for an organ when its report (or
mask) has >= 1 lesion there; the prediction is positive when the predicted tumor volume (after a light
opening) is >= a volume threshold and > 0.

Definitions: sensitivity = TP/(TP+FN), specificity = TN/(TN+FP), precision = TP/(TP+FP),
F1 = 2TP/(2TP+FP+FN); an undefined ratio (0/0) is NaN. AUROC is the Mann-Whitney probability that a
random positive CT scores higher than a random negative one (ties count 1/2). Confidence intervals are
95 % percentile bootstrap intervals over CTs (resampling cases with replacement, seeded).

Example:
    >>> binary_metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 1]))["f1"]
    0.5
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import rankdata

DEFAULT_BOOTSTRAP = 1000


def binary_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Confusion counts and sensitivity, specificity, precision, F1, accuracy of two boolean vectors."""
    t, p = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
    tp, fp = int((t & p).sum()), int((~t & p).sum())
    fn, tn = int((t & ~p).sum()), int((~t & ~p).sum())
    return {
        "n": len(t), "positives": tp + fn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, len(t)),
    }


def auroc(truth: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg)); NaN without both classes."""
    t = np.asarray(truth, dtype=bool)
    s = np.asarray(score, dtype=float)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(truth: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """ROC points (threshold, fpr, tpr) for 'positive iff score >= threshold', from (0,0) to (1,1)."""
    t = np.asarray(truth, dtype=bool)
    s = np.asarray(score, dtype=float)
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    n_pos, n_neg = max(int(t.sum()), 1), max(int((~t).sum()), 1)
    rows = [{"threshold": float(th), "fpr": int((~t & (s >= th)).sum()) / n_neg,
             "tpr": int((t & (s >= th)).sum()) / n_pos} for th in thresholds]
    return pd.DataFrame(rows)


def predict_positive(volume_mm3: np.ndarray, threshold_mm3: float) -> np.ndarray:
    """CT-level call: predicted volume > 0 and >= ``threshold_mm3``."""
    v = np.asarray(volume_mm3, dtype=float)
    return (v > 0) & (v >= threshold_mm3)


def threshold_sweep(truth: np.ndarray, score: np.ndarray, thresholds: np.ndarray | None = None,
                    positive: Callable[[np.ndarray, float], np.ndarray] = predict_positive) -> pd.DataFrame:
    """Metrics at every threshold (default: 0 and every distinct score); one row per threshold."""
    s = np.asarray(score, dtype=float)
    if thresholds is None:
        thresholds = np.unique(np.concatenate([[0.0], s]))
    rows = []
    for th in thresholds:
        row = {"threshold": float(th)}
        row.update(binary_metrics(truth, positive(s, float(th))))
        rows.append(row)
    return pd.DataFrame(rows)


def choose_operating_point(sweep: pd.DataFrame) -> float:
    """Threshold with the largest F1; ties go to the higher specificity, then the lower threshold."""
    ranked = sweep.assign(_f1=sweep["f1"].fillna(-1), _spec=sweep["specificity"].fillna(-1))
    ranked = ranked.sort_values(["_f1", "_spec", "threshold"], ascending=[False, False, True])
    return float(ranked["threshold"].iloc[0])


def bootstrap_ci(truth: np.ndarray, pred: np.ndarray, score: np.ndarray, n: int = DEFAULT_BOOTSTRAP,
                 seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs (over cases) of sensitivity, specificity, precision, F1 and AUROC."""
    t, p, s = np.asarray(truth, bool), np.asarray(pred, bool), np.asarray(score, float)
    rng = np.random.default_rng(seed)
    keys = ("sensitivity", "specificity", "precision", "f1", "auroc")
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(n):
        idx = rng.integers(0, len(t), len(t))
        m = binary_metrics(t[idx], p[idx])
        m["auroc"] = auroc(t[idx], s[idx])
        for k in keys:
            samples[k].append(m[k])
    alpha = (1 - level) / 2
    out = {}
    for k in keys:
        values = np.array(samples[k], dtype=float)
        values = values[~np.isnan(values)]
        out[k] = ((float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha)))
                  if len(values) else (float("nan"), float("nan")))
    return out


def detection_summary(scores: pd.DataFrame, volume_threshold_mm3: float | None = None,
                      val_ids: set[str] | None = None, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                      seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-organ CT-level detection summary and the full threshold sweep.

    Args:
        scores: one row per (case_id, organ) with ``truth`` (bool), ``volume_mm3`` (predicted, after
            opening) and optional ``max_probability`` (AUROC score; predicted volume when absent).
        volume_threshold_mm3: fixed operating point. If None and ``val_ids`` is given, the threshold
            with the best F1 on the validation cases is used and metrics are reported on the other
            cases; if both are None, threshold 0 (any predicted tumor voxel after opening).
        val_ids: validation case ids (excluded from the reported metrics).
        n_bootstrap, seed: bootstrap resamples and seed for the 95 % CIs.

    Returns:
        (summary, sweep): summary has one row per organ with the operating point, the metrics, AUROC,
        ``*_ci_low``/``*_ci_high``; sweep has the metrics over every volume threshold (evaluation cases).
    """
    summary_rows, sweeps = [], []
    for organ, group in scores.groupby("organ", sort=True):
        is_val = group["case_id"].isin(val_ids or set())
        test = group[~is_val]
        if volume_threshold_mm3 is not None:
            threshold, source = float(volume_threshold_mm3), "given"
        elif val_ids:
            val = group[is_val]
            threshold = choose_operating_point(threshold_sweep(val["truth"].to_numpy(), val["volume_mm3"].to_numpy()))
            source = f"best F1 on {len(val)} validation CTs"
        else:
            threshold, source = 0.0, "default (any predicted tumor)"
        truth = test["truth"].to_numpy(bool)
        volume = test["volume_mm3"].to_numpy(float)
        score_name = "max_probability" if "max_probability" in test and test["max_probability"].notna().all() \
            else "volume_mm3"
        score = test[score_name].to_numpy(float)
        pred = predict_positive(volume, threshold)
        row = {"organ": organ, "volume_threshold_mm3": threshold, "threshold_source": source,
               "auroc_score": score_name}
        row.update(binary_metrics(truth, pred))
        row["auroc"] = auroc(truth, score)
        for key, (lo, hi) in bootstrap_ci(truth, pred, score, n=n_bootstrap, seed=seed).items():
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = lo, hi
        row["n_bootstrap"] = n_bootstrap
        summary_rows.append(row)
        sweep = threshold_sweep(truth, volume)
        sweep.insert(0, "organ", organ)
        sweeps.append(sweep)
    return pd.DataFrame(summary_rows), (pd.concat(sweeps, ignore_index=True) if sweeps else pd.DataFrame())


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den else float("nan")
