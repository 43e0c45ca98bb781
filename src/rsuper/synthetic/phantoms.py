"""Synthetic abdominal CT datasets ("phantoms") with masks, reports and gold tumor tables.

`generate_dataset` writes (docs/phantoms.md)::

    OUT/masks/<case>/ct.nii.gz, segmentations/{liver,pancreas,kidney_left,kidney_right,spleen,
                                 liver_lesion,pancreatic_lesion,kidney_lesion}.nii.gz
    OUT/reports/<case>/ct.nii.gz, segmentations/<organs only>.nii.gz
    OUT/test/<case>/             like masks/
    OUT/truth/<case>/segmentations/{pancreas_head,body,tail, liver_segment_1..8, *_lesion}.nii.gz
    OUT/reports.csv              BDMAP ID, Report, split   (all cases)
    OUT/gold/tumors.csv, OUT/gold/cases.csv   ideal extraction of each report (docs/method.md §2 tables)
    OUT/gold/tumors_truth.csv    per true tumor: voxel volume, centre, sub-segment, reported id
    OUT/phantoms.json            generator parameters and counts

Everything is deterministic per seed (each case draws from ``SeedSequence([seed, index])``), whatever
the number of workers.

Example:
    >>> summary = generate_dataset("phantoms", n_mask=4, n_report=20, n_test=6, seed=0)
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsuper.atomic import atomic_path, write_json_atomic
from rsuper.io import Volume, save_nifti
from rsuper.labels import lesion_class, subsegment_class
from rsuper.reports.schema import CaseFindings, volume_from_diameters
from rsuper.reports.tables import write_cases_csv, write_tumors_csv
from rsuper.synthetic.anatomy import (
    KIDNEY_TOKENS,
    LIVER_TOKENS,
    PANCREAS_TOKENS,
    TUMOR_ORGANS,
    AnatomySettings,
    Phantom,
    TumorPlan,
    generate_anatomy,
)
from rsuper.synthetic.reports import ReportTumor, write_report

SPLITS: tuple[str, ...] = ("masks", "reports", "test")
DEFAULT_DIAMETERS_MM: dict[str, tuple[float, float]] = {
    "pancreas": (10.0, 40.0),
    "kidney": (10.0, 50.0),
    "liver": (8.0, 40.0),
}
# Sub-segment sampling weights: pancreas head-heavy (like PDAC), liver by typical segment volume.
_TOKEN_WEIGHTS = {
    "pancreas": (PANCREAS_TOKENS, (0.5, 0.3, 0.2)),
    "kidney": (KIDNEY_TOKENS, (0.5, 0.5)),
    "liver": (LIVER_TOKENS, (0.04, 0.09, 0.09, 0.15, 0.13, 0.14, 0.18, 0.18)),
}
_MAX_PER_ORGAN = {"pancreas": 1, "kidney": 2, "liver": 3}


@dataclass(frozen=True)
class PhantomSettings:
    """Dataset-level knobs (difficulty and composition). Sizes in mm, intensities in HU."""

    anatomy: AnatomySettings = field(default_factory=AnatomySettings)
    tumor_diameter_mm: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_DIAMETERS_MM))
    organ_weights: dict[str, float] = field(default_factory=lambda: {"pancreas": 0.4, "kidney": 0.3, "liver": 0.3})
    healthy_fraction: float = 0.45
    mask_healthy_fraction: float | None = None  # masks split; None = healthy_fraction
    mask_phase_weights: tuple[float, float, float] | None = None  # masks split; None = anatomy.phase_weights
    # masks split: the first tumor of mask CT j lies at mask_location(j), so a few mask CTs cover every location
    mask_cover_locations: bool = False
    max_tumors: int = 3
    lps_fraction: float = 0.0


def case_id(index: int) -> str:
    """Case name of the `index`-th phantom (0-based, over all splits)."""
    return f"phantom_{index:05d}"


def mask_location(position: int, organs: list[str]) -> tuple[str, str]:
    """(organ, sub-segment) of the ``position``-th mask CT when mask CTs cover every location: organs in turn,
    those with more sub-segments first (liver, pancreas, kidney), and each organ's sub-segments in turn, most
    frequent first (liver segment 7, 8, ...; pancreas head, body, tail; ...)."""
    organs = sorted(organs, key=lambda o: -len(_TOKEN_WEIGHTS[o][0]))
    organ = organs[position % len(organs)]
    tokens, weights = _TOKEN_WEIGHTS[organ]
    by_frequency = [tok for _, tok in sorted(zip(weights, tokens), key=lambda wt: -wt[0])]
    return organ, by_frequency[(position // len(organs)) % len(by_frequency)]


def plan_tumors(
    rng: np.random.Generator, settings: PhantomSettings, split: str = "reports", position: int = 0
) -> list[TumorPlan]:
    """0..max_tumors tumors: healthy with probability `healthy_fraction` (the masks split may have its own),
    else 1-3 (organs, sub-segments, sizes). ``position``: the case's index within its split (used by
    ``mask_cover_locations``)."""
    healthy = settings.healthy_fraction
    if split == "masks" and settings.mask_healthy_fraction is not None:
        healthy = settings.mask_healthy_fraction
    if settings.max_tumors <= 0 or rng.random() < healthy:
        return []
    counts = np.arange(1, settings.max_tumors + 1)
    weights = np.array([0.6, 0.28, 0.12, 0.06, 0.03][: len(counts)] + [0.01] * max(0, len(counts) - 5))
    n = int(rng.choice(counts, p=weights / weights.sum()))
    organs = list(settings.organ_weights)
    p = np.array([settings.organ_weights[o] for o in organs], dtype=float)
    plans: list[TumorPlan] = []
    for i in range(n):
        organ = plans[0].organ if i and rng.random() < 0.5 else str(rng.choice(organs, p=p / p.sum()))
        if sum(pl.organ == organ for pl in plans) >= _MAX_PER_ORGAN[organ]:
            continue
        tokens, tw = _TOKEN_WEIGHTS[organ]
        token = str(rng.choice(tokens, p=np.array(tw) / sum(tw)))
        if i == 0 and split == "masks" and settings.mask_cover_locations:  # same draws, then the override
            organ, token = mask_location(position, organs)
        lo, hi = settings.tumor_diameter_mm[organ]
        d1 = float(rng.uniform(lo, hi))
        d = sorted([d1, d1 * rng.uniform(0.75, 1.0), d1 * rng.uniform(0.75, 1.0)], reverse=True)
        plans.append(TumorPlan(organ, token, (d[0], d[1], d[2])))
    return plans


def _save(array: np.ndarray, affine: np.ndarray, path: Path, lps: bool) -> None:
    if lps:  # same world geometry, array axes 0 and 1 reversed (LPS orientation)
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[:2, 3] = [array.shape[0] - 1, array.shape[1] - 1]
        array, affine = array[::-1, ::-1, :], affine @ flip
    save_nifti(Volume(np.ascontiguousarray(array), affine), path)


def write_case(ph: Phantom, root: Path, cid: str, split: str, lps: bool) -> None:
    case_dir = root / split / cid
    _save(ph.ct_hu, ph.affine, case_dir / "ct.nii.gz", lps)
    for name, mask in ph.organs.items():
        _save(mask, ph.affine, case_dir / "segmentations" / f"{name}.nii.gz", lps)
    if split != "reports":
        for name, mask in ph.lesions.items():
            _save(mask, ph.affine, case_dir / "segmentations" / f"{name}.nii.gz", lps)
    for name, mask in {**ph.subsegments, **ph.lesions}.items():
        _save(mask, ph.affine, root / "truth" / cid / "segmentations" / f"{name}.nii.gz", lps)


def make_case(root: Path, index: int, split: str, seed: int, settings: PhantomSettings, position: int = 0) -> dict:
    """Generates and writes one case (``position``: its index within ``split``); returns its report, gold
    findings and truth rows."""
    plan_rng, anatomy_rng, report_rng, orient_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(4)
    )
    cid = case_id(index)
    anatomy = settings.anatomy
    if split == "masks" and settings.mask_phase_weights is not None:
        anatomy = replace(anatomy, phase_weights=settings.mask_phase_weights)
    ph = generate_anatomy(anatomy_rng, anatomy, plan_tumors(plan_rng, settings, split, position))
    lps = bool(orient_rng.random() < settings.lps_fraction)
    write_case(ph, root, cid, split, lps)
    report_tumors = [
        ReportTumor(t.plan.organ, t.tokens, t.plan.diameters_mm, t.axial_position) for t in ph.tumors
    ]
    text, stated = write_report(report_rng, report_tumors, ph.findings)
    gold_id = {rl.tumor_index: f"tumor {k}" for k, rl in enumerate(stated, 1) if rl.tumor_index is not None}
    voxel_mm3 = float(np.prod(settings.anatomy.spacing_mm))
    truth = [truth_row(cid, split, k, t, gold_id.get(k, "multiple"), voxel_mm3) for k, t in enumerate(ph.tumors)]
    findings = CaseFindings(case_id=cid, lesions=[rl.lesion for rl in stated], backend="phantom-gold")
    return {"case_id": cid, "split": split, "report": text, "findings": findings, "truth": truth, "lps": lps}


def truth_row(cid: str, split: str, k: int, t: Any, gold_id: str, voxel_mm3: float) -> dict:
    """One row of ``gold/tumors_truth.csv`` (TRUTH_COLUMNS) for the k-th placed tumor ``t`` of case ``cid``."""
    return {
        "BDMAP ID": cid, "split": split, "Truth ID": f"tumor {k + 1}", "Gold Tumor ID": gold_id,
        "organ": t.plan.organ, "lesion class": lesion_class(t.plan.organ), "location": " / ".join(t.tokens),
        "sub-segment classes": " / ".join(subsegment_class(t.plan.organ, tok) for tok in t.tokens),
        "location fractions": "; ".join(f"{tok}={f:.3f}" for tok, f in t.location_fractions.items()),
        "diameters (mm)": " x ".join(f"{d:.2f}" for d in t.plan.diameters_mm),
        "volume_vox_mm3": round(float(t.mask.sum()) * voxel_mm3, 2),
        "volume_from_diameters_mm3": round(volume_from_diameters(t.plan.diameters_mm), 2),
        "centre_i_vox": t.centre_vox[0], "centre_j_vox": t.centre_vox[1], "centre_k_vox": t.centre_vox[2],
        "centre_x_mm": t.centre_mm[0], "centre_y_mm": t.centre_mm[1], "centre_z_mm": t.centre_mm[2],
        "contrast_hu": round(t.contrast_hu, 1),
    }


def prepare_out_dir(root: Path) -> None:
    """Empties a previous phantom dataset in `root`; refuses a non-empty folder that is not one."""
    if not root.exists() or not any(root.iterdir()):
        return
    if not (root / "phantoms.json").is_file():
        raise FileExistsError(
            f"{root} is not empty and holds no phantoms.json (not a phantom dataset); choose an empty or new folder"
        )
    for name in (*SPLITS, "truth", "gold"):
        shutil.rmtree(root / name, ignore_errors=True)


def make_cases(
    case_maker: Callable[..., dict], root: Path, seed: int, settings: Any, jobs: list[tuple[str, int]],
    workers: int = 1, progress: Callable[[str], None] | None = None,
) -> tuple[list[dict], float]:
    """Makes every case of ``jobs`` ((split, count) in order) with ``case_maker(root, index, split, seed, settings, k)``
    (a module-level function: it runs in worker processes when ``workers`` > 1); returns the results and seconds."""
    splits = [(split, k) for split, n in jobs for k in range(n)]
    args = [(root, i, split, seed, settings, k) for i, (split, k) in enumerate(splits)]
    start = time.perf_counter()
    results: list[dict] = []
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(args) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            made = pool.map(case_maker, *zip(*args))
        else:
            made = (case_maker(*a) for a in args)
        for result in made:
            results.append(result)
            if progress:
                progress(result["case_id"])
    return results, time.perf_counter() - start


def dataset_counts(
    root: Path, seed: int, jobs: list[tuple[str, int]], results: list[dict], truth_rows: list[dict]
) -> dict[str, Any]:
    """The counts every family's ``phantoms.json`` starts with (cases per split, healthy cases, tumors per organ)."""
    return {
        "out_dir": str(root),
        "seed": seed,
        "cases": {split: n for split, n in jobs},
        "healthy_cases": sum(not r["truth"] for r in results),
        "tumors": len(truth_rows),
        "tumors_by_organ": {o: sum(row["organ"] == o for row in truth_rows) for o in TUMOR_ORGANS},
        "lps_cases": sum(r["lps"] for r in results),
    }


