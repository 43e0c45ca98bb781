"""The prepared cache (``rsuper prepare``): every case canonical (RAS), at the training spacing, as .npy.

Layout::

    CACHE/manifest.json                 {"spacing_mm", "orientation": "RAS", "normalisation", "cases": {...}}
    CACHE/<case>/ct.npy                 float32 (X, Y, Z), normalised with rsuper.io.normalize_ct
    CACHE/<case>/masks/<class>.npy      uint8 {0, 1}, same shape
    CACHE/<case>/meta.json              sources, original grid, cached affine and spacing (written last)

Each case is written into a hidden temporary folder and renamed into place, so a case folder with a
meta.json is complete. A rerun skips cases whose meta.json records the same sources (path, size,
mtime), spacing and normalisation; the manifest is rebuilt from those per-case records.

Example:
    >>> prepare_dataset("AbdomenAtlas", "cache", spacing_mm=(1.0, 1.0, 1.0), workers=4)
    >>> case = load_cached_case("cache", "BDMAP_00000001")      # memory-mapped arrays
    >>> case.image.shape, case.masks["liver"].dtype, case.spacing_mm
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rsuper import __version__, labels
from rsuper.atomic import atomic_dir, write_json_atomic
from rsuper.data.cases import Case, discover_cases, discover_masks
from rsuper.data.checks import require_hu
from rsuper.io import (
    CANONICAL_AXCODES,
    CT_NORMALISATION,
    load_nifti,
    normalize_ct,
    resample_to_grid,
    spacing_grid,
    to_canonical,
)

CACHE_FORMAT = "rsuper-cache-case"
CACHE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
META = "meta.json"
GRID_TOLERANCE_MM = 1e-3
IMAGE_ORDER = 1
_PARTIAL_PREFIX = ".partial-"
# Errors that fail one case (bad or unreadable input); anything else is a bug and stops the run.
CASE_ERRORS = (OSError, ValueError, KeyError, MemoryError)


@dataclass
class CachedCase:
    """One prepared case. Arrays are (X, Y, Z) in RAS at ``spacing_mm`` (memory-mapped when asked)."""

    case_id: str
    image: np.ndarray
    masks: dict[str, np.ndarray]
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    meta: dict = field(repr=False)


@dataclass
class PrepareResult:
    """Outcome of ``prepare_dataset``: case ids prepared now, skipped (already done), failed (id -> error)."""

    prepared: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def parse_spacing(value: str | float | Sequence[float]) -> tuple[float, float, float]:
    """``2.5`` / ``"2.5"`` -> (2.5, 2.5, 2.5); ``"1,1,3"`` / ``"1x1x3"`` / (1, 1, 3) -> (1.0, 1.0, 3.0) mm."""
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,x\s]+", value.strip()) if p]
    elif isinstance(value, (int, float)):
        parts = [value]
    else:
        parts = list(value)
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be one number or three (e.g. 1.0 or 1,1,3) in mm, got {value!r}") from None
    if len(numbers) == 1:
        numbers *= 3
    if len(numbers) != 3 or not all(np.isfinite(n) and n > 0 for n in numbers):
        raise ValueError(f"spacing must be one or three positive numbers in mm, got {value!r}")
    return tuple(numbers)  # type: ignore[return-value]


def _source_record(path: Path, label: int | None = None) -> dict:
    stat = path.stat()
    record = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if label is not None:
        record["label"] = int(label)
    return record


def case_sources(case: Case) -> dict:
    """What a cached case was made from: CT and mask files with size and mtime (the resume key)."""
    return {
        "ct": _source_record(case.ct_path),
        "masks": {name: _source_record(case.mask_paths[name], case.mask_labels.get(name)) for name in case.classes},
    }


def _is_done(case_dir: Path, sources: dict, spacing_mm: tuple[float, float, float]) -> dict | None:
    """The case's meta when it is complete and matches ``sources`` and ``spacing_mm``, else None."""
    try:
        meta = json.loads((case_dir / META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = (
        meta.get("format_version") == CACHE_FORMAT_VERSION
        and meta.get("sources") == sources
        and np.allclose(meta.get("spacing_mm", [0, 0, 0]), spacing_mm, rtol=0, atol=1e-9)
        and meta.get("normalisation") == CT_NORMALISATION
    )
    return meta if same else None


def _check_grid(mask_path: Path, shape: tuple, affine: np.ndarray, ct_shape: tuple, ct_affine: np.ndarray) -> None:
    if shape != ct_shape or np.abs(affine - ct_affine).max() > GRID_TOLERANCE_MM:
        raise ValueError(
            f"mask {mask_path} is not on its CT's grid (shape {shape} vs {ct_shape}, affine difference "
            f"{np.abs(affine - ct_affine).max():.4g} mm); run `rsuper check` and resample the mask onto the CT"
        )


def prepare_case(case: Case, cache_dir: str | os.PathLike[str], spacing_mm: tuple[float, float, float],
                 allow_non_hu: bool = False) -> dict:
    """Writes one case into ``cache_dir/<case_id>`` (atomically) and returns its meta dict.

    CT: canonical, linear resampling to ``spacing_mm``, ``normalize_ct``. Masks: nearest neighbour onto the
    same grid. Raises ``ValueError``/``NiftiReadError`` naming the file on bad input, including a CT that is
    not in Hounsfield units (``rsuper.data.checks.hu_problem``) unless ``allow_non_hu``.
    """
    cache_dir = Path(cache_dir)
    sources = case_sources(case)
    ct = load_nifti(case.ct_path)
    require_hu(ct.array, case.ct_path, allow_non_hu)
    canonical = to_canonical(ct)
    shape, affine = spacing_grid(canonical, spacing_mm)
    hu = resample_to_grid(canonical, shape, affine, order=IMAGE_ORDER).array
    if not np.isfinite(hu).all():
        raise ValueError(f"CT {case.ct_path} contains NaN/Inf voxels; fix or drop this case")
    with atomic_dir(cache_dir / case.case_id, prefix=f"{_PARTIAL_PREFIX}{case.case_id}-") as tmp:
        np.save(tmp / "ct.npy", normalize_ct(hu))
        del hu
        (tmp / "masks").mkdir()
        by_file: dict[Path, list[str]] = {}
        for name in case.classes:
            by_file.setdefault(case.mask_paths[name], []).append(name)
        voxels = {}
        for path, names in by_file.items():
            masks = case.load_masks(names)
            for name, mask in masks.items():
                _check_grid(path, mask.shape, mask.affine, ct.shape, ct.affine)
                cached = resample_to_grid(to_canonical(mask), shape, affine, order=0).array.astype(np.uint8)
                np.save(tmp / "masks" / f"{name}.npy", cached)
                voxels[name] = int(cached.sum())
        meta = {
            "format": CACHE_FORMAT,
            "format_version": CACHE_FORMAT_VERSION,
            "rsuper_version": __version__,
            "case_id": case.case_id,
            "layout": case.layout,
            "sources": sources,
            "original": {
                "shape": list(ct.shape),
                "affine": ct.affine.tolist(),
                "orientation": ct.orientation,
                "spacing_mm": list(ct.spacing_mm),
                "dtype": str(ct.array.dtype),
            },
            "shape": list(shape),
            "affine": affine.tolist(),
            "orientation": "".join(CANONICAL_AXCODES),
            "spacing_mm": [float(s) for s in spacing_mm],
            "image_interpolation_order": IMAGE_ORDER,
            "normalisation": CT_NORMALISATION,
            "classes": sorted(voxels),
            "foreground_voxels": voxels,
        }
        write_json_atomic(tmp / META, meta)
    return meta


def _other_cached_cases(cache: Path, spacing_mm: tuple[float, float, float], exclude: set[str]) -> dict[str, dict]:
    """Complete cases already in ``cache`` from other datasets (ids not in ``exclude``), by case id.

    Raises ``ValueError`` when such a case was prepared at another spacing: one cache holds one spacing.
    """
    metas = {}
    for meta_path in sorted(cache.glob(f"*/{META}")):
        case_id = meta_path.parent.name
        if case_id in exclude or case_id.startswith(_PARTIAL_PREFIX):
            continue
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not np.allclose(meta.get("spacing_mm", [0, 0, 0]), spacing_mm, rtol=0, atol=1e-9):
            raise ValueError(
                f"{cache} holds case {case_id} of another dataset at {meta.get('spacing_mm')} mm, not "
                f"{list(spacing_mm)} mm: use another --out folder for another spacing"
            )
        metas[case_id] = meta
    return metas


def _sources_record(cache: Path, dataset: str | os.PathLike[str], masks_dirs: Sequence[str | os.PathLike[str]]) -> dict:
    """The manifest's list of prepared datasets: earlier entries plus this one (no duplicates)."""
    try:
        earlier = json.loads((cache / MANIFEST).read_text(encoding="utf-8")).get("datasets", [])
    except (OSError, json.JSONDecodeError):
        earlier = []
    entry = {"dataset": str(Path(dataset).resolve()), "masks_dirs": [str(Path(d).resolve()) for d in masks_dirs]}
    return {"datasets": [e for e in earlier if e.get("dataset") != entry["dataset"]] + [entry]}


def _manifest_entry(meta: dict) -> dict:
    return {"dir": meta["case_id"], "classes": meta["classes"], "shape": meta["shape"]}


def write_manifest(
    cache_dir: Path, spacing_mm: tuple[float, float, float], metas: dict[str, dict], extra: dict
) -> None:
    """Writes ``CACHE/manifest.json`` atomically from the per-case metas (sorted by case id)."""
    write_json_atomic(cache_dir / MANIFEST, {
        "format": "rsuper-cache",
        "format_version": CACHE_FORMAT_VERSION,
        "rsuper_version": __version__,
        "spacing_mm": [float(s) for s in spacing_mm],
        "orientation": "".join(CANONICAL_AXCODES),
        "normalisation": CT_NORMALISATION,
        **extra,
        "cases": {cid: _manifest_entry(metas[cid]) for cid in sorted(metas)},
    })


def merge_masks(cases: list[Case], masks_dirs: Sequence[str | os.PathLike[str]]) -> list[Case]:
    """Cases whose masks include those of ``masks_dirs`` (``DIR/<case>/segmentations/<class>.nii.gz``).

    A class the dataset already has keeps the dataset's file; among masks dirs the first given wins.
    """
    extra = [discover_masks(d) for d in masks_dirs]
    merged = []
    for case in cases:
        paths, labels = dict(case.mask_paths), dict(case.mask_labels)
        for found in extra:
            for name, path in found.get(case.case_id, {}).items():
                paths.setdefault(name, path)
        merged.append(Case(case.case_id, case.ct_path, paths, labels, case.layout))
    return merged


def prepare_dataset(
    dataset: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    spacing_mm: str | float | Sequence[float] = 1.0,
    masks_dirs: Sequence[str | os.PathLike[str]] = (),
    workers: int = 1,
    on_case: Callable[[str, str], None] | None = None,
    allow_non_hu: bool = False,
) -> PrepareResult:
    """Prepares every case of ``dataset`` into ``cache_dir``; resumable and parallel.

    Args:
        dataset: dataset folder (AbdomenAtlas or nnU-Net raw layout).
        cache_dir: output folder (created).
        spacing_mm: training spacing in mm, one number or three (array axis order, RAS).
        masks_dirs: extra mask folders merged into each case (see ``merge_masks``).
        workers: processes; 1 runs in this process.
        on_case: called as ``on_case(case_id, status)`` with status "prepared", "skipped" or "failed".
            An exception it raises stops the run (finished cases stay valid; the manifest is written).
        allow_non_hu: prepare CTs whose values are not Hounsfield units (``rsuper check``'s ``not_hu``)
            instead of failing them.

    A failing case is recorded in ``PrepareResult.failed`` and the others continue. The manifest lists
    the cases that are complete in the cache.
    """
    spacing = parse_spacing(spacing_mm)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f"{_PARTIAL_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    cases = merge_masks(discover_cases(dataset), masks_dirs)
    # Several datasets may share one cache (e.g. a mask dataset and a report dataset): keep the others.
    metas: dict[str, dict] = _other_cached_cases(cache, spacing, {c.case_id for c in cases})
    extra = _sources_record(cache, dataset, masks_dirs)
    result = PrepareResult()
    todo: list[Case] = []
    for case in cases:
        meta = _is_done(cache / case.case_id, case_sources(case), spacing)
        if meta is None:
            todo.append(case)
        else:
            metas[case.case_id] = meta
            result.skipped.append(case.case_id)
            if on_case is not None:
                on_case(case.case_id, "skipped")

    def finish(case_id: str, meta: dict | None, error: BaseException | None) -> None:
        if error is None:
            metas[case_id] = meta
            result.prepared.append(case_id)
        else:
            result.failed[case_id] = f"{type(error).__name__}: {error}"
        if on_case is not None:
            on_case(case_id, "prepared" if error is None else "failed")

    try:
        if workers <= 1:
            for case in todo:
                try:
                    meta = prepare_case(case, cache, spacing, allow_non_hu)
                except CASE_ERRORS as exc:
                    finish(case.case_id, None, exc)
                else:
                    finish(case.case_id, meta, None)
        else:
            _run_pool(todo, cache, spacing, workers, finish, allow_non_hu)
    finally:
        write_manifest(cache, spacing, metas, extra)
    return result


def _run_pool(
    todo: list[Case], cache: Path, spacing: tuple[float, float, float], workers: int,
    finish: Callable[[str, dict | None, BaseException | None], None], allow_non_hu: bool = False,
) -> None:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: dict[Future, str] = {pool.submit(prepare_case, c, cache, spacing, allow_non_hu): c.case_id
                                      for c in todo}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    case_id = pending.pop(future)
                    error = future.exception()
                    if error is not None and not isinstance(error, CASE_ERRORS):
                        raise error
                    finish(case_id, None if error else future.result(), error)
        finally:
            for future in pending:
                future.cancel()


def load_manifest(cache_dir: str | os.PathLike[str]) -> dict:
    """The cache's manifest.json (raises ``FileNotFoundError`` with the fix when it is missing)."""
    path = Path(cache_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `rsuper prepare DATASET --out {cache_dir}` first")
    return json.loads(path.read_text(encoding="utf-8"))


def load_cached_case(cache_dir: str | os.PathLike[str], case_id: str, mmap: bool = True) -> CachedCase:
    """Loads one prepared case; with ``mmap`` the arrays are read-only ``np.memmap`` views of the .npy files."""
    cache = Path(cache_dir)
    case_dir = cache / case_id
    meta_path = case_dir / META
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"case {case_id!r} is not in the cache {cache} (no {meta_path}); run `rsuper prepare` for it"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    mode = "r" if mmap else None
    image = np.load(case_dir / "ct.npy", mmap_mode=mode)
    names = [labels.canonical_class_name(name, meta_path) for name in meta["classes"]]  # file names: plain only
    masks = {name: np.load(case_dir / "masks" / f"{name}.npy", mmap_mode=mode) for name in names}
    for name, mask in masks.items():
        if mask.shape != image.shape:
            raise ValueError(f"cache {case_dir}: mask {name} shape {mask.shape} != image shape {image.shape}")
    return CachedCase(
        case_id=case_id,
        image=image,
        masks=masks,
        affine=np.asarray(meta["affine"], dtype=np.float64),
        spacing_mm=tuple(float(s) for s in meta["spacing_mm"]),  # type: ignore[arg-type]
        meta=meta,
    )
