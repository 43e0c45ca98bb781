"""The report sidecar (``rsuper_reports.json``) and what the trainers make of an augmented label patch.

After nnU-Net's spatial augmentation a patch's label map still holds the organ and sub-segment values, so a report
CT's region is the voxels whose value is one of its group's labels, and its unknown lesion voxels are those whose
value the sidecar lists as lesion-unknown. Sizes stay in mm; the voxel spacing of the patch is the plan's
spacing, corrected for nnU-Net's zoom augmentation by comparing the group's voxel count in the patch with its
exported volume (:func:`zoom_factor`). Nothing here imports nnunetv2 (tests use it without nnU-Net).

Example:
    >>> sidecar = Sidecar.load("nnUNet_raw/Dataset501_RSuper/rsuper_reports.json")
    >>> facts = sidecar.cases["case_7"]
    >>> picked = choose_group(seg_patch, facts)            # (index, group) or None
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rsuper.nnunet.export import SIDECAR_FORMAT, SIDECAR_NAME, SIDECAR_VERSION

ZOOM_TOLERANCE = 0.05  # linear zoom estimates within 5 % of 1 are taken as no zoom (voxel-count noise)


@dataclass(frozen=True)
class ReportGroup:
    """One tumor group of a report CT: its label values and the reported tumors (mm^3, mm, largest first)."""

    lesion_class: str
    lesion_label: int
    labels: tuple[int, ...]
    volumes_mm3: tuple[float, ...]
    diameters_mm: tuple[float, ...]
    usable: bool
    organ_level: bool
    group_volume_mm3: float

    @property
    def reported_volume_mm3(self) -> float:
        return float(sum(self.volumes_mm3))


@dataclass(frozen=True)
class CaseFacts:
    """Sidecar entry of one case: ``kind`` (mask/report), lesion-unknown label values per lesion class, groups."""

    case_id: str
    kind: str
    unknown_labels: dict[str, tuple[int, ...]] = field(default_factory=dict)
    groups: tuple[ReportGroup, ...] = ()

    @property
    def is_report(self) -> bool:
        return self.kind == "report"

    @property
    def unknown_ids(self) -> tuple[int, ...]:
        """Every label value whose voxels are lesion-unknown in this case (union over lesion classes)."""
        return tuple(sorted({i for ids in self.unknown_labels.values() for i in ids}))

    @property
    def usable_groups(self) -> list[ReportGroup]:
        return [g for g in self.groups if g.usable]


@dataclass
class Sidecar:
    """The whole sidecar: label values, lesion labels (ordered = the report losses' channels), cases."""

    labels: dict[str, int]
    lesion_labels: dict[str, int]
    ignore_label: int
    cases: dict[str, CaseFacts]
    path: Path | None = None

    @property
    def lesion_names(self) -> list[str]:
        return list(self.lesion_labels)

    @property
    def mask_cases(self) -> list[str]:
        return sorted(k for k, v in self.cases.items() if v.kind == "mask")

    @property
    def report_cases(self) -> list[str]:
        return sorted(k for k, v in self.cases.items() if v.kind == "report")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Sidecar:
        """Reads and checks a sidecar; ``ValueError`` names the file for another format or version."""
        path = Path(path)
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != SIDECAR_FORMAT or raw.get("version") != SIDECAR_VERSION:
            raise ValueError(f"{path} is not an rsuper nnU-Net sidecar of version {SIDECAR_VERSION} "
                             f"(format {raw.get('format')!r}, version {raw.get('version')!r}); re-run rsuper export-nnunet")
        cases = {cid: _case(cid, entry) for cid, entry in raw["cases"].items()}
        return cls(labels=dict(raw["labels"]), lesion_labels=dict(raw["lesion_labels"]),
                   ignore_label=int(raw["ignore_label"]), cases=cases, path=path)


def _case(case_id: str, entry: dict[str, Any]) -> CaseFacts:
    groups = tuple(
        ReportGroup(lesion_class=g["lesion_class"], lesion_label=int(g["lesion_label"]),
                    labels=tuple(int(i) for i in g["labels"]), volumes_mm3=tuple(float(v) for v in g["volumes_mm3"]),
                    diameters_mm=tuple(float(d) for d in g["diameters_mm"]), usable=bool(g["usable"]),
                    organ_level=bool(g["organ_level"]), group_volume_mm3=float(g["group_volume_mm3"]))
        for g in entry.get("groups", []))
    unknown = {k: tuple(int(i) for i in v) for k, v in entry.get("unknown_labels", {}).items()}
    return CaseFacts(case_id=case_id, kind=entry["kind"], unknown_labels=unknown, groups=groups)


def find_sidecar(dataset_name: str, raw_root: str | None, preprocessed_root: str | None) -> Path:
    """``$RSUPER_NNUNET_SIDECAR``, else ``nnUNet_raw/<dataset>/``, else ``nnUNet_preprocessed/<dataset>/``."""
    candidates = [os.environ.get("RSUPER_NNUNET_SIDECAR")]
    candidates += [str(Path(root) / dataset_name / SIDECAR_NAME) for root in (raw_root, preprocessed_root) if root]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(
        f"no {SIDECAR_NAME} for {dataset_name}: looked at {[c for c in candidates if c]}. Export the dataset with "
        "`rsuper export-nnunet`, set nnUNet_raw, or point RSUPER_NNUNET_SIDECAR at the file")


def touches_border(mask: torch.Tensor) -> bool:
    """True when a 3-D boolean mask has a voxel on a face of its array (the patch cut it)."""
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
                or mask[:, :, 0].any() or mask[:, :, -1].any())


