"""What one evaluation is: its settings and its tables (shared by ``run``, ``report`` and ``compare``).

Example:
    >>> settings = EvaluationSettings(volume_threshold_mm3=50.0, n_bootstrap=200)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from rsuper.evaluate import detection, overlap


@dataclass
class EvaluationSettings:
    """Options: operating point (``volume_threshold_mm3`` or best F1 on ``val_ids``), NSD tolerance (mm),
    bootstrap resamples and seed."""

    volume_threshold_mm3: float | None = None
    val_ids: set[str] | None = None
    nsd_tolerance_mm: float = overlap.DEFAULT_NSD_TOLERANCE_MM
    n_bootstrap: int = detection.DEFAULT_BOOTSTRAP
    seed: int = 0


@dataclass
class EvaluationResult:
    """Tables of one evaluation (empty frames for parts without the needed truth)."""

    name: str
    per_case: pd.DataFrame
    detection: pd.DataFrame = field(default_factory=pd.DataFrame)
    sweep: pd.DataFrame = field(default_factory=pd.DataFrame)
    probability_sweep: pd.DataFrame = field(default_factory=pd.DataFrame)
    roc: pd.DataFrame = field(default_factory=pd.DataFrame)
    overlap: pd.DataFrame = field(default_factory=pd.DataFrame)
    lesions: pd.DataFrame = field(default_factory=pd.DataFrame)
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    settings: dict = field(default_factory=dict)
