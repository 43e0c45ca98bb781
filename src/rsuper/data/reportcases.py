"""Report supervision of one CT: tumor groups, usable groups and unknown lesion areas (docs/method.md §4).

A report lists tumors with an organ, a location (sub-segments, possibly several) and a size. Tumors that
span several sub-segments link them; the connected sets of linked sub-segments of an organ are the
*groups*. A group is *usable* (it may be chosen as a training region) when its organ is a target organ,
every tumor in it has a known size and is not a ``multiple`` row, it has at most ``max_tumors`` tumors
and all its sub-segment masks exist. If any tumor of an organ has no usable location (none stated, or its
sub-segment mask is missing), that tumor could lie anywhere in the organ, so the whole organ becomes one
*organ-level* group holding all of the organ's tumors.

Groups with more than ``max_tumors`` (T) tumors are kept as unknown areas but are not usable: cutting them
to T tumors would make the group's reported volume wrong.

Tumors are never negatives: every sub-segment that carries a tumor (the whole organ when the location is
unknown) is ``unknown`` in that organ's lesion channel, whether or not the organ is a target organ, as long
as the lesion channel is an output channel. When the organ mask itself is missing, the whole lesion
channel is unknown for that case.

Example:
    >>> sup = build_report_supervision(findings, available_classes={"pancreas", "pancreas_body", "pancreas_tail"},
    ...                                class_names=["pancreas", "pancreatic_lesion"], target_organs=["pancreas"])
    >>> [(g.mask_classes, g.volumes_mm3, g.usable) for g in sup.groups]
    [(('pancreas_body', 'pancreas_tail'), (604.8,), True)]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rsuper import labels


@dataclass(frozen=True)
class TumorGroup:
    """One group of linked sub-segments of an organ and the reported tumors inside it.

    Attributes:
        organ: report organ name ("pancreas").
        lesion_class: its lesion channel ("pancreatic_lesion").
        mask_classes: mask classes whose union is the group's voxels.
        organ_level: True when the group is the whole organ (location unknown).
        volumes_mm3: reported volumes of its tumors, largest first (0 when unknown).
        diameters_mm: largest reported diameter of each tumor, same order (0 when unknown).
        usable: whether the group may be chosen as a training region.
        reason: why it is not usable ("" when usable).
    """

    organ: str
    lesion_class: str
    mask_classes: tuple[str, ...]
    organ_level: bool
    volumes_mm3: tuple[float, ...]
    diameters_mm: tuple[float, ...]
    usable: bool
    reason: str = ""

    @property
    def total_volume_mm3(self) -> float:
        """Sum of the reported tumor volumes of the group (mm^3)."""
        return float(sum(self.volumes_mm3))


@dataclass(frozen=True)
class ReportSupervision:
    """What a report says about one CT, in mask-class terms.

    Attributes:
        case_id: the case.
        healthy: True for a "no lesion" report (every lesion channel is a known negative).
        groups: all tumor groups (usable or not) of organs with an output lesion channel.
        unknown: lesion channel -> mask classes whose union is unknown in that channel.
        unknown_everywhere: lesion channels that are unknown in the whole CT (organ mask missing).
    """

    case_id: str
    healthy: bool
    groups: tuple[TumorGroup, ...] = ()
    unknown: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unknown_everywhere: frozenset[str] = frozenset()

    @property
    def usable_groups(self) -> list[int]:
        """Indices of the usable groups."""
        return [i for i, g in enumerate(self.groups) if g.usable]


def _lesion_size(lesion: Any) -> tuple[float, float] | None:
    """(volume mm^3, largest diameter mm) of a lesion, or None when the size is unknown."""
    if getattr(lesion, "multiple", False):
        return None
    volume, diameter = lesion.volume_mm3, lesion.largest_diameter_mm
    if volume is None or diameter is None or volume <= 0 or diameter <= 0:
        return None
    return float(volume), float(diameter)


def _make_group(
    organ: str,
    lesion_ch: str,
    classes: Iterable[str],
    organ_level: bool,
    lesions: Sequence[Any],
    target: bool,
    max_tumors: int,
) -> TumorGroup:
    sizes = [_lesion_size(lesion) for lesion in lesions]
    reason = ""
    if not target:
        reason = f"{organ} is not a target organ"
    elif any(s is None for s in sizes):
        reason = "a tumor has unknown size or is a 'multiple' row"
    elif len(sizes) > max_tumors:
        reason = f"{len(sizes)} tumors > max_tumors={max_tumors}"
    known = sorted((s for s in sizes if s is not None), key=lambda s: -s[0])
    return TumorGroup(
        organ=organ,
        lesion_class=lesion_ch,
        mask_classes=tuple(sorted(classes)),
        organ_level=organ_level,
        volumes_mm3=tuple(s[0] for s in known),
        diameters_mm=tuple(s[1] for s in known),
        usable=not reason,
        reason=reason,
    )


def _linked_groups(located: list[tuple[Any, tuple[str, ...]]]) -> list[tuple[set[str], list[Any]]]:
    """Connected sets of sub-segments linked by tumors that span several of them, with their tumors."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for _, classes in located:
        for other in classes[1:]:
            parent[find(other)] = find(classes[0])
        find(classes[0])
    groups: dict[str, tuple[set[str], list[Any]]] = {}
    for cls in parent:
        groups.setdefault(find(cls), (set(), []))[0].add(cls)
    for lesion, classes in located:
        groups[find(classes[0])][1].append(lesion)
    return list(groups.values())