def group_mask(seg: torch.Tensor, group: ReportGroup) -> torch.Tensor:
    """Voxels of a (X, Y, Z) label patch that belong to the group (its sub-segment label values)."""
    return torch.isin(seg, torch.tensor(group.labels, device=seg.device, dtype=seg.dtype))


def choose_group(seg: torch.Tensor, facts: CaseFacts) -> tuple[int, ReportGroup] | None:
    """The usable group of a report patch that lies whole inside it (largest first); None when none does."""
    best: tuple[int, int, ReportGroup] | None = None
    for index, group in enumerate(facts.groups):
        if not group.usable:
            continue
        mask = group_mask(seg, group)
        count = int(mask.sum())
        if count == 0 or touches_border(mask):
            continue
        if best is None or count > best[0]:
            best = (count, index, group)
    return None if best is None else (best[1], best[2])


def zoom_factor(voxels_in_patch: int, group_volume_mm3: float, spacing_mm: Sequence[float],
                tolerance: float = ZOOM_TOLERANCE) -> float:
    """Linear zoom of the patch: (voxels x voxel volume / exported group volume)^(1/3); 1 within ``tolerance``.

    nnU-Net's scaling augmentation (x0.7-1.4, isotropic) magnifies or shrinks the anatomy; the reported sizes stay
    in mm and the patch's effective spacing becomes ``spacing / zoom``.
    """
    voxel_mm3 = float(spacing_mm[0]) * float(spacing_mm[1]) * float(spacing_mm[2])
    if voxels_in_patch <= 0 or group_volume_mm3 <= 0:
        return 1.0
    zoom = (voxels_in_patch * voxel_mm3 / group_volume_mm3) ** (1.0 / 3.0)
    return 1.0 if abs(zoom - 1.0) <= tolerance else zoom


def lesion_channels(seg: torch.Tensor, ids_per_channel: Sequence[Sequence[int]]) -> torch.Tensor:
    """(C', X, Y, Z) float {0, 1}: channel c = voxels of ``seg`` whose value is in ``ids_per_channel[c]``."""
    out = torch.zeros((len(ids_per_channel), *seg.shape), dtype=torch.float32, device=seg.device)
    for c, ids in enumerate(ids_per_channel):
        if ids:
            out[c] = torch.isin(seg, torch.tensor(list(ids), device=seg.device, dtype=seg.dtype)).float()
    return out


def lesion_logits(logits: torch.Tensor, lesion_ids: Sequence[int]) -> torch.Tensor:
    """(B, K, ...) softmax logits -> (B, C', ...) logits whose sigmoid is the softmax probability of each lesion
    label: ``z_l - logsumexp(z_k, k != l)`` (exact; gradients reach every class)."""
    z = logits.float()
    out = []
    for label in lesion_ids:
        others = torch.cat([z[:, :label], z[:, label + 1:]], dim=1)
        out.append(z[:, label] - torch.logsumexp(others, dim=1))
    return torch.stack(out, dim=1)
