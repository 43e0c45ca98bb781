"""Agreement of a prediction with its report, per CT and organ, and the one score per CT.

Facts per (CT, organ with a lesion channel in the prediction and covered by the report):

- report: lesion count n_r (a ``multiple`` row makes it a lower bound), largest diameter d_r (mm, may be
  unknown) and sub-segments (location tokens, may be unknown);
- model: its CT-level call (positive when the predicted lesion volume after the light opening of
  ``rsuper evaluate`` is > 0 and >= ``volume_threshold_mm3``, default 0: any lesion), component count n_m,
  largest diameter d_m (mm) and sub-segment of its largest component (``findings.json``), and p = its
  highest lesion probability in the CT (1/0 from the call when no probability is known).

**Agreement of an organ**, a in [0, 1] (higher = the report and the model agree more):

    report and model disagree on presence:    a = 0.5 * (p if the report lists a lesion else 1 - p)   in [0, 0.5]
    both say "no lesion":                     a = 0.5 + 0.5 * (1 - p)                                 in [0.5, 1]
    both say "lesion":                        a = 0.5 + 0.5 * mean(available fact terms)               in [0.5, 1]
        count term     f_n = 1 / (1 + |n_m - n_r|)  (multiple: 1 when n_m >= n_r)
        size term      f_d = max(0, 1 - |d_m - d_r| / d_r)                       (when d_r is known)
        location term  f_l = 1 if the largest predicted lesion lies in a reported sub-segment else 0
                                                                          (when both locations are known)

**Agreement of a CT** = the minimum over its organs (the worst organ decides); the review queue sorts CTs by
it, lowest first, so every presence disagreement comes before every CT where report and model agree on
presence. An organ is *disputed* when presence differs, or both say "lesion" and the count differs, the
largest diameter is off by more than ``SIZE_TOLERANCE`` (relative) or the location differs.

Example:
    >>> organ_agreement(report_count=1, report_multiple=False, report_largest_mm=30.0, report_locations=["tail"],
    ...                 model_positive=False, model_count=0, model_largest_mm=0.0, model_location=[],
    ...                 max_probability=0.38)["agreement"]
    0.19
"""

from __future__ import annotations

import math
from typing import Any

SIZE_TOLERANCE = 0.3
"""Relative largest-diameter error above which a finding counts as disputed (|d_m - d_r| / d_r)."""


def organ_agreement(
    report_count: int,
    report_multiple: bool,
    report_largest_mm: float | None,
    report_locations: list[str] | None,
    model_positive: bool,
    model_count: int,
    model_largest_mm: float,
    model_location: list[str],
    max_probability: float | None,
) -> dict[str, Any]:
    """The organ's agreement and its terms (see the module docstring); terms not assessable are None."""
    report_positive = report_count > 0
    p = float(max_probability) if max_probability is not None and math.isfinite(max_probability) else float(
        model_positive)
    terms: dict[str, Any] = {"count_term": None, "size_term": None, "location_term": None,
                             "size_relative_error": None}
    if report_positive != model_positive:
        agreement = 0.5 * (p if report_positive else 1.0 - p)
        disputed, kind = True, "missed" if report_positive else "unreported"
    elif not report_positive:
        agreement = 0.5 + 0.5 * (1.0 - p)
        disputed, kind = False, "both none"
    else:
        gap = model_count - report_count
        terms["count_term"] = 1.0 if report_multiple and gap >= 0 else 1.0 / (1.0 + abs(gap))
        if report_largest_mm:
            error = abs(model_largest_mm - report_largest_mm) / report_largest_mm
            terms["size_relative_error"] = round(error, 4)
            terms["size_term"] = max(0.0, 1.0 - error)
        if report_locations and model_location:
            terms["location_term"] = 1.0 if set(model_location) & set(report_locations) else 0.0
        known = [v for k, v in terms.items() if k.endswith("_term") and v is not None]
        agreement = 0.5 + 0.5 * (sum(known) / len(known) if known else 1.0)
        disputed = (terms["count_term"] < 1.0
                    or (terms["size_relative_error"] or 0.0) > SIZE_TOLERANCE
                    or terms["location_term"] == 0.0)
        kind = "facts differ" if disputed else "agree"
    return {"agreement": round(agreement, 4), "disputed": disputed, "kind": kind, **{
        k: (round(v, 4) if isinstance(v, float) else v) for k, v in terms.items()}}


def case_agreement(organ_scores: list[float]) -> float:
    """Agreement of a CT: the minimum of its organs' agreements (NaN when no organ is assessable)."""
    return min(organ_scores) if organ_scores else float("nan")
