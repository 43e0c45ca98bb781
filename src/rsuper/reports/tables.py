"""R-Super-compatible tables: ``tumors.csv`` (one row per lesion) and ``cases.csv`` (one row per CT).

Column names follow docs/method.md §2 (and R-Super's released metadata, including the ``Unknow`` spelling),
so tables written here and R-Super's own metadata CSVs are read by the same functions. Cases whose
extraction failed (``CaseFindings.error``) are left out of both tables: a failure is not "no lesion".

Every CSV here, and every reports CSV (``read_reports_csv``, used by ``rsuper extract`` and ``rsuper check``),
is read by ``read_csv_text``: UTF-8, with cells that are not UTF-8 decoded as Windows-1252 (Excel's default
on Windows) and named in a warning, so ``3.1 × 2.4 cm`` keeps its ``×``.

Example:
    >>> write_tumors_csv(findings, "out/tumors.csv")
    >>> findings_again = read_tumors_csv("out/tumors.csv")  # {case_id: CaseFindings}
    >>> reports = read_reports_csv("reports.csv")  # .frame: id, report, source_row; .warning
"""

from __future__ import annotations

import codecs
import io
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from rsuper.atomic import atomic_path
from rsuper.reports.schema import CaseFindings, Lesion
from rsuper.reports.vocabulary import CORE_ORGANS, ORGANS, canonical_organ

ID_COLUMNS: tuple[str, ...] = ("BDMAP ID", "Encrypted Accession Number", "id", "case_id", "Case ID")
TEXT_COLUMNS: tuple[str, ...] = ("Report", "Findings", "report", "findings", "text", "Report Text")
NO_LESION_ID = "no lesion"
TUMOR_COLUMNS: tuple[str, ...] = (
    "BDMAP ID",
    "Tumor ID",
    "Standardized Organ",
    "Standardized Location",
    "Tumor Size (mm)",
    "Unknow Tumor Size",
    "no lesion",
    "Tumor Type",
    "Tumor Attenuation",
    "Certainty",
    "Estimated Tumor Volume (mm3)",
    "Evidence",
    "Extractor",
)
_UNKNOWN = {"", "u", "unknown", "nan", "none", "n/a", "na", "not stated", "-"}
_TRUE = {"yes", "y", "true", "1", "1.0", "t"}


class OrganSummary(NamedTuple):
    """Per-CT facts of one organ: lesion instances (a ``multiple`` row counts as one) and largest diameter."""

    count: int
    largest_mm: float | None


def organ_column_word(organ: str) -> str:
    """Organ word used in per-CT column names (``pancreas`` is spelled ``pancreatic``)."""
    return "pancreatic" if organ == "pancreas" else organ


def count_column(organ: str) -> str:
    """``number of <organ> lesion instances``."""
    return f"number of {organ_column_word(organ)} lesion instances"


def largest_column(organ: str) -> str:
    """``largest <organ> lesion diameter (cm)``."""
    return f"largest {organ_column_word(organ)} lesion diameter (cm)"


def format_size(lesion: Lesion) -> str:
    """``Tumor Size (mm)`` cell: ``a x b x c`` / ``a x b`` / ``a``, ``u`` or ``multiple``."""
    if lesion.multiple:
        return "multiple"
    if not lesion.size_mm:
        return "u"
    return " x ".join(f"{d:g}" for d in lesion.size_mm)


