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
