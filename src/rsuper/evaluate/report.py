"""Self-contained HTML reports (tables + PNG figures embedded as base64; no external files needed).

Example:
    >>> single_report(result, {"roc": Path("eval/roc.png")}, "eval/report.html")
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import pandas as pd

from rsuper import __version__
from rsuper.atomic import write_text_atomic
from rsuper.evaluate.result import EvaluationResult

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:0.5em 0}
.note{color:#555;font-size:13px}
"""

_DETECTION_COLUMNS = ["organ", "n", "positives", "volume_threshold_mm3", "threshold_source", "sensitivity",
                      "sensitivity_ci_low", "sensitivity_ci_high", "specificity", "specificity_ci_low",
                      "specificity_ci_high", "f1", "f1_ci_low", "f1_ci_high", "auroc", "auroc_ci_low",
                      "auroc_ci_high", "auroc_score"]


def table_html(frame: pd.DataFrame, columns: list[str] | None = None) -> str:
    """HTML table of ``frame`` (selected columns that exist), floats with 3 decimals."""
    if frame is None or not len(frame):
        return "<p class='note'>not available (no matching truth)</p>"
    if columns:
        frame = frame[[c for c in columns if c in frame.columns]]
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="–", border=0)


def image_html(path: str | os.PathLike[str], caption: str = "") -> str:
    """<img> with the PNG embedded as base64."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"<figure><img src='data:image/png;base64,{data}'/><figcaption>{html.escape(caption)}</figcaption></figure>"


def page(title: str, body: list[str]) -> str:
    """Full HTML document."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='note'>rsuper {__version__}</p>{''.join(body)}</body></html>")


def _settings_html(settings: dict) -> str:
    items = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in settings.items())
    return f"<ul class='note'>{items}</ul>"


def single_report(result: EvaluationResult, figures: dict[str, Path], path: str | os.PathLike[str]) -> Path:
    """HTML report of one evaluation."""
    body = [_settings_html(result.settings),
            "<h2>CT-level detection</h2>", table_html(result.detection, _DETECTION_COLUMNS)]
    body += [image_html(figures[k], k) for k in ("roc", "sweep", "probability_sweep") if k in figures]
    body += ["<h2>Voxel overlap (DSC, NSD)</h2>", table_html(result.overlap),
             "<h2>Lesion detection (component matching)</h2>", table_html(result.lesions),
             "<h2>Agreement with reports</h2>", table_html(result.agreement)]
    write_text_atomic(path, page(f"rsuper evaluation: {result.name}", body))
    return Path(path)