def write_tables(root: Path, results: list[dict]) -> list[dict]:
    """Writes ``reports.csv`` and the gold tables (tumors, cases, true tumors) of made cases; returns the truth rows."""
    with atomic_path(root / "reports.csv") as tmp:
        pd.DataFrame(
            [{"BDMAP ID": r["case_id"], "Report": r["report"], "split": r["split"]} for r in results],
            columns=["BDMAP ID", "Report", "split"],
        ).to_csv(tmp, index=False)
    findings = [r["findings"] for r in results]
    write_tumors_csv(findings, root / "gold" / "tumors.csv")
    write_cases_csv(findings, root / "gold" / "cases.csv")
    truth_rows = [row for r in results for row in r["truth"]]
    with atomic_path(root / "gold" / "tumors_truth.csv") as tmp:
        pd.DataFrame(truth_rows, columns=TRUTH_COLUMNS).to_csv(tmp, index=False)
    return truth_rows


def generate_dataset(
    out_dir: str | Path,
    n_mask: int = 8,
    n_report: int = 40,
    n_test: int = 12,
    spacing_mm: float | tuple[float, float, float] = 2.5,
    seed: int = 0,
    *,
    fov_mm: tuple[float, float, float] = (300.0, 250.0, 180.0),
    noise_sd_hu: tuple[float, float] = (10.0, 25.0),
    tumor_contrast_hu: float = -40.0,
    tumor_contrast_spread_hu: float = 10.0,
    tumor_diameter_mm: dict[str, tuple[float, float]] | None = None,
    healthy_fraction: float = 0.45,
    mask_healthy_fraction: float | None = None,
    phase_weights: tuple[float, float, float] = (0.7, 0.15, 0.15),
    mask_phase_weights: tuple[float, float, float] | None = None,
    mask_cover_locations: bool = False,
    max_tumors: int = 3,
    lps_fraction: float = 0.0,
    workers: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Writes a phantom dataset to `out_dir` (layout in the module docstring); returns a summary dict.

    Difficulty knobs: `tumor_contrast_hu` (mean tumor - organ HU, negative = hypodense) +/- uniform
    `tumor_contrast_spread_hu`; `noise_sd_hu` (range of per-case noise SD); `tumor_diameter_mm`
    (per organ (min, max) largest diameter); `healthy_fraction`; `mask_healthy_fraction` (the masks split;
    annotated datasets are usually tumor-enriched; None = `healthy_fraction`); `max_tumors` per case;
    `phase_weights` (portal venous, arterial, non-contrast) and `mask_phase_weights` for the masks split
    alone (None = the same): masks from one site and reports/tests from another, as in R-Super's demo.
    `mask_cover_locations`: the first tumor of the j-th mask CT is placed by `mask_location(j)` (organs and
    their sub-segments in turn), so that a few mask CTs still show every location, as a large annotated set does.
    `lps_fraction` of the cases are written in LPS orientation (same world geometry).
    `progress` is called with each finished case id. A previous phantom dataset in `out_dir` is replaced;
    any other non-empty folder raises ``FileExistsError``.
    """
    spacing = (float(spacing_mm),) * 3 if np.isscalar(spacing_mm) else tuple(float(s) for s in spacing_mm)
    if any(s <= 0 for s in spacing) or min(n_mask, n_report, n_test) < 0:
        raise ValueError(f"spacing must be > 0 mm and case counts >= 0, got {spacing}, {n_mask}/{n_report}/{n_test}")
    diameters = dict(DEFAULT_DIAMETERS_MM)
    diameters.update(tumor_diameter_mm or {})
    settings = PhantomSettings(
        anatomy=AnatomySettings(
            fov_mm=tuple(float(f) for f in fov_mm), spacing_mm=spacing,  # type: ignore[arg-type]
            noise_sd_hu=tuple(noise_sd_hu), tumor_contrast_hu=tumor_contrast_hu,  # type: ignore[arg-type]
            tumor_contrast_spread_hu=tumor_contrast_spread_hu,
            phase_weights=tuple(float(w) for w in phase_weights),  # type: ignore[arg-type]
        ),
        tumor_diameter_mm=diameters, healthy_fraction=healthy_fraction, mask_healthy_fraction=mask_healthy_fraction,
        mask_phase_weights=None if mask_phase_weights is None else tuple(float(w) for w in mask_phase_weights),
        mask_cover_locations=mask_cover_locations, max_tumors=max_tumors,
        lps_fraction=lps_fraction,
    )
    root = Path(out_dir)
    prepare_out_dir(root)
    jobs = [("masks", n_mask), ("reports", n_report), ("test", n_test)]
    results, seconds = make_cases(make_case, root, seed, settings, jobs, workers, progress)
    truth_rows = write_tables(root, results)
    summary = {
        **dataset_counts(root, seed, jobs, results, truth_rows),
        "shape_vox": list(settings.anatomy.shape),
        "seconds": round(seconds, 2),
        "settings": asdict(settings),
    }
    write_json_atomic(root / "phantoms.json", summary)
    return summary


TRUTH_COLUMNS = [
    "BDMAP ID", "split", "Truth ID", "Gold Tumor ID", "organ", "lesion class", "location", "sub-segment classes",
    "location fractions", "diameters (mm)", "volume_vox_mm3", "volume_from_diameters_mm3",
    "centre_i_vox", "centre_j_vox", "centre_k_vox", "centre_x_mm", "centre_y_mm", "centre_z_mm", "contrast_hu",
]
