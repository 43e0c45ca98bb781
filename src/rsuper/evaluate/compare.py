"""Side-by-side comparison of two prediction folders (e.g. masks-only vs R-Super) on the same truth.

Writes under ``out_dir``: ``<name>/`` (each model's full evaluation), ``comparison.csv`` (metrics of A,
B and B - A per organ), ``bars.png``/``.csv`` (sensitivity, specificity, F1, DSC with deltas in points),
``roc.png``/``.csv`` (both models' ROC curves), ``disagreements.csv`` and ``overlays/*.png``/``.csv`` (the
cases where the two models differ most: CT-level calls that differ first, then the largest |DSC_B - DSC_A|;
an axial slice through the largest disagreement with truth and both predictions; needs ``images``), and
``report.html`` (self-contained).

Example:
    >>> compare_predictions(("preds_masks", "preds_rsuper"), "cmp", reports="gold/tumors.csv", masks="truth",
    ...                     names=("masks-only", "R-Super"), images="data/test")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from rsuper.atomic import atomic_path, write_text_atomic
from rsuper.evaluate.collect import on_grid
from rsuper.evaluate.detection import predict_positive
from rsuper.evaluate.plots import bar_figure, overlay_figure, roc_figure
from rsuper.evaluate.report import image_html, page, table_html
from rsuper.evaluate.result import EvaluationResult, EvaluationSettings
from rsuper.evaluate.nnunet_preds import resolve_prediction_dir
from rsuper.evaluate.run import evaluate_predictions
from rsuper.io import load_nifti

_METRICS = ("sensitivity", "specificity", "f1", "auroc", "dsc_mean", "nsd_mean", "lesion_recall",
            "lesion_precision")
_BAR_METRICS = ("sensitivity", "specificity", "f1", "dsc_mean")


def metrics_by_organ(result: EvaluationResult) -> pd.DataFrame:
    """Long table (organ, metric, value) of one evaluation's headline metrics."""
    rows = []
    for frame in (result.detection, result.overlap, result.lesions):
        for record in frame.to_dict("records") if len(frame) else []:
            rows += [{"organ": record["organ"], "metric": m, "value": float(record[m])}
                     for m in _METRICS if m in record]
    return pd.DataFrame(rows, columns=["organ", "metric", "value"])


def comparison_table(a: EvaluationResult, b: EvaluationResult) -> pd.DataFrame:
    """organ, metric, <A>, <B>, delta (B - A)."""
    merged = metrics_by_organ(a).merge(metrics_by_organ(b), on=["organ", "metric"], how="outer",
                                       suffixes=("_a", "_b"))
    merged = merged.rename(columns={"value_a": a.name, "value_b": b.name})
    merged["delta"] = merged[b.name] - merged[a.name]
    return merged.sort_values(["organ", "metric"], ignore_index=True)


def disagreements(a: EvaluationResult, b: EvaluationResult, top: int = 5) -> pd.DataFrame:
    """Cases (per organ) where A and B differ most: differing CT-level calls, then |DSC_B - DSC_A|."""
    keys = ["case_id", "organ"]
    cols = keys + [c for c in ("pred_volume_mm3", "dsc") if c in a.per_case]
    merged = a.per_case[cols].merge(b.per_case[cols], on=keys, suffixes=("_a", "_b"))
    thr_a = _thresholds(a)
    thr_b = _thresholds(b)
    merged["call_a"] = [bool(predict_positive(np.array([v]), thr_a.get(o, 0.0))[0])
                        for v, o in zip(merged["pred_volume_mm3_a"], merged["organ"])]
    merged["call_b"] = [bool(predict_positive(np.array([v]), thr_b.get(o, 0.0))[0])
                        for v, o in zip(merged["pred_volume_mm3_b"], merged["organ"])]
    merged["calls_differ"] = merged["call_a"] != merged["call_b"]
    merged["dsc_gap"] = (merged["dsc_b"] - merged["dsc_a"]).abs() if "dsc_a" in merged else 0.0
    merged["volume_gap_mm3"] = (merged["pred_volume_mm3_b"] - merged["pred_volume_mm3_a"]).abs()
    merged = merged.sort_values(["calls_differ", "dsc_gap", "volume_gap_mm3"], ascending=False)
    merged = merged[merged["calls_differ"] | (merged["dsc_gap"] > 0) | (merged["volume_gap_mm3"] > 0)]
    return merged.head(top).reset_index(drop=True)


def _thresholds(result: EvaluationResult) -> dict[str, float]:
    if not len(result.detection):
        return {}
    return dict(zip(result.detection["organ"], result.detection["volume_threshold_mm3"]))


def _find_ct(images: Path, case_id: str) -> Path | None:
    for candidate in (images / case_id / "ct.nii.gz", images / case_id / "ct.nii", images / f"{case_id}.nii.gz",
                      images / f"{case_id}_0000.nii.gz"):
        if candidate.is_file():
            return candidate
    return None


