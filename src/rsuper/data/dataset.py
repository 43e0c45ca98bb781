"""Training samples from the prepared cache: mask cases + report cases (docs/method.md §4).

``collect_training_cases`` splits the cache into mask cases (at least one lesion-channel mask file) and
report cases (findings without lesion masks; failed extractions are skipped). ``TrainingDataset`` turns a
key ``(is_report, case_index, seed)`` into one sample, deterministically (so any sample can be re-made
and resume is exact whatever the worker count). ``MixedBatchSampler`` yields the keys of each step's batch
with a fixed mask:report mix, different per DDP rank.

A sample is a dict:
    image (1, X, Y, Z) float32 normalised CT; label, unknown, region (C, X, Y, Z) uint8 (the trainer casts
    them to float); tumor_volumes_mm3, tumor_diameters_mm (T,) float32, 0-padded, largest first; is_report bool; case_id str; choice: the ``CropChoice`` as JSON (+ "augmented": rotation/zoom applied, "mirrored": left-right mirrored).

Example:
    >>> mask_cases, report_cases, skipped = collect_training_cases([mask_cache, report_cache], findings, classes,
    ...                                                            ["pancreas"])
    >>> ds = TrainingDataset(mask_cases, report_cases, class_names=classes, patch_size=(96, 96, 96),
    ...                      spacing_mm=(2, 2, 2), augmentation=PatchAugmentation(classes))
    >>> sample = ds[(1, 0, 1234)]
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from rsuper import labels
from rsuper.data.augment import PatchAugmentation
from rsuper.data.preprocess import MANIFEST, load_cached_case, load_manifest
from rsuper.data.reportcases import ReportSupervision, build_report_supervision
from rsuper.data.sampling import CaseIndex, CropChoice, CropOptions, choose_mask_crop, choose_report_crop, crop_padded

IMAGE_FILL = -1.0  # normalised value of air (-991 HU), used beyond the image border


@dataclass(frozen=True)
class TrainingCase:
    """One cached case used for training; ``supervision`` is set for report cases."""

    cache_dir: Path
    case_id: str
    classes: tuple[str, ...]
    supervision: ReportSupervision | None = None

    @property
    def is_report(self) -> bool:
        return self.supervision is not None


def collect_training_cases(
    cache_dirs: str | Path | Sequence[str | Path],
    findings: Mapping[str, Any] | None,
    class_names: Sequence[str],
    target_organs: Sequence[str],
    max_tumors: int = 16,
) -> tuple[list[TrainingCase], list[TrainingCase], list[str]]:
    """Splits the cases of one or more caches (e.g. a mask dataset and a report dataset) by kind.

    Returns ``(mask_cases, report_cases, skipped)`` where ``skipped`` holds one line per unused case.
    Raises ``ValueError`` when caches differ in spacing or share a case id.
    """
    dirs = [Path(cache_dirs)] if isinstance(cache_dirs, (str, Path)) else [Path(d) for d in cache_dirs]
    entries: dict[str, tuple[Path, dict[str, Any]]] = {}
    spacings = {}
    for cache_dir in dirs:
        manifest = load_manifest(cache_dir)
        spacings[str(cache_dir)] = [float(s) for s in manifest["spacing_mm"]]
        for case_id, entry in manifest["cases"].items():
            if case_id in entries:
                raise ValueError(f"case {case_id!r} is in both {entries[case_id][0]} and {cache_dir}; case ids must be unique")
            entries[case_id] = (cache_dir, entry)
    if len({tuple(v) for v in spacings.values()}) > 1:
        raise ValueError(f"caches have different spacings {spacings}; prepare them with the same --spacing")
    lesion_channels = {c for c in class_names if labels.is_lesion_class(c)}
    mask_cases: list[TrainingCase] = []
    report_cases: list[TrainingCase] = []
    skipped: list[str] = []
    for case_id, (cache_dir, entry) in sorted(entries.items()):
        classes = tuple(labels.canonical_class_name(c, cache_dir / MANIFEST) for c in entry.get("classes", []))
        found = (findings or {}).get(case_id)
        if lesion_channels & set(classes):
            mask_cases.append(TrainingCase(cache_dir, case_id, classes))
        elif found is not None and getattr(found, "error", None) is None:
            sup = build_report_supervision(found, classes, class_names, target_organs, max_tumors)
            report_cases.append(TrainingCase(cache_dir, case_id, classes, sup))
        elif found is not None:
            skipped.append(f"{case_id}: report extraction failed ({found.error})")
        else:
            skipped.append(f"{case_id}: no lesion mask and no findings")
    return mask_cases, report_cases, skipped


class TrainingDataset(Dataset):
    """Deterministic sample factory: ``ds[(is_report, case_index, seed)]`` -> sample dict (see module doc).

    Args:
        mask_cases, report_cases: from :func:`collect_training_cases`.
        class_names: output channels (C).
        patch_size: patch in voxels (x, y, z); spacing_mm: the cache spacing (mm, x y z).
        target_organs: organs whose tumors centre mask crops and whose masks centre organ crops.
        max_tumors: T, the length of the padded tumor vectors.
        crops: how crops are drawn.
        augmentation: the patch augmentation (None: none), e.g. ``PatchAugmentation(class_names)``.
    """

    def __init__(
        self,
        mask_cases: Sequence[TrainingCase],
        report_cases: Sequence[TrainingCase],
        *,
        class_names: Sequence[str],
        patch_size: Sequence[int],
        spacing_mm: Sequence[float],
        target_organs: Sequence[str] = ("pancreas", "kidney", "liver"),
        max_tumors: int = 16,
        crops: CropOptions = CropOptions(),
        augmentation: PatchAugmentation | None = None,
    ) -> None:
        self.cases = (list(mask_cases), list(report_cases))
        self.class_names = list(class_names)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.max_tumors = int(max_tumors)
        self.crops = crops
        self.tumor_classes = [labels.lesion_class(o) for o in target_organs]
        self.organ_classes = [c for o in target_organs for c in labels.ORGAN_MASK_CLASSES[o]]
        self.augmentation = augmentation
        self._loaded: dict[str, tuple[Any, CaseIndex]] = {}  # per worker process

    def __len__(self) -> int:
        return len(self.cases[0]) + len(self.cases[1])

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers open their own memory maps; pickling loaded ones would copy whole volumes.
        return {**self.__dict__, "_loaded": {}}

    def _case(self, case: TrainingCase) -> tuple[Any, CaseIndex]:
        if case.case_id not in self._loaded:
            cached = load_cached_case(case.cache_dir, case.case_id, mmap=True)
            self._loaded[case.case_id] = (cached, CaseIndex.from_masks(cached.masks, max_points=2000))
        return self._loaded[case.case_id]

    def choose(self, key: tuple[int, int, int]) -> CropChoice:
        """The crop decision of a key (what ``__getitem__`` will build)."""
        is_report, case_idx, seed = key
        case = self.cases[int(bool(is_report))][case_idx]
        cached, index = self._case(case)
        rng = np.random.default_rng(seed)
        shape = cached.image.shape
        if case.supervision is not None:
            return choose_report_crop(
                rng, case.case_id, case.supervision, index, shape, self.patch_size, spacing_mm=self.spacing_mm,
                organ_classes=self.organ_classes, margin_mm=self.crops.report_margin_mm,
                random_crop_prob=self.crops.report_random_crop_prob,
            )
        return choose_mask_crop(
            rng, case.case_id, index, shape, self.patch_size, tumor_classes=self.tumor_classes,
            organ_classes=self.organ_classes, probs=self.crops.mask_crop_probs,
        )

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        is_report, case_idx, seed = (int(k) for k in key)
        case = self.cases[int(bool(is_report))][case_idx]
        cached, _ = self._case(case)
        choice = self.choose((is_report, case_idx, seed))
        image, targets = self._arrays(cached, case, choice)
        volumes = np.zeros(self.max_tumors, np.float32)
        diameters = np.zeros(self.max_tumors, np.float32)
        volumes[: len(choice.volumes_mm3)] = choice.volumes_mm3
        diameters[: len(choice.diameters_mm)] = choice.diameters_mm
        augmented = mirrored = False
        image_t = torch.from_numpy(image)[None]
        targets_t = torch.from_numpy(targets)
        c = len(self.class_names)
        if self.augmentation is not None:
            keep = targets_t[2 * c : 3 * c].amax(0) if choice.group is not None else None
            image_t, targets_t, augmented, mirrored = self.augmentation(image_t, targets_t, seed, keep)
        label, unknown, region, valid = targets_t[:c], targets_t[c : 2 * c], targets_t[2 * c : 3 * c], targets_t[-1]
        unknown = torch.maximum(unknown, (1 - valid)[None].expand_as(unknown))
        return {
            "image": image_t,
            "label": label,
            "unknown": unknown,
            "region": region,
            "tumor_volumes_mm3": torch.from_numpy(volumes),
            "tumor_diameters_mm": torch.from_numpy(diameters),
            "is_report": bool(case.is_report),
            "case_id": case.case_id,
            "choice": json.dumps({**json.loads(choice.to_json()), "augmented": augmented, "mirrored": mirrored}),
        }

    def _arrays(self, cached: Any, case: TrainingCase, choice: CropChoice) -> tuple[np.ndarray, np.ndarray]:
        """Image patch (X, Y, Z) and targets (3C + 1, X, Y, Z) uint8: label, unknown, region, valid."""
        start, size = choice.start, choice.size
        c = len(self.class_names)
        image = crop_padded(np.asarray(cached.image, dtype=np.float32), start, size, IMAGE_FILL)
        targets = np.zeros((3 * c + 1, *size), np.uint8)
        targets[-1] = 1
        crops: dict[str, np.ndarray] = {}

        def crop(name: str) -> np.ndarray:
            if name not in crops:
                crops[name] = crop_padded(cached.masks[name], start, size, 0).astype(np.uint8)
            return crops[name]

        def union(names: Sequence[str]) -> np.ndarray:
            out = np.zeros(size, np.uint8)
            for name in names:
                out |= crop(name)
            return out

        for ci, name in enumerate(self.class_names):
            sides = labels.organ_union_members(name)
            if name in cached.masks:
                targets[ci] = crop(name)
            elif sides and all(side in cached.masks for side in sides):
                targets[ci] = union(sides)  # "kidney" = kidney_left | kidney_right
            else:
                targets[c + ci] = 1
        sup = case.supervision
        if sup is not None:
            for ci, name in enumerate(self.class_names):
                if not labels.is_lesion_class(name):
                    continue
                targets[ci] = 0
                if name in sup.unknown_everywhere:
                    targets[c + ci] = 1
                else:
                    targets[c + ci] = union(sup.unknown.get(name, ()))
            if choice.group is not None:
                targets[2 * c + self.class_names.index(choice.lesion_class)] = union(choice.group_classes)
        return image, targets


class MixedBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Yields one batch of dataset keys per step: ``batch_size`` keys with a fixed mask:report mix.

    Each step ``s`` of rank ``r`` draws from ``numpy.random.default_rng([seed, s, r])`` in stage 1 and
    ``default_rng([seed, s, r, stage])`` in a later stage, so ranks see different samples (DistributedSampler
    semantics), stage 2 never replays stage 1's batches (same seed, same step) and a run resumed at step ``s``
    sees exactly the batches an uninterrupted run would. Per batch, ``floor(batch_size x report_fraction + u)`` samples
    (u uniform in [0, 1)) are report samples, so the expected share is ``report_fraction``.
    """

    def __init__(
        self,
        n_mask: int,
        n_report: int,
        batch_size: int,
        report_fraction: float,
        steps: int,
        seed: int = 0,
        rank: int = 0,
        start_step: int = 0,
        stage: int = 1,
    ) -> None:
        if n_mask == 0 and (n_report == 0 or report_fraction == 0):
            raise ValueError("no training cases: need mask cases (stage 1) or report cases with report_fraction > 0")
        self.n_mask, self.n_report = n_mask, n_report
        self.batch_size, self.report_fraction = batch_size, report_fraction if n_report else 0.0
        self.steps, self.seed, self.rank, self.start_step = steps, seed, rank, start_step
        self.stage = stage

    def __len__(self) -> int:
        return max(self.steps - self.start_step, 0)

    def batch_keys(self, step: int) -> list[tuple[int, int, int]]:
        """The keys of one step's batch on this rank."""
        later_stage = [self.stage] if self.stage > 1 else []  # stage 1 keeps the key of a stage-less run
        rng = np.random.default_rng([self.seed, step, self.rank, *later_stage])
        n_rep = int(np.floor(self.batch_size * self.report_fraction + rng.random()))
        n_rep = self.batch_size if self.n_mask == 0 else min(n_rep, self.batch_size)
        keys = []
        for i in range(self.batch_size):
            is_report = int(i < n_rep)
            pool = self.n_report if is_report else self.n_mask
            keys.append((is_report, int(rng.integers(pool)), int(rng.integers(2**62))))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start_step, self.steps):
            yield self.batch_keys(step)
