"""Scores an extraction against gold lesions (``rsuper extract-score``); definitions in docs/reports.md.

Per organ, over the gold cases (a case missing from the prediction counts as "no lesion"):
- presence: case-level "organ has >= 1 lesion"; sensitivity, specificity, F1;
- count accuracy: over cases where gold or prediction has a lesion of the organ, fraction with the same
  number of instances (a ``multiple`` row counts as one);
- diameter within 2 mm: over cases where gold states a largest diameter, fraction whose predicted
  largest diameter is within ``tolerance_mm``;
- location accuracy: over cases where gold locates at least one lesion, fraction whose predicted set of
  location tokens (union over the organ's non-``multiple`` lesions) equals gold's.

Example:
    >>> result = score_dirs("gold/", "pred/")
    >>> result.overall.presence_f1, result.organs["liver"].count_accuracy
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rsuper.reports.schema import CaseFindings
from rsuper.reports.tables import read_tumors_csv


@dataclass
class OrganScore:
    """Counts behind each metric; the metrics are properties (``nan`` when a metric has no cases)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    count_cases: int = 0
    count_correct: int = 0
    diameter_cases: int = 0
    diameter_correct: int = 0
    location_cases: int = 0
    location_correct: int = 0

    @property
    def sensitivity(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def presence_f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def count_accuracy(self) -> float:
        return _ratio(self.count_correct, self.count_cases)

    @property
    def diameter_accuracy(self) -> float:
        return _ratio(self.diameter_correct, self.diameter_cases)

    @property
    def location_accuracy(self) -> float:
        return _ratio(self.location_correct, self.location_cases)

    def add(self, other: OrganScore) -> None:
        """Adds another organ's counts (pooling for the overall score)."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, float | int]:
        """Counts and metrics as a flat dict (for JSON output)."""
        metrics = ("sensitivity", "specificity", "presence_f1", "count_accuracy", "diameter_accuracy",
                   "location_accuracy")
        return {**{n: getattr(self, n) for n in self.__dataclass_fields__}, **{m: getattr(self, m) for m in metrics}}


@dataclass
class ExtractionScore:
    """Per-organ scores, their pooled sum, and the gold cases the prediction lacks."""

    organs: dict[str, OrganScore]
    overall: OrganScore
    missing: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def _organ_facts(case: CaseFindings, organ: str) -> tuple[int, float | None, set[str]]:
    lesions = case.organ_lesions(organ)
    sizes = [x.largest_diameter_mm for x in lesions if x.largest_diameter_mm]
    locations = {t for x in lesions if not x.multiple for t in x.location}
    return len(lesions), (max(sizes) if sizes else None), locations


def score(
    gold: dict[str, CaseFindings], pred: dict[str, CaseFindings], tolerance_mm: float = 2.0
) -> ExtractionScore:
    """Scores ``pred`` against ``gold`` (both ``{case_id: CaseFindings}``), per organ and pooled."""
    organs = sorted({x.organ for c in gold.values() for x in c.lesions} | {x.organ for c in pred.values() for x in c.lesions})
    scores = {organ: OrganScore() for organ in organs}
    missing = sorted(case_id for case_id in gold if case_id not in pred or pred[case_id].error)
    disagreements: list[str] = []
    for case_id, gold_case in gold.items():
        pred_case = pred.get(case_id) or CaseFindings(case_id=case_id)
        for organ in organs:
            s = scores[organ]
            g_count, g_size, g_loc = _organ_facts(gold_case, organ)
            p_count, p_size, p_loc = _organ_facts(pred_case, organ)
            s.tp += g_count > 0 and p_count > 0
            s.fn += g_count > 0 and p_count == 0
            s.fp += g_count == 0 and p_count > 0
            s.tn += g_count == 0 and p_count == 0
            problems = []
            if g_count or p_count:
                s.count_cases += 1
                s.count_correct += g_count == p_count
                if g_count != p_count:
                    problems.append(f"count {g_count} vs {p_count}")
            if g_size is not None:
                s.diameter_cases += 1
                ok = p_size is not None and abs(p_size - g_size) <= tolerance_mm
                s.diameter_correct += ok
                if not ok:
                    problems.append(f"largest {g_size} vs {p_size} mm")
            if g_loc:
                s.location_cases += 1
                s.location_correct += g_loc == p_loc
                if g_loc != p_loc:
                    problems.append(f"location {sorted(g_loc)} vs {sorted(p_loc)}")
            if problems:
                disagreements.append(f"{case_id} {organ}: " + "; ".join(problems))
    overall = OrganScore()
    for organ_score in scores.values():
        overall.add(organ_score)
    return ExtractionScore(scores, overall, missing, disagreements)


def score_dirs(
    gold_dir: str | os.PathLike[str], pred_dir: str | os.PathLike[str], tolerance_mm: float = 2.0
) -> ExtractionScore:
    """Scores ``PRED_DIR/tumors.csv`` against ``GOLD_DIR/tumors.csv`` (folders or the CSV files themselves)."""
    return score(read_tumors_csv(_table(gold_dir)), read_tumors_csv(_table(pred_dir)), tolerance_mm)


def _table(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    return path / "tumors.csv" if path.is_dir() else path