def overlay_for_case(case_id: str, lesion_class: str, dirs: dict[str, Path], images: Path,
                     masks: Path | None, path: Path, title: str) -> Path | None:
    """Axial slice (largest A/B/truth disagreement) with truth, A and B contours; None if CT is missing.

    Masks on another grid than the CT are resampled onto it (nearest neighbour, through both affines)."""
    ct_path = _find_ct(images, case_id)
    if ct_path is None:
        return None
    ct = load_nifti(ct_path)
    layers: dict[str, np.ndarray] = {}
    if masks is not None:
        truth_path = masks / case_id / "segmentations" / f"{lesion_class}.nii.gz"
        if truth_path.is_file():
            layers["truth"] = on_grid(load_nifti(truth_path), ct).array > 0
    for name, folder in dirs.items():
        pred = load_nifti(folder / case_id / "segmentations" / f"{lesion_class}.nii.gz")
        layers[name] = on_grid(pred, ct).array > 0
    stack = np.stack(list(layers.values()))
    disagreement = (stack.any(0) & ~stack.all(0)).sum(axis=(0, 1))
    z = int(np.argmax(disagreement)) if disagreement.any() else int(np.argmax(stack.any(0).sum(axis=(0, 1))))
    data = pd.DataFrame([{"case_id": case_id, "lesion_class": lesion_class, "slice_z": z, "ct": str(ct_path),
                          **{f"{k}_voxels_in_slice": int(v[..., z].sum()) for k, v in layers.items()}}])
    return overlay_figure(np.asarray(ct.array[..., z], dtype=float), {k: v[..., z] for k, v in layers.items()},
                          path, f"{title} (z={z})", data)


def compare_predictions(pred_dirs: tuple[str | os.PathLike[str], str | os.PathLike[str]],
                        out_dir: str | os.PathLike[str], reports: str | os.PathLike[str] | None = None,
                        masks: str | os.PathLike[str] | None = None, names: tuple[str, str] | None = None,
                        images: str | os.PathLike[str] | None = None, settings: EvaluationSettings | None = None,
                        progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Evaluates both folders, writes the comparison outputs, returns the comparison table."""
    out = Path(out_dir)
    names = names or (Path(pred_dirs[0]).name, Path(pred_dirs[1]).name)
    if names[0] == names[1]:
        raise ValueError(f"the two models need different names, got {names}; pass --names A B")
    pred_dirs = tuple(resolve_prediction_dir(d, out / n / "predictions") for d, n in zip(pred_dirs, names))
    results = [evaluate_predictions(d, out / n, reports, masks, settings, name=n, progress=progress)
               for d, n in zip(pred_dirs, names)]
    a, b = results
    table = comparison_table(a, b)
    with atomic_path(out / "comparison.csv") as tmp:
        table.to_csv(tmp, index=False)
    figures: list[tuple[Path, str]] = []
    bars = table[table["metric"].isin(_BAR_METRICS)].reset_index(drop=True)
    if len(bars):
        figures.append((bar_figure(bars, out / "bars.png", names), "A vs B (delta B - A in points)"))
    rocs = pd.concat([r.roc for r in results if len(r.roc)], ignore_index=True) if any(len(r.roc) for r in results) \
        else pd.DataFrame()
    if len(rocs):
        figures.append((roc_figure(rocs, out / "roc.png"), "ROC curves"))
    worst = disagreements(a, b)
    with atomic_path(out / "disagreements.csv") as tmp:
        worst.to_csv(tmp, index=False)
    overlays = []
    if images is not None and len(worst):
        lesion_of = dict(zip(a.per_case["organ"], a.per_case["lesion_class"]))
        dirs = {n: Path(d) for n, d in zip(names, pred_dirs)}
        for i, row in worst.iterrows():
            png = overlay_for_case(row["case_id"], lesion_of[row["organ"]], dirs, Path(images),
                                   Path(masks) if masks else None, out / "overlays" / f"{i:02d}_{row['case_id']}.png",
                                   f"{row['case_id']} {row['organ']}")
            if png is not None:
                overlays.append((png, f"{row['case_id']} ({row['organ']})"))
    body = [f"<p>A = <b>{names[0]}</b> ({pred_dirs[0]}), B = <b>{names[1]}</b> ({pred_dirs[1]}); "
            f"delta = B - A. Settings: {a.settings}</p>",
            "<h2>Headline metrics</h2>", table_html(table)]
    body += [image_html(p, c) for p, c in figures]
    body += ["<h2>CT-level detection</h2>", f"<h3>{names[0]}</h3>", table_html(a.detection),
             f"<h3>{names[1]}</h3>", table_html(b.detection),
             "<h2>Largest disagreements</h2>", table_html(worst)]
    body += [image_html(p, c) for p, c in overlays]
    if images is None:
        body.append("<p class='note'>no overlays: pass --images DIR (the CTs) to draw them</p>")
    write_text_atomic(out / "report.html", page(f"rsuper comparison: {names[0]} vs {names[1]}", body))
    return table
