"""Lesion measurements in report text: cm/mm, 1D/2D/3D, ranges, unit-less numbers, current vs prior.

A range ("8-9 mm") gives its upper bound; a number without a unit is mm, but only counts when it
reads as a size (``a x b``, or after "measuring"/"size"/"diameter"); a size stated for a prior exam
("previously 1.5 cm", "from 2.0 to 1.5 cm", "1.2 cm on the prior study") is marked ``prior``.

Example:
    >>> [(m.diameters_mm, m.prior) for m in find_measurements("2.1 x 1.8 cm (previously 1.5 x 1.2 cm)")]
    [([21.0, 18.0], False), ([15.0, 12.0], True)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rsuper.reports.vocabulary import SEGMENT_RE

_NUM = r"(?:\d+(?:\.\d+)?|\.\d+)(?![\d/])"
_DIM = rf"{_NUM}(?:\s*(?:-|–|to)\s*{_NUM})?"
_UNIT = r"(?:cm|mm|centimet(?:er|re)s?|millimet(?:er|re)s?)\b"
_SEP = r"\s*(?:x|×|\*|by)\s*"
_PART = rf"({_DIM})\s*-?\s*({_UNIT})?"
MEASUREMENT_RE = re.compile(
    rf"(?<![\w./-]){_PART}(?:{_SEP}{_PART})?(?:{_SEP}{_PART})?(?!\s*(?:%|hu|cc|ml|mg|years?|yo|y/o|days?|weeks?|months?|series|image)\b)",
    re.IGNORECASE,
)
_SIZE_CUE_RE = re.compile(
    r"(?:measur\w*|size|sized|diameter|dimension|up to|span\w*|approximately|about)[\s:,(]*(?:(?:up to|approximately|about|of|is|at)[\s,]*)*$",
    re.IGNORECASE,
)
_PRIOR_BEFORE_RE = re.compile(
    r"\b(?:previously|prior(?:ly)?|formerly|earlier|from|compared (?:with|to)|versus|vs\.?|was|were|"
    r"(?:previous|prior|last|earlier) (?:study|exam|examination|ct|scan|imaging))"
    r"[\s,(:]*(?:(?:measuring|measured|of|at|approximately|about|approx\.?|roughly|up to|is|was)[\s,(]*){0,3}$",
    re.IGNORECASE,
)
_PRIOR_AFTER_RE = re.compile(
    r"^\s*\)?\s*(?:on|in|at)\s+(?:the\s+)?(?:prior|previous|comparison|earlier|last|\d{1,2}/|\d{4}\b|"
    r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
    re.IGNORECASE,
)
_LIST_UNIT_RE = re.compile(r"(?:\s*(?:,|and|or|&)\s*(?:and\s+)?\d+(?:\.\d+)?)+\s*(cm|mm)\b", re.IGNORECASE)
_NOT_SIZE_RE = re.compile(
    r"(?:segments?|seg\.?|\bs|bosniak|series|image|img|grade|level|lr-?|li-rads|type|stage|phase|\b[tlc])\s*$",
    re.IGNORECASE,
)
_MIN_MM, _MAX_MM = 1.0, 400.0


@dataclass(frozen=True)
class Measurement:
    """One size statement: 1-3 diameters in mm, its character span in the text, and whether it is prior."""

    diameters_mm: list[float]
    start: int
    end: int
    prior: bool


def _upper(dim: str) -> float:
    return max(float(n) for n in re.findall(r"\d+(?:\.\d+)?|\.\d+", dim))


def find_measurements(text: str) -> list[Measurement]:
    """All size statements in ``text``, in order (prior ones included, flagged ``prior=True``)."""
    found: list[Measurement] = []
    segments = [m.span() for m in SEGMENT_RE.finditer(text)]
    for match in MEASUREMENT_RE.finditer(text):
        dims = [match.group(i) for i in (1, 3, 5) if match.group(i)]
        units = [(match.group(i) or "").lower() for i in (2, 4, 6) if match.group(i - 1)]
        before = text[max(0, match.start() - 60) : match.start()]
        if not units[0] and (_NOT_SIZE_RE.search(before) or any(a <= match.start() < b for a, b in segments)):
            continue  # "segment 8", "Bosniak 2", "series 3": a number that is not a size
        listed = _LIST_UNIT_RE.match(text[match.end() :]) if not any(units) and len(dims) == 1 else None
        if listed:  # "1.0 and 1.5 cm": the unit of the list's last number
            units = [listed.group(1).lower()]
        elif not any(units) and len(dims) == 1 and not _SIZE_CUE_RE.search(before):
            continue
        last_unit = next((u for u in reversed(units) if u), "mm")
        factors = [10.0 if (u or last_unit).startswith("c") else 1.0 for u in units]
        prior = bool(_PRIOR_BEFORE_RE.search(before) or _PRIOR_AFTER_RE.match(text[match.end() : match.end() + 30]))
        from_to = len(dims) == 1 and re.search(r"\bfrom\s*$", before, re.I) and re.search(r"\bto\b", dims[0])
        if from_to:  # "from 2.0 to 1.5 cm": the second number is the current size
            numbers = re.findall(r"\d+(?:\.\d+)?|\.\d+", dims[0])
            diameters, prior = [float(numbers[-1]) * factors[0]], False
        else:
            diameters = [_upper(dim) * factor for dim, factor in zip(dims, factors)]
        if any(not _MIN_MM <= d <= _MAX_MM for d in diameters):
            continue
        found.append(Measurement([round(d, 2) for d in diameters], match.start(), match.end(), prior))
    return found
