"""`rsuper export-nnunet`: mask CTs + report CTs -> one nnU-Net v2 raw dataset and its report sidecar.

Written (docs/nnunet.md has the reasons)::

    OUT/dataset.json                      channel "CT", labels {background: 0, <organs / sub-segments>,
                                          <lesions>, ignore: last}, file_ending ".nii.gz", an "rsuper" block
    OUT/imagesTr/<case>_0000.nii.gz       the CT (values as given, the label map's affine)
    OUT/labelsTr/<case>.nii.gz            one uint8 label map on the CT's grid
    OUT/imagesTs/<case>_0000.nii.gz       with ``test``: CTs to predict (no labels)
    OUT/rsuper_reports.json               the sidecar: per case its kind, its lesion-unknown labels and, for
                                          report CTs, the tumor groups (label ids, volumes mm^3, diameters mm)

Label values. Organs and sub-segments are label values (pancreas head/body/tail, liver segments 1-8 when every
case has them, else the whole organ), then one lesion label per target organ. A report CT's label map has no
lesion voxel and keeps the sub-segment values where its tumors are: the sidecar says which label values are
"lesion unknown" in that CT, and the trainers turn those voxels into nnU-Net's ignore label after augmentation,
so the report's region is still recoverable from the augmented label patch. Nothing here imports nnunetv2.

Example:
    >>> summary = export_nnunet("data/masks", "data/reports", "extract/tumors.csv", ["organs"],
    ...                         "nnUNet_raw/Dataset501_RSuper")
    >>> summary["cases"]["mask"], summary["cases"]["report"]
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsuper import __version__, labels
from rsuper.anatomy.organ_masks import collect_masks, derive_subsegments
from rsuper.atomic import atomic_dir, write_json_atomic
from rsuper.data.cases import Case, discover_cases, find_mask_files
from rsuper.data.reportcases import build_report_supervision
from rsuper.io import load_nifti, save_nifti
from rsuper.reports.tables import read_tumors_csv

SIDECAR_NAME = "rsuper_reports.json"
SIDECAR_FORMAT = "rsuper-nnunet-sidecar"
SIDECAR_VERSION = 1
FILE_ENDING = ".nii.gz"
DATASET_NAME = re.compile(r"Dataset(\d{3})_([A-Za-z0-9_\-]+)")
DEFAULT_TARGET_ORGANS = ("pancreas", "kidney", "liver")
# Organs whose sub-segments partition them: the parts replace the organ as label values when every case has them.
PARTS_OF_ORGAN: dict[str, tuple[str, ...]] = {"pancreas": labels.PANCREAS_PARTS, "liver": labels.LIVER_SEGMENTS}


class ExportError(ValueError):
    """The inputs cannot make one consistent nnU-Net dataset (the message names the input and the fix)."""


@dataclass
class LabelPlan:
    """Label values of the exported dataset.

    Attributes:
        names: label name -> value; 0 is background, ``ignore`` the last value.
        organ_labels: organ / sub-segment labels in painting order.
        lesion_labels: one lesion label per target organ.
        virtual: organs that are not a label themselves but the union of their part labels (``pancreas``).
    """

    organ_labels: list[str]
    lesion_labels: list[str]
    virtual: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def names(self) -> dict[str, int]:
        out = {"background": 0}
        for name in [*self.organ_labels, *self.lesion_labels]:
            out[name] = len(out)
        out["ignore"] = len(out)
        return out

    def ids_of(self, mask_class: str) -> list[int]:
        """Label values whose union is ``mask_class`` (a label itself, or an organ made of part labels)."""
        names = self.names
        if mask_class in names:
            return [names[mask_class]]
        if mask_class in self.virtual:
            return [names[p] for p in self.virtual[mask_class]]
        raise KeyError(mask_class)

    def available(self) -> set[str]:
        """Mask classes a report may name: the labels and the virtual organs."""
        return set(self.organ_labels) | set(self.virtual)


def class_names_of(case: Case, organs_dirs: Sequence[Path]) -> set[str]:
    """Mask classes a case will have after ``collect_masks`` + ``derive_subsegments`` (file names only)."""
    names = set(case.classes)
    for folder in organs_dirs:
        for sub in (Path(folder) / case.case_id / "segmentations", Path(folder) / case.case_id):
            names |= set(find_mask_files(sub))
    if "pancreas" in names and not set(labels.PANCREAS_PARTS) & names:
        names |= set(labels.PANCREAS_PARTS)
    if "kidney" in names and not {"kidney_left", "kidney_right"} & names:
        names |= {"kidney_left", "kidney_right"}
    if set(labels.LIVER_SEGMENTS) & names:
        names.add("liver")
    return names


def plan_labels(class_sets: Sequence[set[str]], target_organs: Sequence[str]) -> LabelPlan:
    """Organ labels present in every case (parts instead of the organ when every case has all parts)."""
    common = set.intersection(*class_sets) if class_sets else set()
    organ_labels: list[str] = []
    virtual: dict[str, tuple[str, ...]] = {}
    for organ in labels.ORGAN_CLASSES:
        parts = PARTS_OF_ORGAN.get(organ, ())
        if parts and set(parts) <= common:
            organ_labels += list(parts)
            virtual[organ] = parts
        elif organ in common:
            organ_labels.append(organ)
    lesion_labels = [labels.lesion_class(o) for o in target_organs]
    missing = [o for o in target_organs if not set(labels.ORGAN_MASK_CLASSES[o]) <= (set(organ_labels) | set(virtual))]
    if missing:
        raise ExportError(
            f"target organ(s) {missing} have no mask in every case; every case needs "
            f"{[labels.ORGAN_MASK_CLASSES[o] for o in missing]} (run `rsuper organs` and pass --organs)")
    return LabelPlan(organ_labels, lesion_labels, virtual)


def _is_mask_case(classes: set[str], lesion_labels: Sequence[str]) -> bool:
    return bool(classes & set(lesion_labels))


@dataclass
class ExportedCase:
    """One case to write: where it came from and what kind it is."""

    case: Case
    source: str  # "masks" or "reports"
    classes: set[str]
    kind: str = ""


def _label_map(masks: dict[str, np.ndarray], plan: LabelPlan, paint_lesions: bool, shape: tuple[int, ...]) -> np.ndarray:
    names = plan.names
    out = np.zeros(shape, np.uint8)
    for name in plan.organ_labels:
        out[masks[name]] = names[name]
    if paint_lesions:
        for name in plan.lesion_labels:
            if name in masks:
                out[masks[name]] = names[name]
    return out


def _report_facts(findings: Any, plan: LabelPlan, target_organs: Sequence[str], label_map: np.ndarray,
                  voxel_mm3: float, max_tumors: int) -> tuple[dict[str, Any] | None, str]:
    """Sidecar entry of a report CT, or (None, reason) when it cannot be used."""
    sup = build_report_supervision(findings, plan.available(), [*plan.lesion_labels, *plan.available()],
                                   target_organs, max_tumors)
    if sup.unknown_everywhere:
        return None, (f"lesion(s) reported in an organ without mask ({sorted(sup.unknown_everywhere)}): "
                      "its tumors could be anywhere")
    names = plan.names
    unknown = {lesion: sorted({i for c in classes for i in plan.ids_of(c)}) for lesion, classes in sup.unknown.items()}
    groups = []
    for group in sup.groups:
        ids = sorted({i for c in group.mask_classes for i in plan.ids_of(c)})
        groups.append({
            "organ": group.organ, "lesion_class": group.lesion_class, "lesion_label": names[group.lesion_class],
            "classes": list(group.mask_classes), "labels": ids, "organ_level": group.organ_level,
            "volumes_mm3": [round(v, 3) for v in group.volumes_mm3],
            "diameters_mm": [round(d, 3) for d in group.diameters_mm],
            "usable": group.usable, "reason": group.reason,
            "group_volume_mm3": round(float(np.isin(label_map, ids).sum()) * voxel_mm3, 3),
        })
    return {"kind": "report", "healthy": sup.healthy, "unknown_labels": unknown, "groups": groups}, ""


def _check_name(out: Path) -> tuple[int, str]:
    match = DATASET_NAME.fullmatch(out.name)
    if match is None:
        raise ExportError(f"--out must end in a folder named DatasetNNN_Name (3 digits), got {out.name!r}, "
                          "e.g. nnUNet_raw/Dataset501_RSuper")
    return int(match.group(1)), match.group(2)


def export_nnunet(
    masks: str | os.PathLike[str] | None,
    reports: str | os.PathLike[str] | None,
    tumors: str | os.PathLike[str] | None,
    organs_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    test: str | os.PathLike[str] | None = None,
    target_organs: Sequence[str] = DEFAULT_TARGET_ORGANS,
    max_tumors: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Writes the nnU-Net raw dataset ``out`` (see the module docstring); returns the summary it also stores.

    Args:
        masks: dataset of mask CTs (AbdomenAtlas or nnU-Net raw layout), or None.
        reports: dataset of report CTs (CT + organ masks, no lesion file), or None.
        tumors: ``tumors.csv`` of the report CTs (``rsuper extract``); needed with ``reports``.
        organs_dirs: ``rsuper organs`` outputs (``DIR/<case>/segmentations/<class>.nii.gz``) for any case.
        out: ``.../DatasetNNN_Name``; replaced atomically when it exists.
        test: optional dataset whose CTs go to ``imagesTs`` (to run ``nnUNetv2_predict`` on).
        target_organs: organs with a lesion label.
        max_tumors: groups with more tumors are not usable (as in ``rsuper train``).
    Raises:
        ExportError: inconsistent inputs (no cases, duplicate ids, a target organ without masks, ...).
    """
    out = Path(out)
    number, _ = _check_name(out)
    unknown_organs = [o for o in target_organs if o not in labels.LESION_CLASS_OF_ORGAN]
    if unknown_organs:
        raise ExportError(f"unknown target organ(s) {unknown_organs}; known: {sorted(labels.LESION_CLASS_OF_ORGAN)}")
    if reports is not None and tumors is None:
        raise ExportError("--reports needs --tumors (the tumors.csv written by `rsuper extract`)")
    organs_paths = [Path(d) for d in organs_dirs]
    for folder in organs_paths:
        if not folder.is_dir():
            raise ExportError(f"--organs folder not found: {folder}")
    findings = read_tumors_csv(tumors) if tumors is not None else {}
    lesion_labels = [labels.lesion_class(o) for o in target_organs]
    todo: dict[str, ExportedCase] = {}
    for source, root in (("masks", masks), ("reports", reports)):
        if root is None:
            continue
        for case in discover_cases(root):
            if case.case_id in todo:
                raise ExportError(f"case id {case.case_id!r} is in both {todo[case.case_id].case.ct_path.parent} "
                                  f"and {case.ct_path.parent}; nnU-Net case ids must be unique")
            todo[case.case_id] = ExportedCase(case, source, class_names_of(case, organs_paths))
    if not todo:
        raise ExportError("no cases: give --masks and/or --reports")
    skipped: dict[str, str] = {}
    for cid, item in list(todo.items()):
        if _is_mask_case(item.classes, lesion_labels):
            item.kind = "mask"
        elif cid in findings and findings[cid].error is None:
            item.kind = "report"
        else:
            skipped[cid] = ("no lesion mask and no report facts in --tumors" if cid not in findings
                            else f"report extraction failed ({findings[cid].error})")
            del todo[cid]
    if not todo:
        raise ExportError(f"no usable case: {skipped}")
    plan = plan_labels([item.classes for item in todo.values()], target_organs)
    names = plan.names
    test_cases = discover_cases(test) if test is not None else []
    sidecar_cases: dict[str, Any] = {}
    counts = {"mask": 0, "report": 0}
    with atomic_dir(out) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        total = len(todo) + len(test_cases)
        for i, (cid, item) in enumerate(sorted(todo.items())):
            organs = collect_masks(item.case, masks_dirs=organs_paths)
            derive_subsegments(organs)
            missing = [c for c in plan.organ_labels if c not in organs.masks]
            if missing:
                skipped[cid] = f"masks {missing} could not be read or derived ({organs.warnings})"
                continue
            ct = organs.ct
            voxel_mm3 = float(np.prod(ct.spacing_mm))
            label_map = _label_map(organs.masks, plan, item.kind == "mask", ct.shape)
            if item.kind == "mask":
                absent = [o for o in target_organs if labels.lesion_class(o) not in organs.masks]
                unknown = {labels.lesion_class(o): sorted({i for c in labels.ORGAN_MASK_CLASSES[o]
                                                           for i in plan.ids_of(c)}) for o in absent}
                entry: dict[str, Any] | None = {"kind": "mask", "unknown_labels": unknown}
            else:
                entry, reason = _report_facts(findings[cid], plan, target_organs, label_map, voxel_mm3, max_tumors)
                if entry is None:
                    skipped[cid] = reason
                    continue
            entry.update({"source": item.source, "spacing_mm": [round(float(s), 6) for s in ct.spacing_mm],
                          "shape": list(ct.shape)})
            save_nifti(ct, tmp / "imagesTr" / f"{cid}_0000{FILE_ENDING}")
            save_nifti(ct.with_array(label_map), tmp / "labelsTr" / f"{cid}{FILE_ENDING}", np.uint8)
            sidecar_cases[cid] = entry
            counts[entry["kind"]] += 1
            if progress is not None:
                progress(i + 1, total)
        if test_cases:
            (tmp / "imagesTs").mkdir()
            for j, case in enumerate(test_cases):
                save_nifti(load_nifti(case.ct_path), tmp / "imagesTs" / f"{case.case_id}_0000{FILE_ENDING}")
                if progress is not None:
                    progress(len(todo) + j + 1, total)
        if not sidecar_cases:
            raise ExportError(f"no case could be exported: {skipped}")
        rsuper_block = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "sidecar": SIDECAR_NAME,
                        "lesion_labels": {n: names[n] for n in plan.lesion_labels},
                        "target_organs": list(target_organs), "rsuper_version": __version__}
        dataset_json = {
            "channel_names": {"0": "CT"},
            "labels": names,
            "numTraining": len(sidecar_cases),
            "file_ending": FILE_ENDING,
            "name": out.name,
            "description": "exported by rsuper export-nnunet: mask CTs and report CTs (R-Super); the report "
                           f"facts are in {SIDECAR_NAME} (docs/nnunet.md)",
            "rsuper": rsuper_block,
        }
        write_json_atomic(tmp / "dataset.json", dataset_json)
        sidecar = {**rsuper_block, "labels": names, "ignore_label": names["ignore"],
                   "virtual_organs": {k: list(v) for k, v in plan.virtual.items()}, "cases": sidecar_cases}
        write_json_atomic(tmp / SIDECAR_NAME, sidecar)
        summary = {"out": str(out), "dataset_id": number, "labels": names,
                   "cases": counts, "test_cases": len(test_cases), "skipped": skipped,
                   "usable_report_groups": sum(g["usable"] for c in sidecar_cases.values() for g in c.get("groups", []))}
        write_json_atomic(tmp / "rsuper_export.json", summary)
    return summary
