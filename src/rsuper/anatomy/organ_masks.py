"""Organ masks in, canonical per-class files out: ``OUT/<case>/segmentations/<class>.nii.gz`` on the CT grid.

Sources, highest priority first (a class comes from the first source that has it):
1. the dataset's own masks (AbdomenAtlas / MerlinPlus per-class files, nnU-Net label map + dataset.json,
   read through ``rsuper.data.cases``);
2. extra per-class folders (``masks_dirs``: TotalSegmentator's default output ``<dir>/<case>/*.nii.gz``
   or ``<dir>/<case>/segmentations/*.nii.gz``);
3. multilabel maps (TotalSegmentator ``--ml``; ids from the file's own header table, else the ``total``
   or ``liver_segments`` table).
Every mask is checked against the CT grid: same grid is used as is, the same voxels in another axis
order/flip are reoriented losslessly, anything else is a ``GridMismatchError`` naming the file.

Then missing sub-segments are derived (``rsuper.anatomy.subsegments``): pancreas head/body/tail, kidney
sides from a combined ``kidney`` mask; liver segments only come from TotalSegmentator ``liver_segments``
(no geometric guess: Couinaud segments follow the hepatic and portal veins, and a wrong segment would
teach the Ball Loss a wrong region; without them liver locations stay unknown downstream).

Example:
    >>> summary = process_case(case, "organs_out", ml_paths=[Path("ts/case1.nii.gz")])
    >>> summary["derived"]
    ['pancreas_head', 'pancreas_body', 'pancreas_tail']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rsuper import __version__, labels
from rsuper.anatomy import subsegments, totalseg
from rsuper.atomic import write_json_atomic
from rsuper.data.cases import Case, find_mask_files
from rsuper.io import Volume, from_canonical, load_nifti, save_nifti, to_canonical

DEFAULT_CLASSES: tuple[str, ...] = labels.ORGAN_CLASSES + labels.SUBSEGMENT_CLASSES
SUMMARY_NAME = "organs.json"
AFFINE_TOLERANCE_MM = 1e-3


class GridMismatchError(ValueError):
    """A mask whose grid (shape, affine) is not the CT's."""


@dataclass
class OrganMasks:
    """Boolean masks of one case on its CT grid, with where each came from.

    Attributes:
        ct: the CT volume (own orientation); masks share its shape and affine.
        masks: canonical class -> (X, Y, Z) bool array.
        sources: class -> source description (file path, ``derived: ...``).
        warnings: human-readable problems found while collecting (empty masks, unknown ids, ...).
    """

    ct: Volume
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add(self, name: str, mask: np.ndarray, source: str) -> None:
        """Adds ``mask`` as class ``name`` unless an earlier (higher-priority) source already gave it."""
        name = labels.canonical_class_name(name)
        if name not in self.masks:
            self.masks[name] = np.asarray(mask, dtype=bool)
            self.sources[name] = source


def align_to_grid(mask: Volume, reference: Volume, source: str) -> np.ndarray:
    """``mask``'s array on ``reference``'s grid; raises ``GridMismatchError`` naming ``source`` otherwise.

    Same shape and affine (within 1e-3 mm) -> the array as is. The same voxels stored in another axis
    order or flip (e.g. an LPS-written mask of a RAS CT) -> reoriented without interpolation.
    """
    if mask.shape == reference.shape and np.allclose(mask.affine, reference.affine, atol=AFFINE_TOLERANCE_MM):
        return mask.array
    canon_mask, canon_ref = to_canonical(mask), to_canonical(reference)
    if canon_mask.shape == canon_ref.shape and np.allclose(
        canon_mask.affine, canon_ref.affine, atol=AFFINE_TOLERANCE_MM
    ):
        ref_axes = Volume(np.zeros(reference.shape, dtype=np.uint8), reference.affine)
        return from_canonical(canon_mask, ref_axes).array
    raise GridMismatchError(
        f"{source}: mask grid does not match the CT grid (mask shape {mask.shape}, orientation "
        f"{mask.orientation}, spacing {np.round(mask.spacing_mm, 3).tolist()} mm; CT shape {reference.shape}, "
        f"orientation {reference.orientation}, spacing {np.round(reference.spacing_mm, 3).tolist()} mm; "
        f"max affine difference {np.abs(canon_mask.affine - canon_ref.affine).max():.4g} mm). Masks must be "
        "segmented on this CT; resample the mask onto the CT (nearest neighbour) or use the matching CT."
    )


