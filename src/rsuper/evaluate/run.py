"""One evaluation of a prediction folder against reports and/or masks; writes tables, figures, HTML.

Outputs under ``out_dir``:
  ``per_case.csv``            one row per (case, organ): predicted volume/probability/facts, truth, DSC, NSD,
                              lesion matching, report agreement;
  ``detection.csv``           CT-level sensitivity/specificity/F1/AUROC per organ with 95 % bootstrap CIs;
  ``detection_sweep.csv``     the same over every volume threshold (``roc.png``/``.csv``, ``sweep.png``/``.csv``);
  ``probability_sweep.csv``   over probability thresholds, when probabilities were saved;
  ``overlap.csv``             DSC/NSD per organ (mean, median; all CTs and tumor CTs);
  ``lesions.csv``             lesion recall/precision; ``report_agreement.csv``; ``metrics.json`` (all of it);
  ``report.html``             self-contained summary.

Example:
    >>> result = evaluate_predictions("preds", "eval", reports="gold/tumors.csv", masks="truth")
    >>> result.detection[["organ", "sensitivity", "specificity", "f1", "auroc"]]
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from rsuper.atomic import atomic_path, write_json_atomic
from rsuper.evaluate import detection, overlap
from rsuper.evaluate.collect import (GridMismatchWarning, ReportTruth, grid_text, lesion_classes_of,
                                     load_report_truth, load_truth_mask, on_grid, predicted_organ,
                                     prediction_cases, read_findings, same_grid)
from rsuper.evaluate.nnunet_preds import resolve_prediction_dir
from rsuper.evaluate.lesions import lesion_detection_summary, match_lesions, report_agreement, \
    report_agreement_summary
from rsuper.evaluate.plots import roc_figure, sweep_figure
from rsuper.evaluate.report import single_report
from rsuper.evaluate.result import EvaluationResult, EvaluationSettings


def per_case_table(pred_dir: str | os.PathLike[str], truth: ReportTruth | None, masks_dir: Path | None,
                   nsd_tolerance_mm: float, progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Per (case, organ) rows for every case of ``pred_dir`` (see module docstring).

    DSC, NSD and lesion matching are computed in the truth mask's grid; a prediction on another grid is
    resampled onto it (nearest neighbour, through both affines) with one ``GridMismatchWarning`` per case.
    """
    cases = prediction_cases(pred_dir)
    rows = []
    warned: set[str] = set()
    for i, (case_id, case_dir) in enumerate(cases.items()):
        findings = read_findings(case_dir)
        for lesion_class in lesion_classes_of(case_dir):
            pred = predicted_organ(case_dir, lesion_class, findings)
            organ = pred.summary["organ"]
            comps = pred.summary["components"]
            row = {"case_id": case_id, "organ": organ, "lesion_class": lesion_class,
                   "pred_volume_mm3": pred.volume_mm3, "pred_volume_raw_mm3": pred.volume_raw_mm3,
                   "max_probability": pred.max_probability, "pred_count": len(comps),
                   "pred_largest_mm": comps[0]["largest_diameter_mm"] if comps else 0.0,
                   "pred_location": " / ".join(comps[0].get("location", [])) if comps else ""}
            if truth is not None and truth.covers(case_id, organ):
                facts = truth.get(case_id, organ)
                row.update({"report_count": facts.count, "report_multiple": facts.multiple,
                            "report_largest_mm": facts.largest_mm,
                            "report_location": " / ".join(facts.locations or [])})
                row.update(report_agreement(len(comps), row["pred_largest_mm"],
                                            comps[0].get("location", []) if comps else [],
                                            facts.count, facts.multiple, facts.largest_mm, facts.locations))
            truth_volume = load_truth_mask(masks_dir, case_id, lesion_class) if masks_dir else None
            if truth_volume is not None:
                # Voxel metrics in the truth's grid: a coarser prediction must not be graded on its own grid.
                if not same_grid(pred.mask, truth_volume) and case_id not in warned:
                    warned.add(case_id)
                    warnings.warn(f"case {case_id} in {pred_dir}: the prediction's grid ({grid_text(pred.mask)}) "
                                  f"differs from the truth's ({grid_text(truth_volume)}); scored in the truth's "
                                  "grid, the prediction resampled by nearest neighbour", GridMismatchWarning,
                                  stacklevel=2)
                true_mask, pred_mask = truth_volume.array, on_grid(pred.mask, truth_volume).array
                spacing = truth_volume.spacing_mm
                row.update({"mask_volume_mm3": float(true_mask.sum()) * float(np.prod(spacing)),
                            "dsc": overlap.dice(true_mask, pred_mask),
                            "nsd": overlap.surface_dice(true_mask, pred_mask, spacing, nsd_tolerance_mm)})
                row.update(match_lesions(true_mask, pred_mask))
            rows.append(row)
        if progress is not None:
            progress(i + 1, len(cases))
    return pd.DataFrame(rows)


