"""`rsuper review` on a prediction folder: tables, ranked queue and HTML page.

Outputs under ``out``:
  ``review_organs.csv``  one row per (CT, organ): report and model facts, agreement terms, agreement, reason;
  ``review_queue.csv``   one row per CT, most disagreeing first: rank, agreement, disputed organs, reason;
  ``review.html``        the queue and, for the ``top`` first CTs, an overlay per disputed finding
                         (``overlays/*.png`` + ``.csv``, with ``images``) beside the report sentences.

Example:
    >>> queue = review_predictions("preds", "extract/tumors.csv", "review", images="data/test")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from rsuper.atomic import atomic_path
from rsuper.evaluate.collect import load_report_truth
from rsuper.review.agreement import SIZE_TOLERANCE
from rsuper.review.html import review_page
from rsuper.review.queue import organ_table, ranked_queue


def report_sentences(reports: str | os.PathLike[str]) -> dict[tuple[str, str], list[str]]:
    """(case, organ) -> the report sentences of its lesions (``Evidence`` of tumors.csv; empty for cases.csv)."""
    from rsuper.reports import tables

    header = pd.read_csv(reports, nrows=0).columns
    if tables.find_column(header, ("Standardized Organ", "Organ", "organ")) is None:
        return {}
    out: dict[tuple[str, str], list[str]] = {}
    for case_id, findings in tables.read_tumors_csv(reports).items():
        for lesion in findings.lesions:
            if lesion.evidence:
                said = out.setdefault((case_id, lesion.organ), [])
                if lesion.evidence not in said:
                    said.append(lesion.evidence)
    return out


def review_predictions(pred_dir: str | os.PathLike[str], reports: str | os.PathLike[str],
                       out: str | os.PathLike[str], images: str | os.PathLike[str] | None = None,
                       volume_threshold_mm3: float = 0.0, top: int = 20,
                       progress: Callable[[int, int], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Writes the outputs of the module docstring; returns (queue, organ table)."""
    out = Path(out)
    truth = load_report_truth(reports)
    organs = organ_table(pred_dir, truth, volume_threshold_mm3, progress)
    if not len(organs):
        raise ValueError(f"no CT of {pred_dir} is covered by {reports} (no shared case id with a lesion channel); "
                         "check the case ids")
    queue = ranked_queue(organs)
    for name, frame in (("review_organs.csv", organs), ("review_queue.csv", queue)):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
    settings = {"predictions": pred_dir, "reports": reports, "model call": f"opened lesion volume > 0 and >= "
                f"{volume_threshold_mm3:g} mm³", "size tolerance for 'disputed'": f"{SIZE_TOLERANCE:.0%}"}
    review_page(queue, organs, out, pred_dir, images, report_sentences(reports), top, settings)
    return queue, organs