def build_report_supervision(
    findings: Any,
    available_classes: Iterable[str],
    class_names: Sequence[str],
    target_organs: Sequence[str],
    max_tumors: int = 16,
) -> ReportSupervision:
    """Turns one CT's findings into groups and unknown areas (docs/method.md §4).

    Args:
        findings: a ``rsuper.reports.schema.CaseFindings`` (``case_id``, ``lesions``; each lesion has
            ``organ``, ``location`` (tokens, empty = unknown), ``multiple``, ``volume_mm3``,
            ``largest_diameter_mm``).
        available_classes: mask classes present in this case's cache folder.
        class_names: output channels of the network; lesion channels not listed are ignored.
        target_organs: organs whose groups may supervise (others only become unknown).
        max_tumors: T; groups with more tumors are unusable.
    """
    available = set(available_classes)
    channels = set(class_names)
    lesions_by_organ: dict[str, list[Any]] = {}
    for lesion in findings.lesions:
        lesions_by_organ.setdefault(lesion.organ, []).append(lesion)
    groups: list[TumorGroup] = []
    unknown: dict[str, tuple[str, ...]] = {}
    everywhere: set[str] = set()
    for organ, lesions in lesions_by_organ.items():
        lesion_ch = labels.LESION_CLASS_OF_ORGAN.get(organ)
        if lesion_ch is None or lesion_ch not in channels:
            continue
        organ_classes = labels.ORGAN_MASK_CLASSES.get(organ, ())
        if not organ_classes or not set(organ_classes) <= available:
            everywhere.add(lesion_ch)
            continue
        target = organ in target_organs
        located: list[tuple[Any, tuple[str, ...]]] = []
        for lesion in lesions:
            classes = tuple(labels.subsegment_class(organ, token) for token in lesion.location)
            if not classes or any(c is None or c not in available for c in classes):
                located = []
                break
            located.append((lesion, tuple(dict.fromkeys(classes))))  # type: ignore[arg-type]
        if not located:  # some tumor could be anywhere in the organ: one organ-level group
            group = _make_group(organ, lesion_ch, organ_classes, True, lesions, target, max_tumors)
            groups.append(group)
            unknown[lesion_ch] = group.mask_classes
            continue
        bearing: set[str] = set()
        for classes, members in _linked_groups(located):
            groups.append(_make_group(organ, lesion_ch, classes, False, members, target, max_tumors))
            bearing |= classes
        unknown[lesion_ch] = tuple(sorted(bearing))
    healthy = not findings.lesions
    return ReportSupervision(
        case_id=findings.case_id,
        healthy=healthy,
        groups=tuple(groups),
        unknown=unknown,
        unknown_everywhere=frozenset(everywhere),
    )
