"""Per-case inputs of the evaluation: predicted scores/facts from a prediction folder, truth from reports.

A prediction folder has the layout written by ``rsuper predict`` (``<case>/segmentations/<class>.nii.gz``,
optional ``<case>/probabilities/<class>.nii.gz`` (uint8, p = value / 255) and ``<case>/findings.json``);
masks from other tools in the same layout work too (facts are then recomputed from the masks).

CT-level predicted volume: the lesion mask after a light opening (one binary opening with a ball of
radius 1 mm: the 6-connected cross at 1 mm voxels, nothing where every axis is coarser than 1 mm; at
4 mm a cross would erase every tumor thinner than 12 mm), in mm^3; this removes thin specks.

Example:
    >>> truth = load_report_truth("gold/tumors.csv")
    >>> truth["case1"]["pancreas"].count
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from rsuper import labels
from rsuper.infer.findings import lesion_components, organ_summary
from rsuper.io import Volume, load_nifti, resample_to_grid
from rsuper.reports import tables


@dataclass
class OrganTruth:
    """Report facts of one organ in one CT: lesion count (``multiple`` rows count 1), largest diameter
    (mm, None = unknown), location tokens of all its lesions (None = unknown) and whether a
    ``multiple`` row makes the count a lower bound."""

    count: int = 0
    largest_mm: float | None = None
    locations: list[str] | None = None
    multiple: bool = False


@dataclass
class ReportTruth:
    """``cases[case_id][organ]`` facts; ``organs`` = organs the table covers (others are unknown)."""

    cases: dict[str, dict[str, OrganTruth]] = field(default_factory=dict)
    organs: set[str] | None = None  # None = every organ (a per-tumor table states all findings)

    def covers(self, case_id: str, organ: str) -> bool:
        return case_id in self.cases and (self.organs is None or organ in self.organs)

    def get(self, case_id: str, organ: str) -> OrganTruth:
        return self.cases.get(case_id, {}).get(organ, OrganTruth())


def load_report_truth(path: str | os.PathLike[str]) -> ReportTruth:
    """Reads a per-tumor table (``tumors.csv`` / R-Super metadata) or a per-CT table (``cases.csv``)."""
    header = pd.read_csv(path, nrows=0).columns
    if tables.find_column(header, ("Standardized Organ", "Organ", "organ")) is not None:
        truth = ReportTruth()
        for case_id, findings in tables.read_tumors_csv(path).items():
            if findings.error is not None:
                continue
            organs: dict[str, OrganTruth] = {}
            for organ in dict.fromkeys(lesion.organ for lesion in findings.lesions):
                lesions = findings.organ_lesions(organ)
                sizes = [lesion.largest_diameter_mm for lesion in lesions if lesion.largest_diameter_mm]
                locations = [tok for lesion in lesions for tok in lesion.location]
                organs[organ] = OrganTruth(
                    count=len(lesions), largest_mm=max(sizes) if sizes else None,
                    locations=sorted(set(locations)) if all(lesion.location for lesion in lesions) else None,
                    multiple=any(lesion.multiple for lesion in lesions))
            truth.cases[case_id] = organs
        return truth
    per_ct = tables.read_cases_csv(path)
    covered = {organ for organ in labels.LESION_CLASS_OF_ORGAN
               if tables.find_column(header, (tables.count_column(organ),)) is not None}
    if not covered:
        raise ValueError(f"{path}: neither a per-tumor table ('Standardized Organ' column) nor a per-CT table "
                         f"('number of <organ> lesion instances' columns); found {list(header)}")
    return ReportTruth(
        cases={cid: {o: OrganTruth(count=s.count, largest_mm=s.largest_mm) for o, s in organs.items()}
               for cid, organs in per_ct.items()},
        organs=covered)


def prediction_cases(pred_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """{case_id: case folder} of every ``<case>/segmentations/`` under ``pred_dir``."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_dir}")
    cases = {p.parent.name: p.parent for p in sorted(pred_dir.glob("*/segmentations")) if p.is_dir()}
    if not cases:
        raise FileNotFoundError(f"no <case>/segmentations/ folders in {pred_dir}; is it the OUT of `rsuper predict`?")
    return cases


def lesion_classes_of(case_dir: Path) -> list[str]:
    """Lesion classes with a mask file in ``case_dir/segmentations``."""
    names = {labels.canonical_class_name(p.name, p) for p in (case_dir / "segmentations").glob("*.nii*")}
    return sorted(n for n in names if n in labels.ORGAN_OF_LESION_CLASS)


