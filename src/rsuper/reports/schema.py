"""Tumor facts of one report (docs/method.md §2) as pydantic models, and the volume-from-diameters rule.

Example:
    >>> lesion = Lesion(organ="Pancreatic", location=["uncinate"], size_mm=[11, 10])
    >>> lesion.organ, lesion.location, round(lesion.volume_mm3, 1)
    ('pancreas', ['head'], 604.8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rsuper.reports.vocabulary import canonical_organ, normalise_location

Attenuation = Literal["hypo", "hyper", "iso", "heterogeneous", "u"]
Certainty = Literal["certain", "high", "low", "u"]


def volume_from_diameters(diameters_mm: Sequence[float]) -> float:
    """Ellipsoid volume in mm³ from 1-3 diameters in mm (docs/method.md §2).

    One diameter ``d``: sphere ``π d³ / 6``; two ``a, b``: third axis ``(a + b) / 2``; three: ``π a b c / 6``.
    Raises ``ValueError`` for an empty list, more than 3 values or a non-positive diameter.
    """
    values = [float(d) for d in diameters_mm]
    if not 1 <= len(values) <= 3:
        raise ValueError(f"need 1-3 diameters in mm, got {len(values)}: {values}")
    if any(not math.isfinite(d) or d <= 0 for d in values):
        raise ValueError(f"diameters must be positive finite mm values, got {values}")
    if len(values) == 1:
        values = values * 3
    elif len(values) == 2:
        values.append((values[0] + values[1]) / 2)
    a, b, c = values
    return math.pi * a * b * c / 6.0


class Lesion(BaseModel):
    """One reported lesion (or one ``multiple`` row standing for "several more, count not given").

    ``location`` holds docs/method.md §2 tokens (liver ``segment 1``..``segment 8``, pancreas ``head``/``body``/
    ``tail``, kidney and adrenal gland ``left``/``right``); empty means not stated (``u``). ``size_mm``
    holds the current 1-3 diameters in mm, ``None`` when not stated.
    """

    model_config = ConfigDict(extra="ignore")

    organ: str = Field(description="Canonical organ: liver, pancreas, kidney, spleen, adrenal gland, ...")
    location: list[str] = Field(
        default_factory=list,
        description="Sub-segment tokens: liver 'segment 1'..'segment 8'; pancreas head/body/tail; "
        "kidney/adrenal gland left/right; [] when not stated.",
    )
    size_mm: list[float] | None = Field(
        default=None, description="Current 1-3 diameters in mm (cm converted); null when not stated."
    )
    multiple: bool = Field(default=False, description="True for a row meaning 'several more lesions, count not given'.")
    type: str = Field(default="u", description="Lesion type as written (cyst, metastasis, PDAC, ...) or 'u'.")
    attenuation: Attenuation = Field(default="u", description="hypo, hyper, iso, heterogeneous or u.")
    certainty: Certainty = Field(default="u", description="certain, high, low or u.")
    evidence: str = Field(default="", description="The report sentence the lesion comes from.")

    @field_validator("organ", mode="before")
    @classmethod
    def _organ(cls, value: object) -> str:
        organ = canonical_organ(str(value))
        if not organ:
            raise ValueError("organ must be a non-empty name such as 'liver'")
        return organ

    @field_validator("location", mode="before")
    @classmethod
    def _location(cls, value: object, info: ValidationInfo) -> list[str]:
        return normalise_location(info.data.get("organ", ""), value)

    @field_validator("size_mm", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
            return None
        if isinstance(value, (int, float)):
            return [value]
        return value

    @field_validator("size_mm")
    @classmethod
    def _size_range(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        if not 1 <= len(value) <= 3:
            raise ValueError(f"size_mm needs 1-3 diameters, got {value}")
        if any(not math.isfinite(d) or d <= 0 for d in value):
            raise ValueError(f"size_mm diameters must be positive mm values, got {value}")
        return [round(float(d), 2) for d in value]

    @model_validator(mode="after")
    def _multiple_row(self) -> Lesion:
        if self.multiple:
            self.size_mm = None
            self.location = [t for t in self.location if t in ("left", "right")]
        return self

    @property
    def volume_mm3(self) -> float | None:
        """Estimated volume in mm³ from ``size_mm``; ``None`` when the size is unknown."""
        return volume_from_diameters(self.size_mm) if self.size_mm else None

    @property
    def largest_diameter_mm(self) -> float | None:
        """Largest current diameter in mm; ``None`` when the size is unknown."""
        return max(self.size_mm) if self.size_mm else None


class CaseFindings(BaseModel):
    """Everything extracted from one report. ``error`` is set (and ``lesions`` empty) when extraction failed."""

    model_config = ConfigDict(extra="ignore")

    case_id: str
    lesions: list[Lesion] = Field(default_factory=list)
    backend: str = "rules"
    model: str | None = None
    prompt_version: str | None = None
    error: str | None = None

    @property
    def no_lesion(self) -> bool:
        """True when the report states no lesion at all (and extraction did not fail)."""
        return self.error is None and not self.lesions

    @property
    def extractor(self) -> str:
        """Short provenance tag: ``rules`` or ``llm:<model>@<prompt version>``."""
        if self.backend == "llm":
            return f"llm:{self.model}@{self.prompt_version}"
        return self.backend

    def organ_lesions(self, organ: str) -> list[Lesion]:
        """Lesions of one canonical organ, in report order."""
        return [lesion for lesion in self.lesions if lesion.organ == organ]

    def all_hypoattenuating(self, organ: str) -> bool:
        """The report lists tumors of ``organ`` and calls every one of them hypoattenuating."""
        lesions = self.organ_lesions(organ)
        return bool(lesions) and all(lesion.attenuation == "hypo" for lesion in lesions)
