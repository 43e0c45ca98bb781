"""Class names shared by every step: one alias table, organs, sub-segments and lesion channels.

Mask files are named ``<class>.nii.gz`` with the canonical (AbdomenAtlas) names below. Report
organs use the names of docs/method.md §2 ("liver", "pancreas", "kidney", "adrenal gland", ...);
location tokens are "head"/"body"/"tail", "left"/"right", "segment 1".."segment 8".

Example:
    >>> canonical_class_name("gall_bladder")
    'gallbladder'
    >>> lesion_class("pancreas")
    'pancreatic_lesion'
    >>> subsegment_class("liver", "segment 7")
    'liver_segment_7'
"""

from __future__ import annotations

import os
import re

# Canonical mask class names (AbdomenAtlas / R-Super spelling).
ORGAN_CLASSES: tuple[str, ...] = (
    "adrenal_gland_left",
    "adrenal_gland_right",
    "aorta",
    "bladder",
    "colon",
    "duodenum",
    "esophagus",
    "gallbladder",
    "kidney_left",
    "kidney_right",
    "liver",
    "pancreas",
    "postcava",
    "prostate",
    "spleen",
    "stomach",
    "uterus",
)
PANCREAS_PARTS: tuple[str, ...] = ("pancreas_head", "pancreas_body", "pancreas_tail")
LIVER_SEGMENTS: tuple[str, ...] = tuple(f"liver_segment_{i}" for i in range(1, 9))
SUBSEGMENT_CLASSES: tuple[str, ...] = PANCREAS_PARTS + LIVER_SEGMENTS

# Report organ (docs/method.md §2) -> lesion channel / mask file name.
LESION_CLASS_OF_ORGAN: dict[str, str] = {
    "liver": "liver_lesion",
    "pancreas": "pancreatic_lesion",
    "kidney": "kidney_lesion",
    "spleen": "spleen_lesion",
    "adrenal gland": "adrenal_lesion",
    "gallbladder": "gallbladder_lesion",
    "stomach": "stomach_lesion",
    "colon": "colon_lesion",
    "duodenum": "duodenum_lesion",
    "esophagus": "esophagus_lesion",
    "bladder": "bladder_lesion",
    "uterus": "uterus_lesion",
    "prostate": "prostate_lesion",
}
LESION_CLASSES: tuple[str, ...] = tuple(LESION_CLASS_OF_ORGAN.values())
ORGAN_OF_LESION_CLASS: dict[str, str] = {v: k for k, v in LESION_CLASS_OF_ORGAN.items()}

# Report organ -> the mask classes whose union is "the whole organ".
ORGAN_MASK_CLASSES: dict[str, tuple[str, ...]] = {
    "liver": ("liver",),
    "pancreas": ("pancreas",),
    "kidney": ("kidney_left", "kidney_right"),
    "spleen": ("spleen",),
    "adrenal gland": ("adrenal_gland_left", "adrenal_gland_right"),
    "gallbladder": ("gallbladder",),
    "stomach": ("stomach",),
    "colon": ("colon",),
    "duodenum": ("duodenum",),
    "esophagus": ("esophagus",),
    "bladder": ("bladder",),
    "uterus": ("uterus",),
    "prostate": ("prostate",),
}

# Report organ -> {location token -> sub-segment mask class}.
SUBSEGMENTS_OF_ORGAN: dict[str, dict[str, str]] = {
    "pancreas": {"head": "pancreas_head", "body": "pancreas_body", "tail": "pancreas_tail"},
    "kidney": {"left": "kidney_left", "right": "kidney_right"},
    "adrenal gland": {"left": "adrenal_gland_left", "right": "adrenal_gland_right"},
    "liver": {f"segment {i}": f"liver_segment_{i}" for i in range(1, 9)},
}

# Other spellings found in public datasets and tools -> canonical class name.
_ALIASES: dict[str, str] = {
    "gall_bladder": "gallbladder",
    "urinary_bladder": "bladder",
    "inferior_vena_cava": "postcava",
    "ivc": "postcava",
    "vena_cava_inferior": "postcava",
    "adrenal_left": "adrenal_gland_left",
    "adrenal_right": "adrenal_gland_right",
    "left_adrenal_gland": "adrenal_gland_left",
    "right_adrenal_gland": "adrenal_gland_right",
    "left_kidney": "kidney_left",
    "right_kidney": "kidney_right",
    "kidney_l": "kidney_left",
    "kidney_r": "kidney_right",
    "pancreas_lesion": "pancreatic_lesion",
    "pancreatic_tumor": "pancreatic_lesion",
    "pancreas_tumor": "pancreatic_lesion",
    "pdac": "pancreatic_lesion",
    "kidney_tumor": "kidney_lesion",
    "kidney_tumour": "kidney_lesion",
    "renal_lesion": "kidney_lesion",
    "liver_tumor": "liver_lesion",
    "liver_tumour": "liver_lesion",
    "hepatic_lesion": "liver_lesion",
    "spleen_tumor": "spleen_lesion",
    "adrenal_gland_lesion": "adrenal_lesion",
    "pancreatic_head": "pancreas_head",
    "pancreatic_body": "pancreas_body",
    "pancreatic_tail": "pancreas_tail",
}
_LIVER_SEGMENT_RE = re.compile(r"^(?:liver_)?(?:segment|seg|couinaud)_?0*([1-8])$")


