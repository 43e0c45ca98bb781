"""Crop choice for mask and report cases (docs/method.md §4), TorchIO style: sample, record, then apply.

A random choice (``choose_report_crop`` / ``choose_mask_crop``) returns a ``CropChoice`` with everything
needed to re-make the patch deterministically (case, kind, group, crop start/size, tumors); the dataset
stores it in the sample as JSON. Crops are given by their start voxel and size in the cached array's
(x, y, z) order; a crop may run past the array end (small images), the dataset pads those voxels.

Example:
    >>> index = CaseIndex.from_masks(masks)
    >>> choice = choose_report_crop(rng, "case_1", supervision, index, shape, (96, 96, 96), spacing_mm=(2.0, 2.0, 2.0),
    ...                             organ_classes=["pancreas"])
    >>> choice.kind, choice.start
    ('group', (10, 4, 30))
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from rsuper.data.reportcases import ReportSupervision

Box = tuple[tuple[int, int, int], tuple[int, int, int]]  # (lo, hi) voxel bounds, hi exclusive


@dataclass(frozen=True)
class CropOptions:
    """How crops are drawn (docs/method.md §4; TrainConfig ``data.crops``).

    Attributes:
        mask_crop_probs: weights of a mask case's crop centre on a tumor / organ / random voxel.
        report_margin_mm: the chosen report group plus this margin (per axis where it fits) lies in the patch.
        report_random_crop_prob: share of report crops without a region (organ-centred or random, ½ each).
    """

    mask_crop_probs: Mapping[str, float] = field(default_factory=lambda: {"tumor": 0.5, "organ": 0.3, "random": 0.2})
    report_margin_mm: float = 15.0
    report_random_crop_prob: float = 0.1


@dataclass(frozen=True)
class CropChoice:
    """A recorded crop decision.

    Attributes:
        case_id: the case.
        kind: "group" (report region), "tumor", "organ" or "random".
        start: first voxel of the patch (x, y, z); size: patch size in voxels.
        group: index into ``ReportSupervision.groups`` (None without a region).
        lesion_class / group_classes: the region's lesion channel and mask classes.
        volumes_mm3 / diameters_mm: the group's reported tumors, largest first.
    """

    case_id: str
    kind: str
    start: tuple[int, int, int]
    size: tuple[int, int, int]
    group: int | None = None
    lesion_class: str | None = None
    group_classes: tuple[str, ...] = ()
    volumes_mm3: tuple[float, ...] = ()
    diameters_mm: tuple[float, ...] = ()

    def to_json(self) -> str:
        """JSON text of the choice (stored in each sample)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CropChoice:
        """Inverse of ``to_json``."""
        data = json.loads(text)
        data.pop("hypoattenuating", None)  # recorded by rsuper before the hypoattenuation prior was removed
        for key in ("start", "size", "group_classes", "volumes_mm3", "diameters_mm"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)


class CaseIndex:
    """Bounding boxes and a subsample of foreground voxels per mask class of one case (built once)."""

    def __init__(self, boxes: dict[str, Box], coords: dict[str, np.ndarray]) -> None:
        self.boxes = boxes
        self.coords = coords

    @classmethod
    def from_masks(cls, masks: Mapping[str, np.ndarray], max_points: int = 20000, seed: int = 0) -> CaseIndex:
        """Scans each mask once. Empty masks get no box and no coordinates."""
        rng = np.random.default_rng(seed)
        boxes: dict[str, Box] = {}
        coords: dict[str, np.ndarray] = {}
        for name, mask in masks.items():
            found = ndimage.find_objects(np.asarray(mask, dtype=np.uint8))
            if not found or found[0] is None:
                continue
            sl = found[0]
            boxes[name] = (tuple(s.start for s in sl), tuple(s.stop for s in sl))  # type: ignore[assignment]
            points = np.argwhere(np.asarray(mask[sl]) > 0).astype(np.int32) + np.array([s.start for s in sl], np.int32)
            if len(points) > max_points:
                points = points[rng.choice(len(points), max_points, replace=False)]
            coords[name] = points
        return cls(boxes, coords)

    def union_box(self, classes: Sequence[str]) -> Box | None:
        """Bounding box of the union of ``classes`` (None when all are empty)."""
        boxes = [self.boxes[c] for c in classes if c in self.boxes]
        if not boxes:
            return None
        lo = tuple(int(min(b[0][i] for b in boxes)) for i in range(3))
        hi = tuple(int(max(b[1][i] for b in boxes)) for i in range(3))
        return lo, hi  # type: ignore[return-value]


def _start_limits(shape: Sequence[int], size: Sequence[int]) -> list[tuple[int, int]]:
    """Allowed start range per axis: [0, shape - size] (just 0 when the image is smaller)."""
    return [(0, max(int(n) - int(p), 0)) for n, p in zip(shape, size)]


