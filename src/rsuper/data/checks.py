"""Dataset validation behind ``rsuper check``: finds the problems that would silently corrupt training.

Per case: unreadable/truncated NIfTI, CT/mask shape or affine mismatch, non-binary masks (or label-map
values not declared in nnU-Net's dataset.json), CT values that are not Hounsfield units, NaN/Inf, and in a
report dataset lesion files (an empty one would read as "no tumor"). Across the dataset and the reports
table: reports with no CT, CTs with no report, empty reports, duplicate ids. Inputs are only read.

Example:
    >>> problems = check_dataset("AbdomenAtlas", reports_csv="reports.csv")
    >>> blocking = [p for p in problems if p.blocking]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rsuper.data.cases import SEGMENTATIONS_DIR, Case, DatasetLayoutError, discover_cases
from rsuper.data.constants import AFFINE_TOLERANCE_MM
from rsuper.io import NiftiReadError, Volume, load_nifti
from rsuper.labels import is_lesion_class
from rsuper.reports.tables import read_reports_csv

DATASET = "(dataset)"


@dataclass(frozen=True)
class Problem:
    """One finding. ``blocking`` problems make ``rsuper check`` exit non-zero."""

    case_id: str
    kind: str
    message: str
    file: str = ""
    blocking: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def read_reports_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Reads a reports CSV into columns ``id`` and ``report`` (strings; ``source_row`` keeps the CSV row).

    The same reader as ``rsuper extract`` (``rsuper.reports.tables.read_reports_csv``): id columns
    ``BDMAP ID`` / ``Encrypted Accession Number`` / ``id``, report columns ``Report`` / ``Findings`` /
    ``report``; UTF-8, with rows that are not UTF-8 read as Windows-1252.
    """
    return read_reports_csv(path).frame


def hu_problem(array: np.ndarray) -> str | None:
    """Why a CT's values are not Hounsfield units (None when they look like HU); NaN/Inf are ignored.

    The one rule behind ``rsuper check``'s blocking ``not_hu`` problem and the refusal of ``rsuper prepare``
    and ``rsuper predict`` (without ``--allow-non-hu``): min > -200, max < 100 or range < 50 HU.
    """
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            array = array[finite]
    if array.size == 0:
        return None
    low, high = float(array.min()), float(array.max())
    if low > -200 or high < 100 or high - low < 50:
        return (f"CT values span [{low:.4g}, {high:.4g}]; Hounsfield units span about [-1024, >100] "
                "(air below -900). The image looks normalised or rescaled: provide the original HU CT")
    return None


class NotHounsfieldError(ValueError):
    """A CT refused by ``prepare``/``predict`` because ``hu_problem`` finds it is not in Hounsfield units."""


def require_hu(array: np.ndarray, path: str | os.PathLike[str], allow_non_hu: bool = False) -> None:
    """Raises ``NotHounsfieldError`` (one line: the file, the reason, the override) unless the CT at ``path``
    is in HU by ``hu_problem`` or ``allow_non_hu`` is set."""
    reason = None if allow_non_hu else hu_problem(array)
    if reason is not None:
        raise NotHounsfieldError(f"{path}: {reason}, or pass --allow-non-hu to use it as it is "
                                 "(`rsuper check` reports it as not_hu)")


def _ct_problems(case_id: str, ct: Volume, file: str) -> list[Problem]:
    array = ct.array
    problems = []
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            problems.append(Problem(case_id, "nan_inf", f"CT has {int((~finite).sum())} NaN/Inf voxels", file))
    reason = hu_problem(array)
    if reason is not None:
        problems.append(Problem(case_id, "not_hu", reason, file))
    return problems


def _mask_problems(case: Case, ct: Volume | None, root: Path, tol_mm: float, report_case: bool) -> list[Problem]:
    problems = []
    by_file: dict[Path, list[str]] = {}
    for name, path in case.mask_paths.items():
        by_file.setdefault(path, []).append(name)
    for path, names in sorted(by_file.items()):
        file = _rel(path, root)
        try:
            mask = load_nifti(path)
        except NiftiReadError as exc:
            problems.append(Problem(case.case_id, "unreadable", str(exc).replace(str(path), path.name), file))
            continue
        if ct is not None:
            if mask.shape != ct.shape:
                problems.append(Problem(
                    case.case_id, "shape_mismatch", f"mask shape {mask.shape} != CT shape {ct.shape}", file
                ))
            else:
                delta = float(np.abs(mask.affine - ct.affine).max())
                if delta > tol_mm:
                    problems.append(Problem(
                        case.case_id, "affine_mismatch",
                        f"mask affine differs from the CT's by up to {delta:.4g} mm (tolerance {tol_mm} mm); "
                        "resample the mask onto the CT grid",
                        file,
                    ))
        array = mask.array
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            problems.append(Problem(case.case_id, "nan_inf", "mask has NaN/Inf voxels", file))
            continue
        values = np.unique(array)
        allowed = {0, 1} | {case.mask_labels[n] for n in names if n in case.mask_labels}
        extra = [v for v in values.tolist() if v not in allowed]
        if extra:
            what = "label values not in dataset.json" if case.mask_labels else "non-binary values"
            problems.append(Problem(
                case.case_id, "non_binary", f"mask has {what}: {extra[:8]} (allowed {sorted(allowed)})", file
            ))
        if report_case:
            for name in sorted(n for n in names if is_lesion_class(n)):
                label = case.mask_labels.get(name, 1)
                count = int((array == label).sum())
                if count == 0:
                    problems.append(Problem(
                        case.case_id, "empty_lesion",
                        f"empty {name} mask in a report case would be read as 'no tumor' and contradict the "
                        "report; delete lesion files from report cases",
                        file,
                    ))
                else:
                    problems.append(Problem(
                        case.case_id, "lesion_in_report_case",
                        f"{name} mask with {count} voxels: this case will train as a mask case", file,
                        blocking=False,
                    ))
    return problems


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def check_case(case: Case, root: Path, report_case: bool, tol_mm: float = AFFINE_TOLERANCE_MM) -> list[Problem]:
    """Problems of one case (CT readability and HU range, masks against the CT grid, lesion files)."""
    file = _rel(case.ct_path, root)
    try:
        ct = load_nifti(case.ct_path)
    except NiftiReadError as exc:
        message = str(exc).replace(str(case.ct_path), case.ct_path.name)
        problems = [Problem(case.case_id, "unreadable", message, file)]
        ct = None
    else:
        problems = _ct_problems(case.case_id, ct, file)
    return problems + _mask_problems(case, ct, root, tol_mm, report_case)