def _mask_path(folder: Path, name: str) -> Path | None:
    for suffix in (".nii.gz", ".nii"):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


OPENING_RADIUS_MM = 1.0


def opening_structure(spacing_mm: tuple[float, float, float], radius_mm: float = OPENING_RADIUS_MM) -> np.ndarray:
    """Boolean structuring element: the voxels whose centres lie within ``radius_mm`` of the centre voxel."""
    reach = [int(np.floor(radius_mm / s)) for s in spacing_mm]
    grids = np.meshgrid(*[np.arange(-r, r + 1) * s for r, s in zip(reach, spacing_mm)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-9


def opened_volume_mm3(mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> float:
    """Volume (mm^3) of ``mask`` after one binary opening with a ball of radius 1 mm (see module doc)."""
    structure = opening_structure(spacing_mm)
    mask = mask.astype(bool)
    opened = ndimage.binary_opening(mask, structure=structure) if structure.sum() > 1 else mask
    return float(opened.sum()) * float(np.prod(spacing_mm))


def read_findings(case_dir: Path) -> dict[str, Any] | None:
    """The case's ``findings.json`` (None when absent or unreadable)."""
    path = case_dir / "findings.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


@dataclass
class PredictedOrgan:
    """What a prediction says about one organ of one CT (volumes mm^3, probability in [0, 1])."""

    mask: Volume
    volume_mm3: float
    volume_raw_mm3: float
    max_probability: float | None
    summary: dict[str, Any]


def predicted_organ(case_dir: Path, lesion_class: str, findings: dict[str, Any] | None) -> PredictedOrgan:
    """Loads one lesion mask and derives CT-level scores and report-style facts."""
    organ = labels.ORGAN_OF_LESION_CLASS[lesion_class]
    seg = case_dir / "segmentations"
    mask = load_nifti(_mask_path(seg, lesion_class))  # type: ignore[arg-type]
    binary = mask.array > 0
    spacing = mask.spacing_mm
    prob_path = _mask_path(case_dir / "probabilities", lesion_class)
    max_p = None
    if prob_path is not None:
        prob = load_nifti(prob_path).array
        max_p = float(prob.max()) / (255.0 if prob.dtype == np.uint8 else 1.0)
    elif findings is not None and organ in findings.get("organs", {}):
        max_p = findings["organs"][organ].get("max_probability")
    if findings is not None and organ in findings.get("organs", {}):
        summary = findings["organs"][organ]
    else:
        subs = {}
        for sub in labels.SUBSEGMENTS_OF_ORGAN.get(organ, {}).values():
            path = _mask_path(seg, sub)
            if path is not None:
                subs[sub] = load_nifti(path).array > 0
        summary = organ_summary(organ, lesion_class,
                                lesion_components(binary, spacing, subsegments=subs or None, organ=organ))
    return PredictedOrgan(mask=mask.with_array(binary), volume_mm3=opened_volume_mm3(binary, spacing),
                          volume_raw_mm3=float(binary.sum()) * float(np.prod(spacing)),
                          max_probability=max_p, summary=summary)


GRID_TOLERANCE_MM = 1e-3


class GridMismatchWarning(UserWarning):
    """A prediction is not on its truth mask's grid: it is scored after nearest resampling onto the truth grid."""


def load_truth_mask(masks_dir: Path, case_id: str, lesion_class: str) -> Volume | None:
    """True lesion mask of a case (boolean, in its own grid); None if absent."""
    path = _mask_path(masks_dir / case_id / "segmentations", lesion_class)
    if path is None:
        return None
    truth = load_nifti(path)
    return truth.with_array(truth.array > 0)


def same_grid(a: Volume, b: Volume, tol_mm: float = GRID_TOLERANCE_MM) -> bool:
    """True when both volumes have the same shape and affines within ``tol_mm``."""
    return a.shape == b.shape and bool(np.allclose(a.affine, b.affine, atol=tol_mm))


def on_grid(volume: Volume, reference: Volume) -> Volume:
    """``volume`` on ``reference``'s grid: itself when the grids agree, else nearest-neighbour resampled
    through both affines (``rsuper.io.resample_to_grid``, scipy), so masks keep their values."""
    if same_grid(volume, reference):
        return volume
    return resample_to_grid(volume, reference.shape, reference.affine, order=0)


def grid_text(volume: Volume) -> str:
    """``shape 30x30x30, 1x1x1 mm, RAS`` for messages."""
    spacing = "x".join(f"{s:.3g}" for s in volume.spacing_mm)
    return f"shape {'x'.join(map(str, volume.shape))}, {spacing} mm, {volume.orientation}"
