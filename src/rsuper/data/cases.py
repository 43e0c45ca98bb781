"""Find the cases of a dataset: AbdomenAtlas/R-Super layout or nnU-Net raw layout.

AbdomenAtlas / R-Super::

    ROOT/<case>/ct.nii.gz
    ROOT/<case>/segmentations/<class>.nii.gz      one binary mask per class

nnU-Net raw (v1 or v2 ``dataset.json``)::

    ROOT/dataset.json                             "labels": {name: id} (v2) or {id: name} (v1)
    ROOT/imagesTr/<case>_0000.nii.gz              (imagesTs/ too: cases without masks)
    ROOT/labelsTr/<case>.nii.gz                   one label map; class c = voxels == id

Class names pass through ``rsuper.labels.canonical_class_name``; a name that is not plain (``../x``,
``liver.v2``) raises ``DatasetLayoutError`` naming the file. For nnU-Net cases every class
points at the same label map; ``Case.mask_labels`` holds its id, and ``Case.load_mask`` extracts it.

Example:
    >>> cases = discover_cases("AbdomenAtlas")
    >>> liver = cases[0].load_mask("liver")           # Volume, uint8 {0, 1}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rsuper.io import Volume, load_nifti
from rsuper.labels import ClassNameError, canonical_class_name

NIFTI_SUFFIXES = (".nii.gz", ".nii")
CT_NAMES = ("ct.nii.gz", "ct.nii")
SEGMENTATIONS_DIR = "segmentations"


class DatasetLayoutError(ValueError):
    """The folder is not a dataset layout rsuper knows, or it contradicts itself (duplicates)."""


@dataclass
class Case:
    """One CT and its masks.

    Attributes:
        case_id: case name (folder name, or nnU-Net case identifier).
        ct_path: the CT NIfTI (Hounsfield units).
        mask_paths: canonical class name -> NIfTI holding that class.
        mask_labels: class -> label id inside a label-map file (nnU-Net); a class absent here is a
            binary mask file.
        layout: ``"abdomenatlas"`` or ``"nnunet"``.
    """

    case_id: str
    ct_path: Path
    mask_paths: dict[str, Path] = field(default_factory=dict)
    mask_labels: dict[str, int] = field(default_factory=dict)
    layout: str = "abdomenatlas"

    @property
    def classes(self) -> list[str]:
        """Canonical class names with a mask, sorted."""
        return sorted(self.mask_paths)

    def load_ct(self) -> Volume:
        """The CT as stored (own orientation and dtype)."""
        return load_nifti(self.ct_path)

    def load_mask(self, class_name: str) -> Volume:
        """The binary mask (uint8 {0, 1}) of one class in the file's own grid."""
        return self.load_masks([class_name])[class_name]

    def load_masks(self, classes: list[str] | None = None) -> dict[str, Volume]:
        """Binary masks (uint8 {0, 1}) of ``classes`` (default all); each file is read once.

        Raises ``KeyError`` for a class the case lacks and ``ValueError`` for a binary-mask file whose
        values are not all 0 or 1.
        """
        wanted = self.classes if classes is None else [canonical_class_name(c) for c in classes]
        missing = [c for c in wanted if c not in self.mask_paths]
        if missing:
            raise KeyError(f"case {self.case_id} has no mask for {missing}; it has {self.classes}")
        files: dict[Path, Volume] = {}
        masks: dict[str, Volume] = {}
        for name in wanted:
            path = self.mask_paths[name]
            if path not in files:
                files[path] = load_nifti(path)
            source = files[path]
            if name in self.mask_labels:
                binary = source.array == self.mask_labels[name]
            else:
                binary = source.array != 0
                if not np.all(source.array[binary] == 1):
                    values = np.unique(source.array)[:8]
                    raise ValueError(
                        f"mask {path} is not binary (values include {values.tolist()}); "
                        f"expected 0/1 (run `rsuper check` on the dataset)"
                    )
            masks[name] = source.with_array(binary.astype(np.uint8))
        return masks


def _class_name(name: str, source: Path) -> str:
    """``canonical_class_name`` for a name read from ``source``; a name that is not plain is a layout error."""
    try:
        return canonical_class_name(name, source=source)
    except ClassNameError as exc:
        raise DatasetLayoutError(str(exc)) from None


def _strip_nifti(name: str) -> str | None:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def find_mask_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Canonical class -> file for every ``<class>.nii[.gz]`` in ``folder`` (empty when it is absent).

    Raises ``DatasetLayoutError`` when two files name the same class (e.g. gall_bladder and gallbladder).
    """
    folder = Path(folder)
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        stem = _strip_nifti(path.name)
        if stem is None or path.name.startswith(".") or not path.is_file():
            continue
        name = _class_name(stem, path)
        if name in found:
            raise DatasetLayoutError(
                f"duplicate class {name!r} in {folder}: {found[name].name} and {path.name}; keep one of them"
            )
        found[name] = path
    return found


def _ct_file(case_dir: Path) -> Path | None:
    for name in CT_NAMES:
        if (case_dir / name).is_file():
            return case_dir / name
    return None


def discover_masks(root: str | os.PathLike[str]) -> dict[str, dict[str, Path]]:
    """Case id -> {class: file} for a masks folder laid out as ``ROOT/<case>/segmentations/<class>.nii.gz``.

    This is what ``rsuper organs`` writes; no CT is needed.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"masks folder not found: {root}")
    out: dict[str, dict[str, Path]] = {}
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = find_mask_files(case_dir / SEGMENTATIONS_DIR)
        if files:
            out[case_dir.name] = files
    return out