def parse_size_mm(value: object, default_unit: str = "mm") -> tuple[list[float] | None, bool]:
    """Parses a size cell into (diameters in mm or None, is-multiple).

    Accepts ``11 x 10``, ``11x10``, ``11 × 10``, ``11, 10``, ``1.1 x 1.0 cm``, ``15 mm``, ``u``, empty,
    NaN and ``multiple``. Numbers are in ``default_unit`` unless the cell names ``cm`` or ``mm``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, False
    text = str(value).strip().lower()
    if text in _UNKNOWN:
        return None, False
    if "multiple" in text:
        return None, True
    unit = "cm" if re.search(r"\bcm\b|\dcm", text) else "mm" if re.search(r"mm", text) else default_unit
    numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", text)]
    numbers = [n * 10.0 if unit == "cm" else n for n in numbers if n > 0]
    if not numbers:
        return None, False
    return numbers[:3], False


def find_column(columns: Iterable[str], candidates: Iterable[str]) -> str | None:
    """First column of ``columns`` equal (case/space-insensitive) to one of ``candidates``."""
    keyed = {re.sub(r"\s+", " ", str(c)).strip().lower(): c for c in columns}
    for candidate in candidates:
        found = keyed.get(candidate.lower())
        if found is not None:
            return found
    return None


def summarise(findings: CaseFindings) -> dict[str, OrganSummary]:
    """Per-organ lesion count and largest diameter (mm) of one case; organs without lesions are absent."""
    summary: dict[str, OrganSummary] = {}
    for organ in dict.fromkeys(lesion.organ for lesion in findings.lesions):
        lesions = findings.organ_lesions(organ)
        sizes = [lesion.largest_diameter_mm for lesion in lesions if lesion.largest_diameter_mm]
        summary[organ] = OrganSummary(len(lesions), max(sizes) if sizes else None)
    return summary


def tumor_rows(findings: CaseFindings) -> list[dict[str, object]]:
    """Rows of ``tumors.csv`` for one case (one ``no lesion`` row when the report has no lesion)."""
    if findings.no_lesion:
        row: dict[str, object] = {c: "" for c in TUMOR_COLUMNS}
        row.update({"BDMAP ID": findings.case_id, "Tumor ID": NO_LESION_ID, "no lesion": "yes"})
        row.update({"Unknow Tumor Size": "no", "Extractor": findings.extractor})
        return [row]
    unknown_size = {
        organ: any(lesion.multiple or not lesion.size_mm for lesion in findings.organ_lesions(organ))
        for organ in {lesion.organ for lesion in findings.lesions}
    }
    rows = []
    for index, lesion in enumerate(findings.lesions, start=1):
        volume = lesion.volume_mm3
        rows.append(
            {
                "BDMAP ID": findings.case_id,
                "Tumor ID": f"tumor {index}",
                "Standardized Organ": lesion.organ,
                "Standardized Location": " / ".join(lesion.location) or "u",
                "Tumor Size (mm)": format_size(lesion),
                "Unknow Tumor Size": "yes" if unknown_size[lesion.organ] else "no",
                "no lesion": "no",
                "Tumor Type": lesion.type,
                "Tumor Attenuation": lesion.attenuation,
                "Certainty": lesion.certainty,
                "Estimated Tumor Volume (mm3)": "" if volume is None else round(volume, 1),
                "Evidence": lesion.evidence,
                "Extractor": findings.extractor,
            }
        )
    return rows


def write_tumors_csv(findings: Iterable[CaseFindings], path: str | os.PathLike[str]) -> Path:
    """Writes the per-tumor table atomically; failed cases are skipped. Returns the path."""
    rows = [row for case in findings if case.error is None for row in tumor_rows(case)]
    frame = pd.DataFrame(rows, columns=list(TUMOR_COLUMNS))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def write_cases_csv(findings: Iterable[CaseFindings], path: str | os.PathLike[str]) -> Path:
    """Writes the per-CT table atomically (liver, pancreas, kidney always; other organs when seen).

    Counts are 0 when an organ has no lesion; the largest diameter (cm) is 0 then and empty when the
    organ's lesions have no size.
    """
    cases = [case for case in findings if case.error is None]
    summaries = [summarise(case) for case in cases]
    seen = {organ for summary in summaries for organ in summary}
    organs = [o for o in ORGANS if o in CORE_ORGANS or o in seen] + sorted(seen - set(ORGANS))
    columns = ["BDMAP ID"] + [c for o in organs for c in (count_column(o), largest_column(o))] + ["no lesion"]
    rows = []
    for case, summary in zip(cases, summaries):
        row: dict[str, object] = {"BDMAP ID": case.case_id, "no lesion": int(case.no_lesion)}
        for organ in organs:
            facts = summary.get(organ, OrganSummary(0, 0.0))
            row[count_column(organ)] = facts.count
            row[largest_column(organ)] = "" if facts.largest_mm is None else round(facts.largest_mm / 10.0, 2)
        rows.append(row)
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False)
    return Path(path)


class DecodedCSV(NamedTuple):
    """A CSV read as strings; ``non_utf8_rows``: positions in ``frame`` of rows with a cell that was not
    valid UTF-8 and was decoded as Windows-1252."""

    frame: pd.DataFrame
    non_utf8_rows: list[int]


class ReportsTable(NamedTuple):
    """A reports CSV: ``frame`` has columns ``id`` (stripped), ``report`` and ``source_row`` (the CSV row,
    header = 1); ``warning`` is one line naming the rows that were not UTF-8 (``None`` when all were)."""

    frame: pd.DataFrame
    warning: str | None


def read_csv_text(path: str | os.PathLike[str]) -> DecodedCSV:
    """Reads a CSV as strings (no NaN: empty cells are ``""``), decoding it as UTF-8 (a BOM is allowed).

    A cell that is not valid UTF-8 is decoded as Windows-1252 instead (bytes undefined there become
    U+FFFD), so a ``×`` saved by Excel on Windows stays ``×`` instead of becoming a gap (``3.1 2.4 cm``
    would read as 3.1 mm). Raises ``FileNotFoundError`` or ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ValueError(f"{path} is UTF-16 text; save it as 'CSV UTF-8' (comma-separated) and rerun")
    raw = raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    try:
        if text is not None:
            return DecodedCSV(pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False), [])
        # latin-1 maps every byte to one character, so each cell's bytes can be recovered and decoded alone
        frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, encoding="latin-1")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"cannot read {path} as a CSV table: {error}") from None
    frame.columns = [_decode_cell(str(c))[0] for c in frame.columns]
    bad: set[int] = set()
    columns = {}
    for name in frame.columns:
        decoded = []
        for position, cell in enumerate(frame[name]):
            value, fallback = _decode_cell(cell)
            decoded.append(value)
            if fallback:
                bad.add(position)
        columns[name] = decoded
    return DecodedCSV(pd.DataFrame(columns, columns=frame.columns, index=frame.index, dtype=str), sorted(bad))