def _orphan_folders(root: Path, cases: list[Case]) -> list[Problem]:
    known = {c.case_id for c in cases}
    return [
        Problem(p.name, "missing_ct", f"{p.name}/{SEGMENTATIONS_DIR}/ exists but {p.name}/ct.nii.gz does not",
                _rel(p, root), blocking=False)
        for p in sorted(root.iterdir())
        if p.is_dir() and p.name not in known and (p / SEGMENTATIONS_DIR).is_dir()
    ]


def _id_problems(cases: list[Case]) -> list[Problem]:
    seen: dict[str, str] = {}
    problems = []
    for case in cases:
        key = case.case_id.lower()
        if key in seen:
            problems.append(Problem(
                case.case_id, "duplicate_id",
                f"case ids {seen[key]!r} and {case.case_id!r} differ only by letter case", str(case.ct_path),
            ))
        seen[key] = case.case_id
    return problems


def _report_problems(reports: pd.DataFrame, cases: list[Case], csv_name: str) -> list[Problem]:
    problems = []
    for case_id, rows in reports.groupby("id", sort=True):
        if len(rows) > 1:
            same = rows["report"].nunique() == 1
            problems.append(Problem(
                case_id, "duplicate_id",
                f"{len(rows)} report rows (CSV rows {rows['source_row'].tolist()})"
                + (" with identical text" if same else " with different texts: keep one"),
                csv_name, blocking=not same,
            ))
    for row in reports.itertuples():
        if not row.id:
            problems.append(Problem(DATASET, "missing_id", f"CSV row {row.source_row} has no id", csv_name))
        elif not str(row.report).strip():
            problems.append(Problem(row.id, "empty_report", f"CSV row {row.source_row} has an empty report", csv_name))
    case_ids = {c.case_id for c in cases}
    report_ids = set(reports["id"]) - {""}
    for case_id in sorted(case_ids - report_ids):
        problems.append(
            Problem(case_id, "ct_without_report", "CT has no report in the table", csv_name, blocking=False)
        )
    orphans = sorted(report_ids - case_ids)
    if orphans:
        shown = ", ".join(orphans[:10]) + (", ..." if len(orphans) > 10 else "")
        problems.append(Problem(
            DATASET, "report_without_ct", f"{len(orphans)} report ids have no CT in the dataset: {shown}",
            csv_name, blocking=False,
        ))
    return problems


def check_dataset(
    root: str | os.PathLike[str],
    reports_csv: str | os.PathLike[str] | None = None,
    reports_dataset: bool | None = None,
    tol_mm: float = AFFINE_TOLERANCE_MM,
    on_case: Callable[[Case], None] | None = None,
) -> list[Problem]:
    """All problems of a dataset, in case order.

    Args:
        root: dataset folder (AbdomenAtlas or nnU-Net raw layout).
        reports_csv: optional reports table; enables report/CT matching.
        reports_dataset: treat cases with a report as report cases (lesion files flagged). Default: True
            when ``reports_csv`` is given.
        tol_mm: largest allowed difference between CT and mask affine entries, mm.
        on_case: called after each case (progress reporting).
    """
    root = Path(root)
    try:
        cases = discover_cases(root)
    except DatasetLayoutError as exc:
        return [Problem(DATASET, "layout", str(exc), str(root))]
    reports, encoding_warning = read_reports_csv(reports_csv) if reports_csv is not None else (None, None)
    if reports_dataset is None:
        reports_dataset = reports is not None
    with_report = set(reports["id"]) if reports is not None else {c.case_id for c in cases}
    problems = _id_problems(cases) + (_orphan_folders(root, cases) if cases[0].layout == "abdomenatlas" else [])
    for case in cases:
        problems += check_case(case, root, reports_dataset and case.case_id in with_report, tol_mm)
        if on_case is not None:
            on_case(case)
    if reports is not None:
        problems += _report_problems(reports, cases, Path(reports_csv).name)
    if encoding_warning:
        problems.append(Problem(DATASET, "not_utf8", encoding_warning, Path(reports_csv).name, blocking=False))
    return problems
