"""``rsuper extract`` as a library call: reports CSV in; tumors.csv, cases.csv, findings.jsonl out.

``findings.jsonl`` gets one line per case as soon as it is done (with backend, model, prompt version,
evidence and the sha256 of the report text), so a rerun skips the cases already done and a crash loses
nothing; the two tables are then rewritten atomically from it. A case is reused only when its report text
(sha256), backend, model and prompt version all match the earlier line and that line has no error; a torn
last line left by a crash is cut off (with a warning) before anything is appended. Bad rows (empty
report, duplicate id) are recorded with an error message and never stop the other rows.

Example:
    >>> summary = run_extraction("reports.csv", "out/extract", backend="rules")
    >>> summary.done, summary.failed
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rsuper.reports.cache import AnswerCache, repair_torn_tail, text_sha256
from rsuper.reports.llm import LLMExtractor, LLMOptions
from rsuper.reports.prompt import PROMPT_VERSION
from rsuper.reports.rules import extract_rules
from rsuper.reports.schema import CaseFindings
from rsuper.reports.tables import TEXT_COLUMNS, read_reports_csv, write_cases_csv, write_tumors_csv

__all__ = ["TEXT_COLUMNS", "ExtractionSummary", "ReportRow", "load_findings", "read_reports", "run_extraction"]

FINDINGS_FILE = "findings.jsonl"


@dataclass
class ReportRow:
    """One input row: case id, report text, a problem that stops it (or ``None``) and a warning note."""

    case_id: str
    text: str
    problem: str | None = None
    note: str | None = None


@dataclass
class ExtractionSummary:
    """What a run did: cases extracted now, reused from an earlier run, skipped (bad input rows: empty
    report, empty or repeated id) and failed (extraction error; ``failures`` maps case id to the error).
    ``messages`` are one-line warnings (bad rows, encodings, repaired files, re-asked cache entries)."""

    out_dir: Path
    done: int = 0
    reused: int = 0
    skipped: int = 0
    failed: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def read_reports(path: str | os.PathLike[str]) -> list[ReportRow]:
    """Reads a reports CSV (``rsuper.reports.tables.read_reports_csv``: id column ``BDMAP ID``/``Encrypted
    Accession Number``/``id``, text column ``Report``/``Findings``/``report``; rows that are not UTF-8 are
    read as Windows-1252). Empty reports and repeated ids are kept as rows with a ``problem``. Raises
    ``ValueError`` naming the file when a column is missing.
    """
    return _report_rows(read_reports_csv(path).frame)


def _report_rows(table: pd.DataFrame) -> list[ReportRow]:
    rows: list[ReportRow] = []
    seen: set[str] = set()
    for case_id, text, number in zip(table["id"], table["report"], table["source_row"]):
        case_id, text = str(case_id).strip(), str(text)
        problem = None
        if not case_id:
            problem = f"row {number}: empty case id"
            case_id = f"<row {number}>"
        elif case_id in seen:
            problem = f"row {number}: duplicate id {case_id!r} (the first row with this id is used)"
        elif not text.strip() or text.strip().lower() in ("nan", "none", "null"):
            problem = f"row {number}: empty report for {case_id!r}"
        note = None
        if "\ufffd" in text:
            text = text.replace("\ufffd", " ")
            note = (f"row {number}: {case_id!r} has characters that could not be decoded (U+FFFD); they were "
                    "replaced by spaces. Check the text of this report")
        seen.add(case_id)
        rows.append(ReportRow(case_id, text, problem, note))
    return rows


def load_findings(path: str | os.PathLike[str]) -> dict[str, CaseFindings]:
    """Findings already in a findings.jsonl (last line per case wins; a torn last line is ignored)."""
    return {case_id: findings for case_id, (findings, _) in _load_records(path).items()}


def _load_records(path: str | os.PathLike[str]) -> dict[str, tuple[CaseFindings, str | None]]:
    """``{case_id: (findings, sha256 of the report text they came from)}``; last line per case wins."""
    found: dict[str, tuple[CaseFindings, str | None]] = {}
    path = Path(path)
    if not path.is_file():
        return found
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                found[record["case_id"]] = (CaseFindings.model_validate(record), record.get("report_sha256"))
            except (json.JSONDecodeError, KeyError, ValueError, TypeError):
                continue
    return found


def run_extraction(
    reports_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    backend: str = "rules",
    llm_options: LLMOptions | None = None,
    cache_path: str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExtractionSummary:
    """Extracts every report of ``reports_csv`` into ``out_dir`` (resuming earlier work there).

    Args:
        backend: ``rules`` (offline) or ``llm`` (needs ``llm_options``).
        cache_path: LLM answer cache (default ``out_dir/llm_cache.jsonl``).
        progress: called with the number of rows just finished (for a progress bar).
    """
    if backend not in ("rules", "llm"):
        raise ValueError(f"unknown backend {backend!r}; use 'rules' or 'llm'")
    if backend == "llm" and llm_options is None:
        raise ValueError("the llm backend needs --base-url and --model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports = read_reports_csv(reports_csv)
    rows = _report_rows(reports.frame)
    findings_path = out / FINDINGS_FILE
    summary = ExtractionSummary(out)
    if reports.warning:
        summary.messages.append(reports.warning)
    if torn := repair_torn_tail(findings_path):
        summary.messages.append(torn)
    previous = _load_records(findings_path)
    model = llm_options.model if backend == "llm" else None
    version = PROMPT_VERSION if backend == "llm" else None
    todo: list[ReportRow] = []
    for row in rows:
        if row.note:
            summary.messages.append(row.note)
        if row.problem:
            summary.skipped += 1
            summary.messages.append(row.problem)
            if "duplicate" not in row.problem:
                _append(findings_path, CaseFindings(case_id=row.case_id, backend=backend, error=row.problem), row.text)
            if progress:
                progress(1)
            continue
        known, known_sha = previous.get(row.case_id, (None, None))
        if (known is not None and known.error is None and known_sha == text_sha256(row.text)
                and (known.backend, known.model, known.prompt_version) == (backend, model, version)):
            summary.reused += 1
            if progress:
                progress(1)
            continue
        todo.append(row)

    def record(findings: CaseFindings) -> None:
        _append(findings_path, findings, texts[findings.case_id])
        if findings.error:
            summary.failed += 1
            summary.failures[findings.case_id] = findings.error
        else:
            summary.done += 1
        if progress:
            progress(1)

    texts = {row.case_id: row.text for row in todo}
    if backend == "rules":
        for row in todo:
            try:
                record(extract_rules(row.case_id, row.text))
            except Exception as error:  # noqa: BLE001 (one bad report must not stop the others)
                record(CaseFindings(case_id=row.case_id, error=f"rules backend failed: {error!r}"))
    elif todo:
        cache = AnswerCache(cache_path or out / "llm_cache.jsonl")
        summary.messages.extend(cache.notes)
        extractor = LLMExtractor(llm_options, cache)
        asyncio.run(extractor.extract_many([(row.case_id, row.text) for row in todo], on_done=record))
        summary.messages.extend(extractor.warnings)
    final = load_findings(findings_path)
    ordered = [final[row.case_id] for row in rows if not (row.problem and "duplicate" in row.problem)
               and row.case_id in final]
    write_tumors_csv(ordered, out / "tumors.csv")
    write_cases_csv(ordered, out / "cases.csv")
    return summary


def _append(path: Path, findings: CaseFindings, text: str) -> None:
    record = findings.model_dump(mode="json")
    record["report_sha256"] = text_sha256(text)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
