"""Report-style facts from predicted lesion masks: connected components -> count, volume, diameters, location.

Components are 26-connected (cc3d). For each component:

- ``volume_mm3`` = voxel count x voxel volume (mm^3).
- ``diameters_mm`` = the component's extents along its three principal axes, largest first: voxel
  centres (in mm, array axes scaled by ``spacing_mm``) are projected on the eigenvectors of their
  covariance, extent = max - min of the projections + the voxel's length along that axis
  (``sqrt(sum((u_i * s_i)^2))``), so a single voxel measures one voxel and a digital ball of diameter
  d measures about d along every axis.
- ``max_probability`` = the largest lesion probability inside the component (when given).
- ``location`` = the report location token ("head", "segment 7", "left", ...) of the sub-segment that
  overlaps the component most (docs/method.md §2 tokens, via ``rsuper.labels``); empty when no
  sub-segment mask overlaps it (unknown location, "u").

Example:
    >>> comps = lesion_components(mask, spacing_mm=(1.0, 1.0, 2.0))
    >>> comps[0]["volume_mm3"], comps[0]["diameters_mm"]
"""

from __future__ import annotations

from typing import Any

import cc3d
import numpy as np

from rsuper import labels


def component_labels(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels the 26-connected components of a binary (X, Y, Z) mask; returns (labels uint32, count)."""
    labelled, count = cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=26,
                                                return_N=True)
    return labelled, int(count)


MAX_COMPONENTS = 100


def _component_geometry(labelled: np.ndarray, count: int, spacing_mm: tuple[float, float, float]
                        ) -> dict[str, np.ndarray]:
    """Per-component voxel indices and geometry, vectorised over all components (no Python loop).

    Returns flat indices ``idx`` sorted by label, ``starts`` (first position of each label in ``idx``),
    ``counts``, ``coords`` (N, 3), ``centroid`` (K, 3 voxels), ``lo``/``hi`` bounding boxes and
    ``diameters`` (K, 3, mm, descending) as defined in the module docstring.
    """
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    flat = labelled.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx]
    order = np.argsort(lab, kind="stable")
    idx, lab = idx[order], lab[order].astype(np.int64) - 1
    starts = np.searchsorted(lab, np.arange(count))
    counts = np.diff(np.append(starts, len(lab)))
    coords = np.stack(np.unravel_index(idx, labelled.shape), axis=1)
    centroid = np.add.reduceat(coords.astype(np.float64), starts, axis=0) / counts[:, None]
    centred = (coords - centroid[lab]) * spacing
    cov = np.empty((count, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            cov[:, i, j] = cov[:, j, i] = np.add.reduceat(centred[:, i] * centred[:, j], starts)
    _, axes = np.linalg.eigh(cov)  # columns are the principal axes; identity for single voxels
    voxel_length = np.sqrt(((axes * spacing[None, :, None]) ** 2).sum(axis=1))  # (K, 3)
    extents = np.empty((count, 3))
    for j in range(3):
        proj = (centred * axes[lab, :, j]).sum(axis=1)
        extents[:, j] = np.maximum.reduceat(proj, starts) - np.minimum.reduceat(proj, starts)
    diameters = -np.sort(-(extents + voxel_length), axis=1)
    return {"idx": idx, "starts": starts, "counts": counts, "coords": coords, "centroid": centroid,
            "lo": np.minimum.reduceat(coords, starts, axis=0), "hi": np.maximum.reduceat(coords, starts, axis=0) + 1,
            "diameters": diameters}


def lesion_components(
    mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    probability: np.ndarray | None = None,
    subsegments: dict[str, np.ndarray] | None = None,
    organ: str | None = None,
    affine: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Describes the connected components of a binary lesion mask (X, Y, Z), largest volume first.

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
    geo = _component_geometry(labelled, count, spacing_mm)
    starts, counts = geo["starts"], geo["counts"]
    max_p = np.maximum.reduceat(probability.ravel()[geo["idx"]], starts) if probability is not None else None
    overlaps = {name: np.add.reduceat(sub.ravel()[geo["idx"]].astype(np.int64), starts)
                for name, sub in (subsegments or {}).items()}
    voxel_mm3 = float(np.prod(spacing_mm))
    components = []
    for k in np.argsort(-counts, kind="stable"):
        diameters = [round(float(d), 2) for d in geo["diameters"][k]]
        comp: dict[str, Any] = {
            "voxels": int(counts[k]),
            "volume_mm3": round(float(counts[k]) * voxel_mm3, 3),
            "diameters_mm": diameters,
            "largest_diameter_mm": diameters[0],
            "centroid_vox": [round(float(c), 2) for c in geo["centroid"][k]],
            "bbox_vox": [[int(a), int(b)] for a, b in zip(geo["lo"][k], geo["hi"][k])],
        }
        if affine is not None:
            comp["centroid_mm"] = [round(float(c), 2) for c in (affine @ np.append(geo["centroid"][k], 1.0))[:3]]
        if max_p is not None:
            comp["max_probability"] = round(float(max_p[k]), 4)
        if subsegments:
            hits = {name: int(v[k]) for name, v in overlaps.items() if v[k] > 0}
            best = max(hits, key=lambda name: hits[name]) if hits else None
            comp["location"] = [labels.subsegment_token(organ or "", best) or best] if best else []
            comp["subsegment_overlap_vox"] = hits
        components.append(comp)
    return components


def organ_summary(organ: str, lesion_class: str, components: list[dict[str, Any]],
                  max_listed: int = MAX_COMPONENTS) -> dict[str, Any]:
    """Per-organ summary in the spirit of the per-CT report table: count, total volume (mm^3), largest
    diameter (mm), largest component probability, and the ``max_listed`` largest components."""
    return {
        "organ": organ,
        "lesion_class": lesion_class,
        "count": len(components),
        "total_volume_mm3": round(sum(c["volume_mm3"] for c in components), 3),
        "largest_diameter_mm": max((c["largest_diameter_mm"] for c in components), default=0.0),
        "max_probability": max((c.get("max_probability", 0.0) for c in components), default=0.0),
        "components_listed": min(len(components), max_listed),
        "components": components[:max_listed],
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