def _detection_inputs(per_case: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Scores with a boolean ``truth``: from reports when present, else from masks."""
    if "report_count" in per_case and per_case["report_count"].notna().any():
        scores = per_case[per_case["report_count"].notna()]
        truth, source = scores["report_count"] > 0, "reports"
    elif "mask_volume_mm3" in per_case and per_case["mask_volume_mm3"].notna().any():
        scores = per_case[per_case["mask_volume_mm3"].notna()]
        truth, source = scores["mask_volume_mm3"] > 0, "masks"
    else:
        return pd.DataFrame(), "none"
    return scores.assign(truth=truth.to_numpy(bool), volume_mm3=scores["pred_volume_mm3"]), source


def summarise(name: str, per_case: pd.DataFrame, settings: EvaluationSettings) -> EvaluationResult:
    """All summaries of one per-case table."""
    result = EvaluationResult(name=name, per_case=per_case)
    scores, source = _detection_inputs(per_case)
    result.settings = {"truth_for_detection": source, "nsd_tolerance_mm": settings.nsd_tolerance_mm,
                       "n_bootstrap": settings.n_bootstrap, "seed": settings.seed,
                       "volume_threshold_mm3": settings.volume_threshold_mm3,
                       "validation_cases": len(settings.val_ids or ()),
                       "opening": "one binary opening, ball of radius 1 mm", "ci": "95% percentile bootstrap"}
    if len(scores):
        det_scores = scores.drop(columns=["max_probability"]) if scores["max_probability"].isna().any() else scores
        result.detection, result.sweep = detection.detection_summary(
            det_scores, settings.volume_threshold_mm3, settings.val_ids, settings.n_bootstrap, settings.seed)
        test = scores[~scores["case_id"].isin(settings.val_ids or set())]
        rocs, prob_sweeps = [], []
        for organ, g in test.groupby("organ", sort=True):
            use_prob = g["max_probability"].notna().all()
            score = g["max_probability" if use_prob else "volume_mm3"].to_numpy(float)
            curve = detection.roc_curve(g["truth"].to_numpy(bool), score)
            rocs.append(curve.assign(model=name, organ=organ, auroc=detection.auroc(g["truth"], score),
                                     score="max_probability" if use_prob else "volume_mm3"))
            if use_prob:
                sweep = detection.threshold_sweep(g["truth"].to_numpy(bool), score, np.round(np.arange(0.05, 1.0, 0.05), 2),
                                                  positive=lambda s, th: s >= th)
                prob_sweeps.append(sweep.assign(organ=organ))
        result.roc = pd.concat(rocs, ignore_index=True)
        if prob_sweeps:
            result.probability_sweep = pd.concat(prob_sweeps, ignore_index=True)
    per_case = per_case[~per_case["case_id"].isin(settings.val_ids or set())]  # validation CTs only set thresholds
    if "dsc" in per_case:
        rows = []
        for organ, g in per_case.dropna(subset=["dsc"]).groupby("organ", sort=True):
            tumor = g[g["mask_volume_mm3"] > 0]
            rows.append({"organ": organ, "cases": len(g), "dsc_mean": g["dsc"].mean(), "dsc_median": g["dsc"].median(),
                         "nsd_mean": g["nsd"].mean(), "nsd_median": g["nsd"].median(),
                         "tumor_cases": len(tumor), "dsc_mean_tumor_cases": tumor["dsc"].mean(),
                         "nsd_mean_tumor_cases": tumor["nsd"].mean(),
                         "nsd_tolerance_mm": settings.nsd_tolerance_mm})
        result.overlap = pd.DataFrame(rows)
        result.lesions = lesion_detection_summary(per_case.dropna(subset=["true_lesions"]))
    if "count_agrees" in per_case:
        result.agreement = report_agreement_summary(per_case.dropna(subset=["report_count"]))
    return result


def write_result(result: EvaluationResult, out_dir: str | os.PathLike[str]) -> Path:
    """Writes the tables, figures, ``metrics.json`` and ``report.html`` of one evaluation."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = {"per_case": result.per_case, "detection": result.detection, "detection_sweep": result.sweep,
              "probability_sweep": result.probability_sweep, "overlap": result.overlap,
              "lesions": result.lesions, "report_agreement": result.agreement}
    for stem, frame in frames.items():
        if len(frame):
            with atomic_path(out / f"{stem}.csv") as tmp:
                frame.to_csv(tmp, index=False)
    figures = {}
    if len(result.roc):
        figures["roc"] = roc_figure(result.roc, out / "roc.png")
    if len(result.sweep):
        figures["sweep"] = sweep_figure(result.sweep, out / "sweep.png")
    if len(result.probability_sweep):
        figures["probability_sweep"] = sweep_figure(result.probability_sweep, out / "probability_sweep.png",
                                                    xlabel="probability threshold")
    write_json_atomic(out / "metrics.json", {
        "name": result.name, "settings": result.settings,
        **{k: _records(v) for k, v in frames.items() if k not in ("per_case",)}})
    single_report(result, figures, out / "report.html")
    return out


