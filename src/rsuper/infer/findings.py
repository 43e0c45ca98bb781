"""Report-style facts from predicted lesion masks: connected components -> count, volume, diameters, location.

Components are 26-connected (cc3d). For each component:

- ``volume_mm3`` = voxel count x voxel volume (mm^3).
- ``diameters_mm`` = the component's extents along its three principal axes, largest first: voxel
  centres (in mm, array axes scaled by ``spacing_mm``) are projected on the eigenvectors of their
  covariance, extent = max - min of the projections + the voxel's length along that axis
  (``sqrt(sum((u_i * s_i)^2))``), so a single voxel measures one voxel and a digital ball of diameter
  d measures about d along every axis.
- ``max_probability`` = the largest lesion probability inside the component (when given).
- ``location`` = the report location tokens ("head", "segment 7", "left", ...) of the sub-segment that
  overlaps the component most (METHOD.md §2 tokens, via ``rsuper.anatomy.labels``); empty when no
  sub-segment mask overlaps it (unknown location, "u").

Example:
    >>> comps = lesion_components(mask, spacing_mm=(1.0, 1.0, 2.0))
    >>> comps[0]["volume_mm3"], comps[0]["diameters_mm"]
"""

from __future__ import annotations

from typing import Any

import cc3d
import numpy as np

from rsuper.anatomy import labels


def component_labels(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels the 26-connected components of a binary (X, Y, Z) mask; returns (labels uint32, count)."""
    labelled, count = cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=26,
                                                return_N=True)
    return labelled, int(count)


def principal_diameters_mm(coords_vox: np.ndarray, spacing_mm: tuple[float, float, float]) -> list[float]:
    """Extents (mm, largest first) of a voxel set along its principal axes; ``coords_vox`` is (N, 3)."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    points = coords_vox.astype(np.float64) * spacing
    if len(points) == 1:
        return sorted((float(s) for s in spacing), reverse=True)
    centred = points - points.mean(axis=0)
    _, axes = np.linalg.eigh(centred.T @ centred)
    projections = centred @ axes
    voxel_length = np.sqrt(((axes * spacing[:, None]) ** 2).sum(axis=0))
    extents = projections.max(axis=0) - projections.min(axis=0) + voxel_length
    return sorted((float(e) for e in extents), reverse=True)


def _location_tokens(organ: str | None, subsegments: dict[str, np.ndarray], voxels: tuple[np.ndarray, ...]
                     ) -> tuple[list[str], dict[str, int]]:
    """Tokens of the sub-segment with the largest overlap with the component, and all overlaps (voxels)."""
    overlaps = {name: int(np.count_nonzero(mask[voxels])) for name, mask in subsegments.items()}
    overlaps = {name: n for name, n in overlaps.items() if n > 0}
    if not overlaps:
        return [], {}
    best = max(overlaps, key=lambda name: overlaps[name])
    token_of_class = {cls: tok for tok, cls in labels.SUBSEGMENTS_OF_ORGAN.get(organ or "", {}).items()}
    return [token_of_class.get(best, best)], overlaps


def lesion_components(
    mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    probability: np.ndarray | None = None,
    subsegments: dict[str, np.ndarray] | None = None,
    organ: str | None = None,
    affine: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Describes every connected component of a binary lesion mask (X, Y, Z), largest volume first.

    Args:
        mask: binary lesion mask.
        spacing_mm: voxel size along the array axes (mm).
        probability: optional lesion probability on the same grid (for ``max_probability``).
        subsegments: optional ``{class name: binary mask}`` of the organ's sub-segments, same grid.
        organ: report organ of the lesion channel (maps sub-segment classes to report tokens).
        affine: optional voxel-to-world affine; adds ``centroid_mm`` (world coordinates).

    Returns:
        One dict per component: ``volume_mm3``, ``voxels``, ``diameters_mm`` (3, mm, descending),
        ``largest_diameter_mm``, ``centroid_vox``, ``bbox_vox`` ([start, stop) per axis), optional
        ``centroid_mm``, ``max_probability``, ``location`` (tokens) and ``subsegment_overlap_vox``.
    """
    labelled, count = component_labels(mask)
    if count == 0:
        return []
    voxel_mm3 = float(np.prod(spacing_mm))
    stats = cc3d.statistics(labelled)
    components = []
    for label in range(1, count + 1):
        slices = stats["bounding_boxes"][label]
        local = np.nonzero(labelled[slices] == label)
        offset = np.array([s.start for s in slices])
        coords = np.stack(local, axis=1) + offset
        voxels = tuple(coords.T)
        diameters = principal_diameters_mm(coords, spacing_mm)
        centroid = coords.mean(axis=0)
        comp: dict[str, Any] = {
            "voxels": int(len(coords)),
            "volume_mm3": round(len(coords) * voxel_mm3, 3),
            "diameters_mm": [round(d, 2) for d in diameters],
            "largest_diameter_mm": round(diameters[0], 2),
            "centroid_vox": [round(float(c), 2) for c in centroid],
            "bbox_vox": [[int(s.start), int(s.stop)] for s in slices],
        }
        if affine is not None:
            comp["centroid_mm"] = [round(float(c), 2) for c in (affine @ np.append(centroid, 1.0))[:3]]
        if probability is not None:
            comp["max_probability"] = round(float(probability[voxels].max()), 4)
        if subsegments:
            comp["location"], comp["subsegment_overlap_vox"] = _location_tokens(organ, subsegments, voxels)
        components.append(comp)
    components.sort(key=lambda c: c["volume_mm3"], reverse=True)
    return components


def organ_summary(organ: str, lesion_class: str, components: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-organ summary in the spirit of the per-CT report table (count, total volume, largest diameter)."""
    return {
        "organ": organ,
        "lesion_class": lesion_class,
        "count": len(components),
        "total_volume_mm3": round(sum(c["volume_mm3"] for c in components), 3),
        "largest_diameter_mm": max((c["largest_diameter_mm"] for c in components), default=0.0),
        "max_probability": max((c.get("max_probability", 0.0) for c in components), default=0.0),
        "components": components,
    }


def report_style_lesions(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lesion records shaped like ``rsuper.reports.schema.Lesion`` (organ, location, size_mm, multiple)."""
    lesions = []
    for summary in summaries:
        for comp in summary["components"]:
            lesions.append({
                "organ": summary["organ"],
                "location": comp.get("location", []),
                "size_mm": [round(d, 1) for d in comp["diameters_mm"]],
                "multiple": False,
                "volume_mm3": comp["volume_mm3"],
                "certainty": "u",
                "evidence": f"predicted {summary['lesion_class']} component, max p "
                            f"{comp.get('max_probability', float('nan')):.2f}",
            })
    return lesions