# A class name becomes a file name (``<class>.nii.gz``, ``<class>.npy``): only these characters, at most this long.
_PLAIN_CLASS_NAME = re.compile(r"[a-z0-9_]+")
MAX_CLASS_NAME_LENGTH = 100


class ClassNameError(ValueError):
    """A class name that is empty or not plain (lowercase letters, digits, underscores) after canonicalisation."""


def canonical_class_name(name: str, source: str | os.PathLike[str] | None = None) -> str:
    """Returns the canonical mask class of ``name`` (file stem, any case, spaces or dashes allowed).

    Aliases are resolved first. Unknown names are returned normalised (lower case, ``_`` separators) but
    otherwise unchanged, so a dataset's extra classes survive. The result must be a plain name -- lowercase
    ASCII letters, digits and underscores, at most 100 characters -- because class names become file names:
    anything else (``../x``, ``a/b``, ``liver.v2``, non-ASCII) raises :class:`ClassNameError` (a ``ValueError``),
    whose one-line message starts with ``source`` (the file the name came from) when given. This is the one
    check every class name read from a file or an option goes through.
    """
    where = f"{os.fspath(source)}: " if source is not None else ""
    if not isinstance(name, str) or not name.strip():
        raise ClassNameError(f"{where}class name must be a non-empty string, got {name!r} ({type(name).__name__})")
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    for suffix in (".nii.gz", ".nii", ".npy"):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
    if key in _ALIASES:
        return _ALIASES[key]
    match = _LIVER_SEGMENT_RE.match(key)
    if match:
        return f"liver_segment_{match.group(1)}"
    if not _PLAIN_CLASS_NAME.fullmatch(key) or len(key) > MAX_CLASS_NAME_LENGTH:
        raise ClassNameError(
            f"{where}class name {name!r} is not allowed: class names become file names, so they may contain only "
            f"lowercase letters, digits and underscores (spaces and dashes count as underscores; at most "
            f"{MAX_CLASS_NAME_LENGTH} characters), e.g. 'liver_lesion'; rename that class"
        )
    return key


def lesion_class(organ: str) -> str:
    """Lesion channel name of a report organ (``"pancreas"`` -> ``"pancreatic_lesion"``)."""
    try:
        return LESION_CLASS_OF_ORGAN[organ]
    except KeyError:
        raise KeyError(
            f"no lesion channel for organ {organ!r}; known organs: {sorted(LESION_CLASS_OF_ORGAN)}"
        ) from None


def subsegment_class(organ: str, token: str) -> str | None:
    """Mask class of a report location token, or ``None`` when the organ has no such sub-segment."""
    return SUBSEGMENTS_OF_ORGAN.get(organ, {}).get(token)


def subsegment_token(organ: str, class_name: str) -> str | None:
    """Report location token of a sub-segment class (``pancreas_tail`` -> ``tail``); ``None`` when the class is
    not a sub-segment of ``organ``. The inverse of :func:`subsegment_class`."""
    for token, name in SUBSEGMENTS_OF_ORGAN.get(organ, {}).items():
        if name == class_name:
            return token
    return None


def organ_union_members(name: str) -> tuple[str, ...]:
    """The side classes whose union is the whole-organ class ``name`` (``kidney`` -> ``kidney_left``,
    ``kidney_right``); empty for every class that is not an organ made of sides."""
    members = ORGAN_MASK_CLASSES.get(canonical_class_name(name), ())
    return members if len(members) > 1 else ()


def mirror_partner(name: str) -> str | None:
    """The class a left-right mirror turns ``name`` into: ``kidney_left`` <-> ``kidney_right``; None when
    the class has no mirror meaning (pancreas parts and liver segments are defined by the patient's side);
    the class itself otherwise (liver, lesions, ...)."""
    name = canonical_class_name(name)
    for side, other in (("_left", "_right"), ("_right", "_left")):
        if name.endswith(side):
            return name[: -len(side)] + other
    return None if name in SUBSEGMENT_CLASSES else name


def mirror_channel_map(class_names: list[str]) -> tuple[list[int], list[int]]:
    """Channel bookkeeping of a left-right mirror of a (C, ...) output or label stack.

    Returns ``(source, side_defined)``: after mirroring the array, channel ``i`` must take the data of
    channel ``source[i]`` (left/right pairs swap, everything else keeps its own); ``side_defined`` lists the
    channels with no mirror meaning (pancreas parts, liver segments, a left/right class without its
    partner), whose mirrored data is not valid.
    """
    names = [canonical_class_name(n) for n in class_names]
    partners = [p if p in names else None for p in map(mirror_partner, names)]
    source = [names.index(p) if p is not None else i for i, p in enumerate(partners)]
    return source, [i for i, p in enumerate(partners) if p is None]


def is_lesion_class(name: str) -> bool:
    """True for lesion channels (``*_lesion``)."""
    return canonical_class_name(name).endswith("_lesion")