def group_start_range(
    box: Box, shape: Sequence[int], size: Sequence[int], margin_vox: Sequence[int]
) -> list[tuple[int, int]] | None:
    """Start range per axis that keeps ``box`` (plus ``margin_vox`` where it fits) inside the patch.

    The margin is clipped to the image. Per axis, the dilated box is kept inside when the patch is large
    enough, else the bare box; None when even the bare box does not fit.
    """
    limits = _start_limits(shape, size)
    ranges: list[tuple[int, int]] = []
    for axis in range(3):
        lo, hi, p, n = box[0][axis], box[1][axis], size[axis], shape[axis]
        bounds = limits[axis]
        choice = None
        for m in (margin_vox[axis], 0):
            lo_d, hi_d = max(lo - m, 0), min(hi + m, n)
            first, last = max(hi_d - p, bounds[0]), min(lo_d, bounds[1])
            if first <= last:
                choice = (first, last)
                break
        if choice is None:
            return None
        ranges.append(choice)
    return ranges


def _uniform_start(rng: np.random.Generator, ranges: Sequence[tuple[int, int]]) -> tuple[int, int, int]:
    return tuple(int(rng.integers(lo, hi + 1)) for lo, hi in ranges)  # type: ignore[return-value]


def _centred_start(
    center: Sequence[int], shape: Sequence[int], size: Sequence[int]
) -> tuple[int, int, int]:
    limits = _start_limits(shape, size)
    return tuple(int(np.clip(c - p // 2, lo, hi)) for c, p, (lo, hi) in zip(center, size, limits))  # type: ignore[return-value]


def _foreground_start(
    rng: np.random.Generator, index: CaseIndex, classes: Sequence[str], shape: Sequence[int], size: Sequence[int]
) -> tuple[int, int, int] | None:
    present = [c for c in classes if c in index.coords]
    if not present:
        return None
    points = index.coords[present[int(rng.integers(len(present)))]]
    return _centred_start(points[int(rng.integers(len(points)))], shape, size)


def choose_mask_crop(
    rng: np.random.Generator,
    case_id: str,
    index: CaseIndex,
    shape: Sequence[int],
    size: Sequence[int],
    *,
    tumor_classes: Sequence[str],
    organ_classes: Sequence[str],
    probs: Mapping[str, float],
) -> CropChoice:
    """Picks a tumor-, organ- or random-centred crop with the given weights.

    A tumor crop in a case without tumors falls back to an organ crop, an organ crop without organs to
    a random crop; the recorded ``kind`` is the crop actually made.
    """
    kinds = [k for k in ("tumor", "organ", "random") if probs.get(k, 0) > 0]
    weights = np.array([probs[k] for k in kinds], dtype=float)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    order = {"tumor": ["tumor", "organ"], "organ": ["organ"], "random": []}[kind]
    for attempt in order:
        classes = tumor_classes if attempt == "tumor" else organ_classes
        start = _foreground_start(rng, index, classes, shape, size)
        if start is not None:
            return CropChoice(case_id, attempt, start, tuple(int(s) for s in size))  # type: ignore[arg-type]
    start = _uniform_start(rng, _start_limits(shape, size))
    return CropChoice(case_id, "random", start, tuple(int(s) for s in size))  # type: ignore[arg-type]


def choose_report_crop(
    rng: np.random.Generator,
    case_id: str,
    supervision: ReportSupervision,
    index: CaseIndex,
    shape: Sequence[int],
    size: Sequence[int],
    *,
    spacing_mm: Sequence[float],
    organ_classes: Sequence[str],
    margin_mm: float = 15.0,
    random_crop_prob: float = 0.1,
) -> CropChoice:
    """Chooses a usable group uniformly and a crop holding all of it (docs/method.md §4).

    Only groups whose mask voxels exist and fit in the patch count. With probability ``random_crop_prob``,
    or when no group qualifies, an organ-centred (else random) crop with no region is returned.
    """
    size_t = tuple(int(s) for s in size)
    margin_vox = [int(math.ceil(margin_mm / s)) for s in spacing_mm]
    candidates: list[tuple[int, list[tuple[int, int]]]] = []
    for gi in supervision.usable_groups:
        box = index.union_box(supervision.groups[gi].mask_classes)
        ranges = group_start_range(box, shape, size_t, margin_vox) if box is not None else None
        if ranges is not None:
            candidates.append((gi, ranges))
    if candidates and rng.random() >= random_crop_prob:
        gi, ranges = candidates[int(rng.integers(len(candidates)))]
        group = supervision.groups[gi]
        return CropChoice(
            case_id,
            "group",
            _uniform_start(rng, ranges),
            size_t,  # type: ignore[arg-type]
            group=gi,
            lesion_class=group.lesion_class,
            group_classes=group.mask_classes,
            volumes_mm3=group.volumes_mm3,
            diameters_mm=group.diameters_mm,
        )
    return choose_mask_crop(rng, case_id, index, shape, size_t, tumor_classes=(), organ_classes=organ_classes,
                            probs={"organ": 0.5, "random": 0.5})


def crop_padded(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float = 0) -> np.ndarray:
    """``array[start:start+size]`` (x, y, z) as a new array; voxels past the array end are ``fill``."""
    out = np.full(tuple(size), fill, dtype=array.dtype)
    src = tuple(slice(s, min(s + p, n)) for s, p, n in zip(start, size, array.shape))
    dst = tuple(slice(0, sl.stop - sl.start) for sl in src)
    out[dst] = array[src]
    return out
