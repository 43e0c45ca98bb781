"""The review page: the queue as a table, then per queued CT one overlay per disputed finding (the axial slice
through it, the model's lesion and the reported sub-segment as contours) with the report sentences beside it.

Pictures need the CTs (``--images DIR`` with ``DIR/<case>/ct.nii.gz``); without them the page has the table
and the reasons only. The slice goes through ``focus_vox`` of ``rsuper.review.queue.organ_table`` (the
largest predicted lesion, else the probability peak), else through the centre of the reported sub-segment
(or organ) as predicted. Masks are put on the CT's grid (nearest neighbour through both affines).

Example:
    >>> review_page(queue, organs, "review", images="data/test", pred_dir="preds", sentences={})
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from rsuper import labels
from rsuper.atomic import write_text_atomic
from rsuper.data.cases import find_mask_files
from rsuper.evaluate.collect import on_grid
from rsuper.evaluate.compare import _find_ct
from rsuper.evaluate.plots import overlay_figure
from rsuper.evaluate.report import image_html, page, table_html
from rsuper.io import load_nifti

_ROW = "<div style='display:flex;gap:1.5em;align-items:flex-start'><div style='flex:0 0 360px'>{img}</div>" \
       "<div><p><b>{reason}</b></p>{sentences}</div></div>"


def _reported_place(case_dir: Path, organ: str, tokens: list[str]) -> list[str]:
    classes = [labels.SUBSEGMENTS_OF_ORGAN.get(organ, {}).get(t) for t in tokens]
    classes = [c for c in classes if c]
    return classes or list(labels.ORGAN_MASK_CLASSES.get(organ, ()))


def overlay(row: Mapping, pred_dir: Path, images: Path, path: Path) -> Path | None:
    """The overlay of one (CT, organ) row of ``organ_table``; None when the CT is missing."""
    case_id, organ = row["case_id"], row["organ"]
    ct_path = _find_ct(images, case_id)
    if ct_path is None:
        return None
    ct = load_nifti(ct_path)
    case_dir = pred_dir / case_id
    files = find_mask_files(case_dir / "segmentations")
    layers: dict[str, np.ndarray] = {}
    if row["lesion_class"] in files:
        layers["model lesion (p >= 0.5)"] = on_grid(load_nifti(files[row["lesion_class"]]), ct).array > 0
    place = np.zeros(ct.shape, dtype=bool)
    for name in _reported_place(case_dir, organ, list(row["report_locations"] or [])):
        if name in files:
            place |= on_grid(load_nifti(files[name]), ct).array > 0
    layers["reported place (predicted mask)"] = place
    focus = row.get("focus_vox")
    if focus is not None and len(focus) == 3:
        z = int(np.clip(focus[2], 0, ct.shape[2] - 1))  # focus is in the prediction's grid (the CT's, from predict)
    elif place.any():
        z = int(round(float(np.argwhere(place)[:, 2].mean())))
    else:
        z = ct.shape[2] // 2
    data = pd.DataFrame([{"case_id": case_id, "organ": organ, "slice_z": z, "ct": str(ct_path),
                          **{f"{k}_voxels_in_slice": int(v[..., z].sum()) for k, v in layers.items()}}])
    title = f"{case_id} {organ} (z={z})"
    return overlay_figure(np.asarray(ct.array[..., z], dtype=float), {k: v[..., z] for k, v in layers.items()},
                          path, title, data)


def review_page(queue: pd.DataFrame, organs: pd.DataFrame, out: str | os.PathLike[str], pred_dir: str | os.PathLike[str],
                images: str | os.PathLike[str] | None, sentences: Mapping[tuple[str, str], list[str]],
                top: int = 20, settings: Mapping[str, object] | None = None) -> Path:
    """Writes ``out/review.html`` (and ``out/overlays/*.png`` + ``.csv`` with ``images``); returns the page."""
    out, pred_dir = Path(out), Path(pred_dir)
    body = ["<p class='note'>Most disagreeing CTs first. Agreement of a CT = the minimum over its organs; "
            "below 0.5 the report and the model disagree on whether there is a lesion (docs/review_refine.md)."
            "</p>"]
    if settings:
        body.append("<ul class='note'>" + "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>"
                                                   for k, v in settings.items()) + "</ul>")
    body.append(table_html(queue))
    for record in queue.head(top).to_dict("records"):
        case_id = record["case_id"]
        g = organs[organs["case_id"] == case_id]
        shown = g[g["disputed"]] if g["disputed"].any() else g.sort_values("agreement").head(1)
        body.append(f"<h3>#{record['rank']} {html.escape(case_id)} — agreement {record['agreement']:.3f}</h3>")
        for row in shown.to_dict("records"):
            img = "<p class='note'>no picture (give --images with DIR/&lt;case&gt;/ct.nii.gz)</p>"
            if images is not None:
                path = overlay(row, pred_dir, Path(images), out / "overlays" / f"{case_id}_{row['organ'].replace(' ', '_')}.png")
                if path is not None:
                    img = image_html(path)
            said = sentences.get((case_id, row["organ"])) or ["(the report mentions no lesion of this organ)"]
            text = "".join(f"<p class='note'>report: “{html.escape(s)}”</p>" for s in said)
            body.append(_ROW.format(img=img, reason=html.escape(row["reason"]), sentences=text))
    path = out / "review.html"
    write_text_atomic(path, page("rsuper review: where the reports and the model disagree", body))
    return path


def refined_overlay(case_id: str, lesion_class: str, layers_dirs: Mapping[str, Path], truth_dir: Path, images: Path,
                    path: Path) -> Path | None:
    """Axial slice through the largest true tumor area with truth and each folder's mask (``layers_dirs``: label ->
    a folder with ``<case>/segmentations/<lesion>.nii.gz``); None when the CT or the truth is missing."""
    ct_path = _find_ct(images, case_id)
    truth_path = truth_dir / case_id / "segmentations" / f"{lesion_class}.nii.gz"
    if ct_path is None or not truth_path.is_file():
        return None
    ct = load_nifti(ct_path)
    layers = {"truth": on_grid(load_nifti(truth_path), ct).array > 0}
    for name, folder in layers_dirs.items():
        mask_path = folder / case_id / "segmentations" / f"{lesion_class}.nii.gz"
        if mask_path.is_file():
            layers[name] = on_grid(load_nifti(mask_path), ct).array > 0
    area = layers["truth"].sum(axis=(0, 1))
    z = int(np.argmax(area)) if area.any() else ct.shape[2] // 2
    data = pd.DataFrame([{"case_id": case_id, "lesion_class": lesion_class, "slice_z": z,
                          **{f"{k}_voxels_in_slice": int(v[..., z].sum()) for k, v in layers.items()}}])
    return overlay_figure(np.asarray(ct.array[..., z], dtype=float), {k: v[..., z] for k, v in layers.items()},
                          path, f"{case_id} {lesion_class} (z={z})", data)


def demo_section(queue: pd.DataFrame, per_ct: pd.DataFrame, queue_auroc: float, refined: pd.DataFrame,
                 summary: pd.DataFrame, statuses: pd.DataFrame, pictures: list[Path], review_html: Path) -> str:
    """The demo report's "reports check the model" section (HTML fragment)."""
    merged = queue.merge(per_ct[["case_id", "model_wrong", "wrong_organs"]], on="case_id", how="left")
    parts = [
        "<h2>Reports check the model (rsuper review, rsuper refine)</h2>",
        "<h3>Review queue of the test set (R-Super; most disagreeing first)</h3>",
        f"<p class='note'>AUROC of (1 - agreement) for 'model wrong at CT level against the true masks': "
        f"{queue_auroc:.3f} ({int(per_ct['model_wrong'].sum())} of {len(per_ct)} CTs wrong). Full page with "
        f"pictures: {html.escape(str(review_html))}</p>",
        table_html(merged.head(15), ["rank", "case_id", "agreement", "model_wrong", "wrong_organs", "reason"]),
        "<h3>Refined masks of the report CTs versus the phantoms' true masks</h3>",
        "<p class='note'>Lesion DSC over report CTs with a true tumor of that organ: the raw thresholded "
        "prediction of the same model versus the refined mask (accepted and needs review), and the refined masks "
        "of accepted versus other CTs.</p>",
        table_html(summary),
        table_html(statuses),
    ]
    parts += [image_html(p, p.stem) for p in pictures]
    return "".join(parts)
