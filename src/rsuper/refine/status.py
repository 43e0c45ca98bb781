"""Confidence and status of a refined CT (docs/review_refine.md, "Status rules").

- **agreement of a tumor** = the fraction of its voxels the model itself calls tumor (probability >= 0.5);
- **leftover** = the model's highest lesion probability outside every refined tumor's zone (the tumor dilated
  by 3.5 mm, the Ball Loss border) in the CT's refined lesion channels: a tumor the report does not place there;
- **confidence** of a CT = min(agreement of each refined tumor, 1 - leftover), in [0, 1]; a CT the report
  calls tumor-free has confidence 1 - leftover.

Status: **not refinable** when a reported tumor cannot be built (size unknown, a "multiple" row, more tumors
than ``max_tumors``, no organ mask, no probability map, or with ``strict_location`` a stated location
without its mask). Otherwise each lesion channel (organ) is decided on its own (:func:`decide` on that
organ's tumors and leftover): **accepted** when its confidence >= ``accept_confidence``, each of its tumors
reached at least ``min_fill`` of its reported volume and was grown where the report places it, **needs
review** otherwise. The CT (:func:`combine`) is **accepted** when every organ is, **partly accepted** when
some are (their masks can train while the others are reviewed), **needs review** when none is. Every status
but "accepted" comes with its reasons in words. **from intensity**: a CT whose tumors
of a lesion channel the model is blind on were grown from the CT's darkness instead (``rsuper refine
--intensity-where-blind``); no model confidence, a reason per such organ.

Example:
    >>> decide([TumorCheck("pancreatic tail tumor 1 (20 mm)", agreement=0.9, fill=1.0)], leftover=0.1,
    ...        leftover_place="", warnings=[])
    Decision(status='accepted', confidence=0.9, reasons=[], accepted=())
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rsuper.losses.ball import BORDER_DILATION_MM
from rsuper.losses.geometry import dilate_mm

ACCEPTED, NEEDS_REVIEW, NOT_REFINABLE = "accepted", "needs review", "not refinable"
PARTLY_ACCEPTED, FROM_INTENSITY = "partly accepted", "from intensity"
STATUS_FOLDERS = {ACCEPTED: "accepted", PARTLY_ACCEPTED: "needs_review", NEEDS_REVIEW: "needs_review",
                  FROM_INTENSITY: "from_intensity"}
"""Status -> the folder holding a CT's full set of refined masks (a partly accepted CT's accepted organs are
also written to ``accepted``)."""
CALL_THRESHOLD = 0.5
BLIND_SHARE = 0.8
MIN_GROUPS_FOR_BLIND = 3


@dataclass(frozen=True)
class StatusRules:
    """Thresholds of the status rules: ``accept_confidence`` (0-1), ``min_fill`` (grown / reported volume),
    ``zone_mm`` (mm around a refined tumor where the model's probability is not leftover)."""

    accept_confidence: float = 0.5
    min_fill: float = 0.8
    zone_mm: float = BORDER_DILATION_MM

    def __post_init__(self) -> None:
        for name in ("accept_confidence", "min_fill"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        if self.zone_mm < 0:
            raise ValueError(f"zone_mm must be >= 0 mm, got {self.zone_mm!r}")


@dataclass(frozen=True)
class TumorCheck:
    """What the status needs of one refined tumor: a name in words, its agreement and fill (both 0-1)."""

    name: str
    agreement: float
    fill: float


@dataclass
class Decision:
    """Status, confidence (0-1, NaN when not refinable), the reasons in words and the accepted lesion classes
    (all of an accepted CT's, some of a partly accepted one's)."""

    status: str
    confidence: float
    reasons: list[str] = field(default_factory=list)
    accepted: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChannelSight:
    """Does the model see a lesion channel's reported tumors? Over the report CTs' usable tumor groups of its
    organ: ``groups``, and ``blind_groups`` where the model's highest probability inside the group's region is
    below ``CALL_THRESHOLD``. ``blind``: share >= ``BLIND_SHARE`` over >= ``MIN_GROUPS_FOR_BLIND`` groups."""

    lesion_class: str
    groups: int
    blind_groups: int

    @property
    def blind_share(self) -> float:
        return self.blind_groups / self.groups if self.groups else float("nan")

    @property
    def blind(self) -> bool:
        return self.groups >= MIN_GROUPS_FOR_BLIND and self.blind_share >= BLIND_SHARE


def channel_sight(group_max_p: Sequence[tuple[str, float]]) -> list[ChannelSight]:
    """One :class:`ChannelSight` per lesion class from (lesion class, max probability in the group's region)."""
    counts: dict[str, list[int]] = {}
    for name, max_p in group_max_p:
        seen = counts.setdefault(name, [0, 0])
        seen[0] += 1
        seen[1] += int(max_p < CALL_THRESHOLD)
    return [ChannelSight(name, n, blind) for name, (n, blind) in sorted(counts.items())]


def tumor_agreement(prob: np.ndarray, mask: np.ndarray, threshold: float = CALL_THRESHOLD) -> float:
    """Fraction of ``mask``'s voxels where ``prob`` >= ``threshold`` (0 for an empty mask)."""
    n = int(mask.sum())
    return float((prob[mask] >= threshold).sum()) / n if n else 0.0


def leftover_probability(prob: np.ndarray, tumors: np.ndarray, spacing_mm: Sequence[float],
                         zone_mm: float = BORDER_DILATION_MM) -> tuple[float, tuple[int, int, int] | None]:
    """Highest ``prob`` outside ``tumors`` dilated by ``zone_mm`` (mm), and where it is (voxel index)."""
    zone = dilate_mm(torch.from_numpy(np.ascontiguousarray(tumors, dtype=bool)), zone_mm, tuple(spacing_mm)).numpy()
    outside = np.where(zone, 0.0, prob)
    if not outside.size:
        return 0.0, None
    flat = int(np.argmax(outside))
    return float(outside.flat[flat]), tuple(int(i) for i in np.unravel_index(flat, prob.shape))  # type: ignore


def decide(tumors: Sequence[TumorCheck], leftover: float, leftover_place: str, warnings: Sequence[str],
           rules: StatusRules | None = None) -> Decision:
    """The status (accepted or needs review) of one organ of a refinable CT from its tumor checks, its leftover
    and its warnings."""
    rules = rules or StatusRules()
    confidence = min([t.agreement for t in tumors] + [1.0 - leftover])
    reasons = list(warnings)
    for t in tumors:
        if t.agreement < rules.accept_confidence:
            reasons.append(f"{t.name}: the model calls {100 * t.agreement:.0f}% of it tumor")
        if t.fill < rules.min_fill:
            reasons.append(f"{t.name}: reached {100 * t.fill:.0f}% of its reported volume inside its region")
    if 1.0 - leftover < rules.accept_confidence:
        where = f" in the {leftover_place}" if leftover_place else ""
        reasons.append(f"the model calls tumor (p {leftover:.2f}){where} where the report places none")
    accepted = not reasons and confidence >= rules.accept_confidence
    return Decision(ACCEPTED if accepted else NEEDS_REVIEW, round(confidence, 4), reasons)


def combine(organs: dict[str, Decision]) -> Decision:
    """The status of a refinable CT from its organs' decisions ({lesion class: decision}): accepted when all
    are, partly accepted when some are, else needs review; confidence = the lowest organ confidence."""
    accepted = tuple(sorted(name for name, d in organs.items() if d.status == ACCEPTED))
    reasons = [reason for name, d in sorted(organs.items()) for reason in d.reasons]
    confidence = min((d.confidence for d in organs.values()), default=1.0)
    status = ACCEPTED if len(accepted) == len(organs) else PARTLY_ACCEPTED if accepted else NEEDS_REVIEW
    return Decision(status, confidence, reasons, accepted)
