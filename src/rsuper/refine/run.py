"""`rsuper refine` on a dataset: per report CT, lesion masks that agree with the report, a confidence and a status.

Inputs per CT: the report's tumors (``tumors.csv``), the model's lesion probabilities (``PRED/<case>/
probabilities/<lesion>.nii.gz`` as written by ``rsuper predict --save-probabilities``; a binary
``segmentations/<lesion>.nii.gz`` of another tool is used as a 0/1 map when there is no probability map),
and organ / sub-segment masks, looked up in this order: ``DATASET/<case>/segmentations``, each
``--masks-dir``, then the prediction's own ``segmentations`` (the model's organs, recorded as "predicted").

Per organ with a lesion channel, the report's tumors are grouped as for training (docs/method.md §4,
``rsuper.data.reportcases``) and each group's tumors are grown inside its sub-segments dilated by
``region_margin_mm`` (``rsuper.refine.grow``); an organ the report calls tumor-free gets an empty mask. A
group whose location is not stated, or stated without a mask, is grown in the whole organ and the CT needs
review (``strict_location``: not refinable). Status rules: ``rsuper.refine.status``.

With ``intensity_where_blind``, a second pass handles lesion channels the model is blind on (``ChannelSight``:
max probability < 0.5 inside the region of >= 80 % of that organ's usable report groups, over >= 3 groups): in
every CT whose report calls all of that organ's tumors hypoattenuating, they are grown from the CT's darkness
inside the un-dilated sub-segments (``rsuper.refine.grow.darkness_score``). Such a CT gets the status "from
intensity" and keeps only the masks it can vouch for: the blind channels' grown tumors and empty masks of organs
the report calls tumor-free (its other lesion channels are left out, i.e. unknown when trained on).

Outputs (every mask in the CT's grid: the probability map's, or DATASET's CT when it has another grid):
  ``OUT/accepted/<case>/segmentations/<lesion>.nii.gz``      uint8 {0,1}, one file per lesion channel of an
                                                             accepted CT, or per accepted organ of a partly
                                                             accepted one whose other organs have no reported
                                                             tumor (a missing channel trains as unknown);
  ``OUT/needs_review/<case>/segmentations/<lesion>.nii.gz``  every channel of CTs to review (partly accepted too);
  ``OUT/from_intensity/<case>/segmentations/<lesion>.nii.gz``  CTs grown from intensity (see above);
  ``OUT/refine.csv``         one row per report CT: status, confidence, accepted organs, reasons, folders;
  ``OUT/refine_tumors.csv``  one row per refined tumor: organ, region, reported and grown size, fill, agreement,
                             the model's max probability in the region, the growth source (model / intensity);
  ``OUT/refine_channels.csv``  one row per lesion channel: usable groups, blind groups, share, blind.
``OUT/accepted`` is a masks folder in the AbdomenAtlas layout: ``rsuper prepare DATASET --masks-dir ORGANS
--masks-dir OUT/accepted`` turns those report CTs into mask cases (docs/review_refine.md).

Example:
    >>> table = refine_cases("preds_reports", "extract/tumors.csv", "refined", masks_dirs=["data/reports", "organs"])
    >>> table["status"].value_counts()
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsuper import labels
from rsuper.atomic import atomic_dir, atomic_path
from rsuper.data.cases import find_mask_files
from rsuper.data.reportcases import ReportSupervision, TumorGroup, build_report_supervision
from rsuper.evaluate.collect import on_grid, same_grid
from rsuper.infer.predict import PROBABILITY_SCALE
from rsuper.io import Volume, load_nifti, save_nifti
from rsuper.refine.grow import REGION_MARGIN_MM, darkness_score, grow_tumors, region_with_margin
from rsuper.refine.status import (ACCEPTED, FROM_INTENSITY, NOT_REFINABLE, PARTLY_ACCEPTED, STATUS_FOLDERS, Decision,
                                  StatusRules, TumorCheck, channel_sight, combine, decide, leftover_probability,
                                  tumor_agreement)
from rsuper.reports.schema import CaseFindings
from rsuper.reports.words import place_of_voxel, place_text

CASE_COLUMNS = ["case_id", "status", "confidence", "accepted_organs", "tumors", "reasons", "folder"]
MAX_TUMORS = 16


@dataclass(frozen=True)
class RefineOptions:
    """Settings of ``rsuper refine``: region margin (mm), status thresholds, location policy, tumor cap, and
    the intensity pass (module docstring); ``intensity_channels``: lesion classes grown from intensity (hypo
    reports), set by ``refine_cases`` for its second pass."""

    region_margin_mm: float = REGION_MARGIN_MM
    rules: StatusRules = field(default_factory=StatusRules)
    strict_location: bool = False
    max_tumors: int = MAX_TUMORS
    intensity_where_blind: bool = False
    intensity_channels: frozenset[str] = frozenset()


@dataclass
class CaseRefinement:
    """One CT's refined masks (lesion class -> bool array, empty when not refinable), decision, tumor rows and
    (lesion class, the model's max probability inside the region) per usable tumor group."""

    case_id: str
    decision: Decision
    masks: dict[str, np.ndarray]
    reference: Volume | None
    tumors: list[dict[str, Any]]
    group_max_p: list[tuple[str, float]] = field(default_factory=list)


def _lesion_maps(case_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Lesion class -> (file, is a probability map) of a prediction case folder."""
    maps = {name: (path, False) for name, path in find_mask_files(case_dir / "segmentations").items()
            if name in labels.ORGAN_OF_LESION_CLASS}
    maps.update({name: (path, True) for name, path in find_mask_files(case_dir / "probabilities").items()
                 if name in labels.ORGAN_OF_LESION_CLASS})
    return maps


def _read_probability(path: Path, is_probability: bool) -> Volume:
    volume = load_nifti(path)
    array = np.asarray(volume.array, dtype=np.float32)
    if is_probability and volume.array.dtype == np.uint8:
        array = array / PROBABILITY_SCALE
    elif not is_probability:
        array = (array > 0).astype(np.float32)
    return volume.with_array(array)


class _MaskSource:
    """Organ and sub-segment masks of one CT from an ordered list of folders (first hit wins), on the CT grid."""

    def __init__(self, folders: Sequence[tuple[Path, str]], reference: Volume) -> None:
        self.files: dict[str, tuple[Path, str]] = {}
        for folder, kind in folders:
            for name, path in find_mask_files(folder).items():
                self.files.setdefault(name, (path, kind))
        self.reference = reference
        self._cache: dict[str, np.ndarray] = {}

    def has(self, name: str) -> bool:
        return name in self.files

    def source(self, name: str) -> str:
        return self.files[name][1]

    def mask(self, name: str) -> np.ndarray:
        if name not in self._cache:
            vol = load_nifti(self.files[name][0])
            self._cache[name] = on_grid(vol.with_array(np.asarray(vol.array) > 0), self.reference).array.astype(bool)
        return self._cache[name]

    def union(self, names: Sequence[str]) -> np.ndarray:
        out = np.zeros(self.reference.shape, dtype=bool)
        for name in names:
            out |= self.mask(name)
        return out

    def subsegments(self, organ: str) -> dict[str, np.ndarray]:
        return {c: self.mask(c) for c in labels.SUBSEGMENTS_OF_ORGAN.get(organ, {}).values() if self.has(c)}


def _group_region_text(organ: str, group: TumorGroup) -> str:
    if group.organ_level:
        return organ
    tokens = [labels.subsegment_token(organ, c) or c for c in group.mask_classes]
    return place_text(organ, tokens)


def refine_case(case_id: str, findings: CaseFindings, pred_case_dir: Path, mask_folders: Sequence[Path],
                options: RefineOptions | None = None) -> CaseRefinement:
    """Refines one CT (see the module docstring). ``mask_folders``: ``<folder>/segmentations`` parents in
    priority order (``DATASET/<case>``, ``--masks-dir``/<case>); the prediction's masks come last."""
    options = options or RefineOptions()
    maps = _lesion_maps(pred_case_dir)
    if findings.error is not None:
        return CaseRefinement(case_id, Decision(NOT_REFINABLE, float("nan"), [f"report extraction failed: "
                                                                                  f"{findings.error}"]), {}, None, [])
    if not maps:
        return CaseRefinement(case_id, Decision(NOT_REFINABLE, float("nan"),
                                                [f"no lesion probability map in {pred_case_dir}"]), {}, None, [])
    probs = {name: _read_probability(path, is_prob) for name, (path, is_prob) in sorted(maps.items())}
    reference, image = next(iter(probs.values())), None
    for folder in mask_folders:
        ct = folder / "ct.nii.gz"
        if ct.is_file():
            reference = load_nifti(ct)
            image = reference.array
            break
    reference = reference.with_array(np.zeros(reference.shape, dtype=np.uint8))
    prob = {name: vol.array if same_grid(vol, reference) else _linear(vol, reference) for name, vol in probs.items()}
    sources = _MaskSource([(f / "segmentations", "given") for f in mask_folders]
                          + [(pred_case_dir / "segmentations", "predicted")], reference)
    spacing = reference.spacing_mm
    organs = [labels.ORGAN_OF_LESION_CLASS[name] for name in prob]
    sup = build_report_supervision(findings, [n for n in sources.files if not labels.is_lesion_class(n)],
                                   list(prob), organs, options.max_tumors)
    problems: list[str] = []
    warnings: dict[str, list[str]] = {name: [] for name in prob}
    checks: dict[str, list[TumorCheck]] = {name: [] for name in prob}
    rows: list[dict[str, Any]] = []
    masks = {name: np.zeros(reference.shape, dtype=bool) for name in prob}
    group_max_p: list[tuple[str, float]] = []
    from_intensity: list[str] = []
    for name in sorted(sup.unknown_everywhere):
        organ = labels.ORGAN_OF_LESION_CLASS[name]
        problems.append(f"no {organ} mask ({' + '.join(labels.ORGAN_MASK_CLASSES[organ])}) to place its tumors")
    for group in sorted(sup.groups, key=lambda g: -g.total_volume_mm3):
        organ, name = group.organ, group.lesion_class
        if not group.usable:
            problems.append(f"{organ}: {group.reason}")
            continue
        region_text = _group_region_text(organ, group)
        if group.organ_level:
            stated = sorted({t for lesion in findings.organ_lesions(organ) for t in lesion.location})
            why = (f"location {place_text(organ, stated)} has no mask" if stated else "location not stated")
            if options.strict_location and stated:
                problems.append(f"{organ}: {why}")
                continue
            warnings[name].append(f"{organ}: {why}; grown within the whole {organ}")
        subsegments = sources.union(group.mask_classes)
        region = region_with_margin(subsegments, spacing, options.region_margin_mm)
        max_p = float(prob[name][region].max()) if region.any() else 0.0
        group_max_p.append((name, max_p))
        source, score, where = "model", prob[name], region
        if name in options.intensity_channels and findings.all_hypoattenuating(organ):
            if image is None:
                warnings[name].append(f"{organ}: the model is blind on it, but no ct.nii.gz of this case is in "
                                      "DATASET or a --masks-dir; grown from the model")
            else:
                source, score, where = "intensity", darkness_score(image, subsegments), subsegments
                from_intensity.append(f"{organ}: the model is blind on it (max p {max_p:.2f} in the "
                                      f"{region_text}); grown from the CT's darkest voxels")
        grown = grow_tumors(score, where, group.diameters_mm, group.volumes_mm3, spacing, taken=masks[name])
        for k, tumor in enumerate(grown, start=1):
            masks[name] |= tumor.mask
            agreement = tumor_agreement(prob[name], tumor.mask)
            label = f"{region_text} tumor {k} ({tumor.diameter_mm:g} mm)"
            checks[name].append(TumorCheck(label, agreement, tumor.fill))
            rows.append({"case_id": case_id, "organ": organ, "lesion_class": name, "tumor": label,
                         "region": " / ".join(group.mask_classes),
                         "region_source": " / ".join(sorted({sources.source(c) for c in group.mask_classes})),
                         "diameter_mm": tumor.diameter_mm, "volume_mm3": round(tumor.volume_mm3, 1),
                         "target_voxels": tumor.target_voxels, "voxels": tumor.voxels, "fill": round(tumor.fill, 4),
                         "agreement": round(agreement, 4), "centre_vox": list(tumor.centre_vox),
                         "max_p_region": round(max_p, 4), "source": source})
    if from_intensity and not problems:
        return _intensity_case(case_id, from_intensity, masks, sup, reference, rows, group_max_p)
    if problems:
        return CaseRefinement(case_id, Decision(NOT_REFINABLE, float("nan"), problems), {}, reference, rows,
                              group_max_p)
    organ_decisions = {}
    for name, channel in prob.items():
        leftover, voxel = leftover_probability(channel, masks[name], spacing, options.rules.zone_mm)
        organ = labels.ORGAN_OF_LESION_CLASS[name]
        reported = 1.0 - leftover < options.rules.accept_confidence  # only then does the reason name the place
        place = place_of_voxel(organ, voxel, sources.subsegments(organ)) if reported else ""
        organ_decisions[name] = decide(checks[name], leftover, place, warnings[name], options.rules)
    return CaseRefinement(case_id, combine(organ_decisions), masks, reference, rows, group_max_p)


def _intensity_case(case_id: str, reasons: list[str], masks: dict[str, np.ndarray], sup: ReportSupervision,
                    reference: Volume, rows: list[dict[str, Any]], group_max_p: list[tuple[str, float]]
                    ) -> CaseRefinement:
    """A CT with tumors grown from intensity: those channels' masks, plus empty masks of the lesion channels the
    report calls tumor-free (no group, nothing unknown); every other channel is left out (unknown)."""
    grown = {row["lesion_class"] for row in rows if row["source"] == "intensity"}
    reported = {group.lesion_class for group in sup.groups}
    tumor_free = {name for name in masks
                  if name not in reported and name not in sup.unknown_everywhere and not sup.unknown.get(name)}
    kept = {name: mask for name, mask in masks.items() if name in grown or name in tumor_free}
    return CaseRefinement(case_id, Decision(FROM_INTENSITY, float("nan"), reasons), kept, reference, rows,
                          group_max_p)


def _linear(volume: Volume, reference: Volume) -> np.ndarray:
    from rsuper.io import resample_to_grid

    return resample_to_grid(volume, reference.shape, reference.affine, order=1).array


def write_case(result: CaseRefinement, out: Path) -> str:
    """Writes one CT's masks into ``out/<status folder>/<case>`` (removing an older status's copies); a partly
    accepted CT's accepted organs also go into ``out/accepted/<case>`` when none of its other organs has a reported
    tumor (as a mask case it would lose that tumor's report supervision). Returns the folders joined by " + "
    ('' when not refinable)."""
    for folder in set(STATUS_FOLDERS.values()):
        stale = out / folder / result.case_id
        if stale.exists():
            shutil.rmtree(stale)
    status = result.decision.status
    if status not in STATUS_FOLDERS or result.reference is None:
        return ""
    written = {STATUS_FOLDERS[status]: result.masks}
    if status == PARTLY_ACCEPTED and not {row["lesion_class"] for row in result.tumors} - set(result.decision.accepted):
        written = {STATUS_FOLDERS[ACCEPTED]: {name: result.masks[name] for name in result.decision.accepted},
                   **written}
    for folder, masks in written.items():
        with atomic_dir(out / folder / result.case_id) as tmp:
            for name, mask in sorted(masks.items()):
                save_nifti(result.reference.with_array(mask.astype(np.uint8)),
                           tmp / "segmentations" / f"{name}.nii.gz", dtype=np.uint8)
    return " + ".join(written)


def refine_cases(pred_dir: str | os.PathLike[str], tumors_csv: str | os.PathLike[str], out: str | os.PathLike[str],
                 masks_dirs: Sequence[str | os.PathLike[str]] = (), options: RefineOptions | None = None,
                 on_case: Callable[[str, str], None] | None = None) -> pd.DataFrame:
    """Refines every CT of ``tumors_csv`` that has a prediction folder in ``pred_dir``; writes the outputs of
    the module docstring and returns the per-CT table. ``masks_dirs``: DATASET first, then ``--masks-dir``s."""
    from rsuper.reports.tables import read_tumors_csv

    pred_dir, out = Path(pred_dir), Path(out)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_dir}")
    reports = read_tumors_csv(tumors_csv)
    cases = sorted(c for c in reports if (pred_dir / c).is_dir())
    if not cases:
        raise ValueError(f"no CT of {tumors_csv} has a prediction folder in {pred_dir} (<case>/probabilities/); "
                         "check the case ids")
    options = options or RefineOptions()
    results: dict[str, CaseRefinement] = {}
    rows: dict[str, dict[str, Any]] = {}

    def run(case_id: str, case_options: RefineOptions) -> None:
        result = refine_case(case_id, reports[case_id], pred_dir / case_id, [Path(d) / case_id for d in masks_dirs],
                             case_options)
        folder = write_case(result, out)
        d = result.decision
        accepted = " / ".join(labels.ORGAN_OF_LESION_CLASS[name] for name in d.accepted)
        rows[case_id] = {"case_id": case_id, "status": d.status, "confidence": d.confidence,
                         "accepted_organs": accepted, "tumors": len(result.tumors), "reasons": "; ".join(d.reasons),
                         "folder": folder}
        result.masks = {}  # written; only the tables are kept
        results[case_id] = result
        if on_case is not None:
            on_case(case_id, d.status)

    for case_id in cases:
        run(case_id, options)
    sight = channel_sight([pair for result in results.values() for pair in result.group_max_p])
    blind = frozenset(s.lesion_class for s in sight if s.blind)
    if options.intensity_where_blind and blind:
        second = replace(options, intensity_channels=blind)
        for case_id in cases:
            if any(reports[case_id].all_hypoattenuating(labels.ORGAN_OF_LESION_CLASS[name]) for name in blind):
                run(case_id, second)
    table = pd.DataFrame([rows[c] for c in cases], columns=CASE_COLUMNS)
    tumors = pd.DataFrame([row for c in cases for row in results[c].tumors])
    channels = pd.DataFrame([{"lesion_class": s.lesion_class, "groups": s.groups, "blind_groups": s.blind_groups,
                              "blind_share": round(s.blind_share, 4), "blind": s.blind} for s in sight],
                            columns=["lesion_class", "groups", "blind_groups", "blind_share", "blind"])
    with atomic_path(out / "refine_channels.csv") as tmp:
        channels.to_csv(tmp, index=False)
    with atomic_path(out / "refine.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "refine_tumors.csv") as tmp:
        tumors.to_csv(tmp, index=False)
    return table


def predict_for_refine(checkpoint: str | os.PathLike[str], dataset: str | os.PathLike[str], case_ids: Sequence[str],
                       pred_dir: str | os.PathLike[str], device: str = "cpu", tta: str = "auto",
                       on_case: Callable[[str, str], None] | None = None) -> dict[str, str]:
    """``rsuper predict --save-probabilities`` of the DATASET CTs listed in ``case_ids`` into ``pred_dir``
    (finished cases are kept); returns {case_id: status}."""
    from rsuper.infer.predict import PredictOptions, Predictor, find_ct_inputs, predict_cases

    wanted = set(case_ids)
    inputs = [(c, p) for c, p in find_ct_inputs(dataset) if c in wanted]
    if not inputs:
        raise ValueError(f"no CT of {dataset} is listed in the reports; check the case ids")
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    return predict_cases(predictor, inputs, pred_dir, PredictOptions(tta=tta, save_probabilities=True),
                         on_case=on_case)