def evaluate_predictions(pred_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
                         reports: str | os.PathLike[str] | None = None, masks: str | os.PathLike[str] | None = None,
                         settings: EvaluationSettings | None = None, name: str | None = None,
                         progress: Callable[[int, int], None] | None = None) -> EvaluationResult:
    """Evaluates ``pred_dir`` against a reports table and/or a masks folder; writes to ``out_dir`` if given.

    ``pred_dir`` is an ``rsuper predict`` output or an ``nnUNetv2_predict`` output (label maps + dataset.json),
    which is first converted into ``out_dir/predictions`` (``rsuper.evaluate.nnunet_preds``).
    """
    if reports is None and masks is None:
        raise ValueError("give --reports (tumors.csv or cases.csv) and/or --masks (folder of true lesion masks)")
    settings = settings or EvaluationSettings()
    truth = load_report_truth(reports) if reports is not None else None
    masks_dir = Path(masks) if masks is not None else None
    if masks_dir is not None and not masks_dir.is_dir():
        raise FileNotFoundError(f"--masks folder not found: {masks_dir}")
    name = name or Path(pred_dir).name
    if out_dir is not None:  # an nnUNetv2_predict folder is split into rsuper's per-class layout first
        pred_dir = resolve_prediction_dir(pred_dir, Path(out_dir) / "predictions")
    else:
        import tempfile

        pred_dir = resolve_prediction_dir(pred_dir, tempfile.mkdtemp(prefix="rsuper-nnunet-pred-"))
    per_case = per_case_table(pred_dir, truth, masks_dir, settings.nsd_tolerance_mm, progress)
    result = summarise(name, per_case, settings)
    if out_dir is not None:
        write_result(result, out_dir)
    return result


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.replace({np.nan: None}).to_dict("records") if len(frame) else []