def _decode_cell(cell: str) -> tuple[str, bool]:
    """A latin-1-read cell decoded as UTF-8, else Windows-1252; second value: the fallback was used."""
    if cell.isascii():
        return cell, False
    data = cell.encode("latin-1")
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), True


def non_utf8_warning(path: str | os.PathLike[str], rows: Sequence[str]) -> str:
    """One line naming the rows (ids) of ``path`` that were read as Windows-1252."""
    shown = ", ".join(rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
    return (f"{Path(path).name}: {len(rows)} row(s) are not UTF-8 ({shown}); read them as Windows-1252 so "
            "'×' and '°' survive. Check those rows, or save the file as UTF-8 to silence this")


def read_reports_csv(path: str | os.PathLike[str]) -> ReportsTable:
    """Reads a reports CSV: id column ``BDMAP ID`` / ``Encrypted Accession Number`` / ``id`` (/ ``case_id``),
    text column ``Report`` / ``Findings`` / ``report`` / ``text`` (case-insensitive; first one present wins).

    Rows are kept as they are (empty ids, empty reports and repeated ids are for the caller to judge).
    Raises ``FileNotFoundError`` or ``ValueError`` naming the file and the columns found.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reports table not found: {path}")
    frame, non_utf8 = read_csv_text(path)
    id_col = find_column(frame.columns, ID_COLUMNS)
    text_col = find_column(frame.columns, TEXT_COLUMNS)
    if id_col is None or text_col is None:
        missing = "case id" if id_col is None else "report text"
        expected = ID_COLUMNS if id_col is None else TEXT_COLUMNS
        raise ValueError(
            f"{path}: no {missing} column; expected one of {list(expected)}, found {list(frame.columns)}. "
            "Rename the column (e.g. to 'BDMAP ID' and 'Report')."
        )
    table = pd.DataFrame({
        "id": frame[id_col].str.strip(), "report": frame[text_col], "source_row": frame.index + 2,
    })
    labels = list(dict.fromkeys(table["id"].iat[i] or f"row {table['source_row'].iat[i]}" for i in non_utf8))
    return ReportsTable(table, non_utf8_warning(path, labels) if labels else None)


def _read_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A tumors/cases table; rows that were not UTF-8 are named in a ``UserWarning``."""
    frame, non_utf8 = read_csv_text(path)
    if non_utf8:
        id_col = find_column(frame.columns, ID_COLUMNS)
        labels = [str(frame[id_col].iat[i]).strip() if id_col else f"row {i + 2}" for i in non_utf8]
        warnings.warn(non_utf8_warning(path, list(dict.fromkeys(labels))), stacklevel=3)
    return frame


def _id_column(frame: pd.DataFrame, path: str | os.PathLike[str]) -> str:
    column = find_column(frame.columns, ID_COLUMNS)
    if column is None:
        raise ValueError(
            f"{path}: no case id column; expected one of {list(ID_COLUMNS)}, found {list(frame.columns)}"
        )
    return column


def read_tumors_csv(path: str | os.PathLike[str]) -> dict[str, CaseFindings]:
    """Reads a per-tumor table (ours or R-Super's released metadata) into ``{case_id: CaseFindings}``.

    Extra columns are ignored. Sizes may be ``u``, empty, ``multiple``, separated by ``x``/``×``/``,``
    and in cm when the cell or the column name says so. A row whose ``Tumor ID`` or ``no lesion`` cell
    says no lesion, or whose organ is empty/``u``, only registers the case.
    """
    frame = _read_csv(path)
    id_col = _id_column(frame, path)
    organ_col = find_column(frame.columns, ("Standardized Organ", "Organ", "organ"))
    if organ_col is None:
        raise ValueError(f"{path}: no organ column ('Standardized Organ'); found {list(frame.columns)}")
    location_col = find_column(frame.columns, ("Standardized Location", "Location", "location"))
    size_col = find_column(frame.columns, ("Tumor Size (mm)", "Tumor Size (cm)", "Tumor Size", "Size", "size_mm"))
    size_unit = "cm" if size_col and "(cm)" in size_col.lower() else "mm"
    tumor_id_col = find_column(frame.columns, ("Tumor ID",))
    no_lesion_col = find_column(frame.columns, ("no lesion",))
    extras = {
        name: find_column(frame.columns, candidates)
        for name, candidates in {
            "type": ("Tumor Type", "Type"),
            "attenuation": ("Tumor Attenuation", "Attenuation"),
            "certainty": ("Certainty",),
            "evidence": ("Evidence",),
        }.items()
    }
    extractor_col = find_column(frame.columns, ("Extractor",))
    cases: dict[str, CaseFindings] = {}
    for record in frame.to_dict("records"):
        case_id = str(record[id_col]).strip()
        if not case_id:
            continue
        case = cases.get(case_id)
        if case is None:
            backend, model, version = _parse_extractor(record.get(extractor_col, "") if extractor_col else "")
            case = cases[case_id] = CaseFindings(
                case_id=case_id, backend=backend, model=model, prompt_version=version
            )
        organ = str(record[organ_col]).strip()
        tumor_id = str(record.get(tumor_id_col, "")).strip().lower() if tumor_id_col else ""
        says_none = no_lesion_col is not None and str(record[no_lesion_col]).strip().lower() in _TRUE
        if tumor_id == NO_LESION_ID or says_none or organ.lower() in _UNKNOWN:
            continue
        size, multiple = parse_size_mm(record[size_col], size_unit) if size_col else (None, False)
        fields: dict[str, object] = {
            "organ": organ,
            "location": record[location_col] if location_col else [],
            "size_mm": size,
            "multiple": multiple,
        }
        for name, column in extras.items():
            value = str(record.get(column, "")).strip() if column else ""
            if value:
                fields[name] = _clean_choice(name, value)
        case.lesions.append(Lesion.model_validate(fields))
    return cases


def _clean_choice(name: str, value: str) -> str:
    """Maps free attenuation/certainty spellings onto the schema's choices (others -> ``u``)."""
    lower = value.lower()
    if name == "attenuation":
        for key in ("hypo", "hyper", "iso", "hetero"):
            if lower.startswith(key):
                return "heterogeneous" if key == "hetero" else key
        return "u"
    if name == "certainty":
        return lower if lower in ("certain", "high", "low") else "u"
    return value


def _parse_extractor(tag: object) -> tuple[str, str | None, str | None]:
    text = str(tag or "").strip()
    match = re.fullmatch(r"llm:(.*)@([^@]*)", text)
    if match:
        return "llm", match.group(1), match.group(2)
    return (text or "table"), None, None


def read_cases_csv(path: str | os.PathLike[str]) -> dict[str, dict[str, OrganSummary]]:
    """Reads a per-CT table (ours or R-Super's) into ``{case_id: {organ: OrganSummary}}``.

    Organs come from the ``number of <organ> lesion instances`` columns; organs with a count of 0 are
    left out. ``largest ... diameter (cm)`` (or ``(mm)``) becomes ``largest_mm``; empty means unknown.
    """
    frame = _read_csv(path)
    id_col = _id_column(frame, path)
    counts: dict[str, str] = {}
    largest: dict[str, tuple[str, float]] = {}
    for column in frame.columns:
        name = re.sub(r"\s+", " ", str(column)).strip().lower()
        match = re.fullmatch(r"number of (.+?) (?:lesion|tumor|tumour) instances", name)
        if match:
            counts[canonical_organ(match.group(1))] = column
        match = re.fullmatch(r"largest (.+?) (?:lesion|tumor|tumour) diameter \((cm|mm)\)", name)
        if match:
            largest[canonical_organ(match.group(1))] = (column, 10.0 if match.group(2) == "cm" else 1.0)
    result: dict[str, dict[str, OrganSummary]] = {}
    for record in frame.to_dict("records"):
        case_id = str(record[id_col]).strip()
        if not case_id:
            continue
        organs: dict[str, OrganSummary] = {}
        for organ, column in counts.items():
            count = _to_float(record[column])
            if not count:
                continue
            size = None
            if organ in largest:
                column_l, factor = largest[organ]
                value = _to_float(record[column_l])
                size = value * factor if value else None
            organs[organ] = OrganSummary(int(count), size)
        result[case_id] = organs
    return result


def _to_float(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return None if math.isnan(number) else number