def _discover_abdomenatlas(root: Path) -> list[Case]:
    cases = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ct = _ct_file(case_dir)
        if ct is not None:
            cases.append(Case(case_dir.name, ct, find_mask_files(case_dir / SEGMENTATIONS_DIR)))
    return cases


def read_nnunet_labels(dataset_json: str | os.PathLike[str]) -> dict[str, int]:
    """Canonical class -> label id from an nnU-Net ``dataset.json`` (v2 {name: id} or v1 {id: name}).

    Background (id 0) and the ``ignore`` label are left out. Raises ``DatasetLayoutError`` for region
    labels (lists), two names with one id, or two names that mean the same class.
    """
    path = Path(dataset_json)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))["labels"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetLayoutError(f"cannot read the 'labels' of {path}: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise DatasetLayoutError(f"{path}: 'labels' must be a non-empty object, got {raw!r}")
    v1 = all(str(k).strip().isdigit() for k in raw)
    pairs = [(str(v), k) for k, v in raw.items()] if v1 else list(raw.items())
    labels: dict[str, int] = {}
    names_of_id: dict[int, str] = {}
    for name, value in pairs:
        if isinstance(value, list):
            raise DatasetLayoutError(
                f"{path}: label {name!r} is a region ({value}); rsuper needs one id per class"
            )
        try:
            label_id = int(value)
        except (TypeError, ValueError):
            raise DatasetLayoutError(f"{path}: label {name!r} has a non-integer id {value!r}") from None
        if label_id == 0 or name.lower() in ("background", "ignore"):
            continue
        if label_id in names_of_id:
            raise DatasetLayoutError(
                f"{path}: label id {label_id} is used by both {names_of_id[label_id]!r} and {name!r}"
            )
        names_of_id[label_id] = name
        canonical = _class_name(name, path)
        if canonical in labels:
            raise DatasetLayoutError(
                f"{path}: labels {names_of_id[labels[canonical]]!r} and {name!r} both mean class {canonical!r}"
            )
        labels[canonical] = label_id
    return labels


def _discover_nnunet(root: Path) -> list[Case]:
    dataset_json = root / "dataset.json"
    if not dataset_json.is_file():
        raise DatasetLayoutError(f"{root} has imagesTr/ but no dataset.json (nnU-Net raw layout needs it)")
    labels = read_nnunet_labels(dataset_json)
    cases: dict[str, Case] = {}
    for images, label_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        if not (root / images).is_dir():
            continue
        for image in sorted((root / images).iterdir()):
            stem = _strip_nifti(image.name)
            if stem is None or not stem.endswith("_0000"):
                continue
            case_id = stem[: -len("_0000")]
            if case_id in cases:
                raise DatasetLayoutError(
                    f"duplicate case id {case_id!r}: {cases[case_id].ct_path} and {image}"
                )
            label_map = next(
                (root / label_dir / f"{case_id}{s}" for s in NIFTI_SUFFIXES
                 if (root / label_dir / f"{case_id}{s}").is_file()),
                None,
            )
            mask_paths = {name: label_map for name in labels} if label_map else {}
            mask_labels = dict(labels) if label_map else {}
            cases[case_id] = Case(case_id, image, mask_paths, mask_labels, layout="nnunet")
    return [cases[k] for k in sorted(cases)]


def discover_cases(root: str | os.PathLike[str]) -> list[Case]:
    """All cases under ``root`` sorted by id; layout detected (nnU-Net when ``imagesTr/`` exists).

    Raises ``DatasetLayoutError`` naming ``root`` when no case is found or ids/classes are duplicated.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder not found: {root}")
    if (root / "imagesTr").is_dir():
        cases = _discover_nnunet(root)
    else:
        cases = _discover_abdomenatlas(root)
    if not cases:
        nested = sorted(
            p.name for p in root.iterdir()
            if p.is_dir() and any(_ct_file(c) for c in p.iterdir() if c.is_dir())
        )
        hint = f" Sub-folders that are datasets: {nested}." if nested else ""
        raise DatasetLayoutError(
            f"no cases found in {root}: expected ROOT/<case>/ct.nii.gz (+ segmentations/<class>.nii.gz) "
            f"or ROOT/imagesTr/<case>_0000.nii.gz + labelsTr/ + dataset.json (nnU-Net raw).{hint}"
        )
    return cases