def masks_from_label_map(
    array: np.ndarray, id_to_name: dict[int, str], source: str | os.PathLike[str] | None = None
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Binary masks of every named id in a label map, and the sorted ids present but not named.

    Names that are not plain class names raise ``labels.ClassNameError`` naming ``source`` (the label map).
    """
    present = {int(v) for v in np.unique(array) if v != 0}
    masks = {labels.canonical_class_name(name, source): array == i for i, name in id_to_name.items() if i in present}
    return masks, sorted(present - set(id_to_name))


def read_label_map(path: str | os.PathLike[str], task: str | None = None) -> tuple[Volume, dict[int, str], str]:
    """Loads a multilabel map and its id table: the file's header table, else the ``task`` table.

    ``task`` None guesses from the file name (``liver_segments`` in it) and defaults to ``total``.
    Returns (volume, id -> name, description of the table used).
    """
    volume = load_nifti(path)
    if not np.issubdtype(volume.array.dtype, np.integer):
        rounded = np.rint(volume.array)
        if not np.allclose(rounded, volume.array):
            raise ValueError(f"{path} is not a label map: it holds non-integer values")
        volume = volume.with_array(rounded.astype(np.int32))
    names = totalseg.label_names_from_header(path)
    if names:
        return volume, names, "ids from the file's header"
    chosen = task or totalseg.guess_task(path)
    return volume, totalseg.task_ids(chosen), f"TotalSegmentator '{chosen}' ids"


def collect_masks(
    case: Case,
    ml_paths: Sequence[Path] = (),
    masks_dirs: Sequence[Path] = (),
    ml_task: str | None = None,
) -> OrganMasks:
    """Reads every source of one case onto its CT grid (see the module docstring for the priority)."""
    ct = load_nifti(case.ct_path)
    out = OrganMasks(ct=ct)
    for name, volume in case.load_masks().items():
        out.add(name, align_to_grid(volume, ct, str(case.mask_paths[name])), str(case.mask_paths[name]))
    for folder in masks_dirs:
        for sub in (Path(folder) / case.case_id / "segmentations", Path(folder) / case.case_id):
            for name, path in find_mask_files(sub).items():
                volume = load_nifti(path)
                out.add(name, align_to_grid(volume, ct, str(path)) != 0, str(path))
    for path in ml_paths:
        volume, id_to_name, how = read_label_map(path, ml_task)
        array = align_to_grid(volume, ct, str(path))
        masks, unknown = masks_from_label_map(array, id_to_name, path)
        if unknown:
            out.warnings.append(f"{path}: label ids {unknown} are not in the {how}; ignored")
        for name, mask in masks.items():
            out.add(name, mask, f"{path} ({how})")
    return out


def derive_subsegments(organs: OrganMasks, boundaries: tuple[float, float] = subsegments.PANCREAS_BOUNDARIES) -> list[str]:
    """Adds the missing sub-segments that can be derived; returns their names. Problems go to ``warnings``."""
    derived: list[str] = []
    affine = organs.ct.affine
    masks = organs.masks
    parts_present = [p for p in labels.PANCREAS_PARTS if p in masks]
    if "pancreas" in masks and not parts_present:
        if masks["pancreas"].any():
            for name, part in subsegments.split_pancreas(masks["pancreas"], affine, boundaries).items():
                organs.add(name, part, f"derived: pancreas centre line, boundaries {[round(float(b), 4) for b in boundaries]}")
                derived.append(name)
        else:
            organs.warnings.append("pancreas mask is empty: head/body/tail not derived (pancreas locations unknown)")
    elif "pancreas" in masks and len(parts_present) < 3:
        organs.warnings.append(
            f"only {parts_present} of the pancreas parts were given; kept as they are, the others are missing"
        )
    combined = next((k for k in ("kidney", "kidneys") if k in masks), None)
    sides = [s for s in ("kidney_left", "kidney_right") if s in masks]
    if combined and not sides:
        if masks[combined].any():
            midline = subsegments.body_midline_x_mm(organs.ct.array, affine)
            for name, side in subsegments.split_kidneys(masks[combined], affine, midline_x_mm=midline).items():
                organs.add(name, side, f"derived: patient side of {organs.sources[combined]} (world x, RAS)")
                derived.append(name)
        else:
            organs.warnings.append(f"{combined} mask is empty: kidney sides not derived")
    if len(sides) == 2:
        flipped = subsegments.check_kidney_sides(
            masks["kidney_left"], masks["kidney_right"], affine, organs.sources["kidney_left"]
        )
        if flipped:
            organs.warnings.append(flipped)
    segments = [s for s in labels.LIVER_SEGMENTS if s in masks]
    if segments and "liver" not in masks:
        organs.add("liver", np.logical_or.reduce([masks[s] for s in segments]), "derived: union of liver segments")
        derived.append("liver")
    return derived


def empty_mask_warnings(organs: OrganMasks, classes: tuple[str, ...] | list[str]) -> list[str]:
    """One warning per written organ/sub-segment mask that has no voxel."""
    return [
        f"empty mask: {name} (from {organs.sources[name]}); an empty organ file means 'organ absent' downstream"
        for name in classes
        if name in organs.masks and not organs.masks[name].any()
    ]


def case_is_done(out_dir: str | os.PathLike[str], case_id: str) -> bool:
    """True when ``OUT/<case>/organs.json`` exists (it is written last, atomically)."""
    return (Path(out_dir) / case_id / SUMMARY_NAME).is_file()


def process_case(
    case: Case,
    out_dir: str | os.PathLike[str],
    ml_paths: Sequence[Path] = (),
    masks_dirs: Sequence[Path] = (),
    ml_task: str | None = None,
    classes: tuple[str, ...] | list[str] | None = DEFAULT_CLASSES,
    boundaries: tuple[float, float] = subsegments.PANCREAS_BOUNDARIES,
    preview: bool = False,
) -> dict:
    """Collects, derives and writes one case; returns the summary also written to ``OUT/<case>/organs.json``.

    Args:
        case: the CT and its own masks (``rsuper.data.cases.Case``); inputs are only read.
        out_dir: output root; files go to ``out_dir/<case>/segmentations/<class>.nii.gz`` (uint8, CT grid).
        ml_paths: multilabel maps of this case; masks_dirs: extra per-class folders (see module docstring).
        ml_task: id table for label maps without a header table (None: guess from the name, else ``total``).
        classes: classes to write (default: organs and sub-segments); None writes every class found.
        boundaries: pancreas head/body and body/tail centre-line fractions.
        preview: also write ``out_dir/<case>/preview.png``.
    """
    organs = collect_masks(case, ml_paths, masks_dirs, ml_task)
    derived = derive_subsegments(organs, boundaries)
    wanted = sorted(organs.masks) if classes is None else [c for c in classes if c in organs.masks]
    organs.warnings.extend(empty_mask_warnings(organs, wanted))
    case_dir = Path(out_dir) / case.case_id
    voxel_ml = float(np.prod(organs.ct.spacing_mm)) / 1000.0
    written = {}
    for name in wanted:
        path = case_dir / "segmentations" / f"{name}.nii.gz"
        save_nifti(organs.ct.with_array(organs.masks[name].astype(np.uint8)), path, np.uint8)
        voxels = int(organs.masks[name].sum())
        written[name] = {"source": organs.sources[name], "voxels": voxels, "volume_ml": round(voxels * voxel_ml, 3)}
    if preview:
        from rsuper.anatomy.preview import write_preview

        write_preview(organs.ct, organs.masks, case_dir / "preview.png", title=case.case_id)
    summary = {
        "case_id": case.case_id,
        "ct": str(case.ct_path),
        "rsuper_version": __version__,
        "classes": written,
        "derived": [d for d in derived if d in written],
        "liver_segments": "totalsegmentator" if any(s in written for s in labels.LIVER_SEGMENTS) else "none",
        "pancreas_boundaries": list(boundaries),
        "warnings": organs.warnings,
    }
    write_json_atomic(case_dir / SUMMARY_NAME, summary)
    return summary
