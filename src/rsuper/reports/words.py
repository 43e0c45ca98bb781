"""Findings in words (used by `rsuper review` and `rsuper refine`) ("2 lesions in the pancreatic tail, 31 mm").

Example:
    >>> place_text("pancreas", ["tail"]), place_text("kidney", ["left"]), place_text("liver", ["segment 7"])
    ('pancreatic tail', 'left kidney', 'liver segment 7')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from rsuper import labels

_ADJECTIVE = {"pancreas": "pancreatic"}
_SIDED = ("kidney", "adrenal gland")


def place_text(organ: str, tokens: Iterable[str] | None) -> str:
    """The organ part named by report location ``tokens`` (docs/method.md §2); the organ when none."""
    tokens = list(tokens or [])
    if not tokens:
        return organ
    if organ in _SIDED:
        return f"{'/'.join(tokens)} {organ}"
    if organ == "liver" and all(t.startswith("segment ") for t in tokens):
        numbers = "/".join(t.removeprefix("segment ") for t in tokens)
        return f"liver segment{'s' if len(tokens) > 1 else ''} {numbers}"
    return f"{_ADJECTIVE.get(organ, organ)} {'/'.join(tokens)}"


def place_of_voxel(organ: str, voxel: tuple[int, int, int] | None, subsegments: Mapping[str, np.ndarray]) -> str:
    """Words for where ``voxel`` lies: the sub-segment of ``organ`` holding it, else the organ ('' if unknown)."""
    if voxel is None:
        return ""
    for name, mask in subsegments.items():
        if mask.shape and bool(mask[voxel]):
            token = labels.subsegment_token(organ, name)
            return place_text(organ, [token] if token else [])
    return organ


def lesions_text(count: int, place: str, largest_mm: float | None, multiple: bool = False) -> str:
    """``2 lesions in the pancreatic tail, 31 mm`` (``none`` for 0; ``at least`` for a ``multiple`` row)."""
    if count == 0:
        return "none"
    noun = "lesion" if count == 1 and not multiple else "lesions"
    text = f"{'at least ' if multiple else ''}{count} {noun}"
    if place:
        text += f" in the {place}"
    if largest_mm:
        text += f", {largest_mm:.0f} mm"
    return text
