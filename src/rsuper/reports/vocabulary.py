"""Report vocabulary: organ names and location tokens as docs/method.md §2 spells them.

One table for every spelling a report (or another extractor's table) may use, shared by the schema
validators, the table readers and the rules backend.

Example:
    >>> canonical_organ("Pancreatic")
    'pancreas'
    >>> normalise_location("liver", "Segment VIII / right lobe")
    ['segment 5', 'segment 6', 'segment 7', 'segment 8']
    >>> normalise_location("pancreas", "uncinate process")
    ['head']
"""

from __future__ import annotations

import re

# Canonical report organs (docs/method.md §2), in the order tables list them.
ORGANS: tuple[str, ...] = (
    "liver",
    "pancreas",
    "kidney",
    "spleen",
    "adrenal gland",
    "gallbladder",
    "stomach",
    "colon",
    "duodenum",
    "esophagus",
    "bladder",
    "uterus",
    "prostate",
    "lung",
    "bone",
    "breast",
)
# The organs the per-CT table always has columns for, even when no report mentions them.
CORE_ORGANS: tuple[str, ...] = ("liver", "pancreas", "kidney")

# Regex (word-bounded, lower case) -> canonical organ. Order matters: specific before general
# ("gall bladder" before "bladder", "adrenal" before "renal", "hepatic flexure" before "hepatic").
ORGAN_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"(?:hepatic|splenic) flexure", "colon"),
    (r"gall\s?bladder|gallbladder|cholecyst\w*", "gallbladder"),
    (r"adrenals?|suprarenal|adrenal glands?", "adrenal gland"),
    (r"livers?|hepatic|hepato\w*|intrahepatic|hcc|hepatocellular|couinaud|caudate lobe", "liver"),
    (r"pancreas|pancreatic\w*|pancreato\w*|uncinate|ipmns?|pdac|peripancreatic", "pancreas"),
    (r"kidneys?|renal|nephric|perinephric|rccs?|bosniak|angiomyolipomas?|oncocytomas?", "kidney"),
    (r"spleen|splenic|splenule", "spleen"),
    (r"stomach|gastric|gist", "stomach"),
    (r"colon|colonic|rectum|rectal|rectosigmoid|sigmoid|cecum|cecal|caecum|caecal", "colon"),
    (r"duodenum|duodenal|ampulla\w*|periampullary", "duodenum"),
    (r"o?esophagus|o?esophageal", "esophagus"),
    (r"urinary bladder|bladder|vesical", "bladder"),
    (r"uterus|uterine|endometri\w+|myometri\w+|fibroids?|leiomyomas?", "uterus"),
    (r"prostate|prostatic", "prostate"),
    (r"lungs?|pulmonary|lung bases?|lobe of the lung", "lung"),
    (r"bones?|osseous|osteo\w*|vertebra\w*|sacrum|sacral|iliac bone|ribs?|skeletal|lytic|sclerotic|blastic", "bone"),
    (r"breasts?", "breast"),
)
# One alternation of all patterns (earlier ones win at the same position): a single scan finds every organ.
ORGAN_RE = re.compile(
    "|".join(rf"\b(?P<o{i}>{pattern})\b" for i, (pattern, _) in enumerate(ORGAN_PATTERNS)), re.IGNORECASE
)
ORGAN_OF_GROUP: dict[str, str] = {f"o{i}": organ for i, (_, organ) in enumerate(ORGAN_PATTERNS)}
ORGAN_RES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE), organ) for pattern, organ in ORGAN_PATTERNS
)

_ORGAN_ALIASES: dict[str, str] = {
    "pancreatic": "pancreas",
    "renal": "kidney",
    "kidneys": "kidney",
    "hepatic": "liver",
    "splenic": "spleen",
    "adrenal": "adrenal gland",
    "adrenal glands": "adrenal gland",
    "adrenal_gland": "adrenal gland",
    "gall bladder": "gallbladder",
    "rectum": "colon",
    "rectal": "colon",
    "oesophagus": "esophagus",
    "urinary bladder": "bladder",
    "lungs": "lung",
}

ROMAN: dict[str, int] = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8}

# Liver regions -> Couinaud segments (docs/method.md §2). Longest phrases first when matching.
LIVER_REGIONS: dict[str, tuple[int, ...]] = {
    "caudate": (1,),
    "dome": (7, 8),
    "right lobe": (5, 6, 7, 8),
    "right hepatic lobe": (5, 6, 7, 8),
    "left lobe": (2, 3, 4),
    "left hepatic lobe": (2, 3, 4),
    "left lateral": (2, 3),
    "lateral segment": (2, 3),
    "medial segment": (4,),
    "quadrate": (4,),
    "right anterior": (5, 8),
    "anterior right": (5, 8),
    "right posterior": (6, 7),
    "posterior right": (6, 7),
}
SEGMENT_RE = re.compile(
    r"\b(?:couinaud\s+)?(?:segments?|seg\.?|s)\s*((?:(?:[1-8](?![\d.,]\d|\s*(?:cm|mm)\b)|viii|vii|vi|iv|v|iii|ii|i)[ab]?"
    r"(?:\s*(?:,|/|-|and|or|&|to)\s*)?)+)\b",
    re.IGNORECASE,
)
_SEGMENT_ITEM_RE = re.compile(r"viii|vii|vi|iv|v|iii|ii|i|[1-8]", re.IGNORECASE)

PANCREAS_PARTS: dict[str, tuple[str, ...]] = {
    "neck-body junction": ("head", "body"),
    "neck/body junction": ("head", "body"),
    "junction of the neck and body": ("head", "body"),
    "head-neck": ("head",),
    "uncinate": ("head",),
    "neck": ("head",),
    "head": ("head",),
    "body-tail": ("body", "tail"),
    "body/tail": ("body", "tail"),
    "body": ("body",),
    "tail": ("tail",),
}
SIDES: dict[str, str] = {"left": "left", "right": "right", "l": "left", "r": "right", "lt": "left", "rt": "right"}

LOCATION_ORDER: dict[str, int] = {
    **{f"segment {i}": i for i in range(1, 9)},
    "head": 1,
    "body": 2,
    "tail": 3,
    "left": 1,
    "right": 2,
}


def canonical_organ(name: str) -> str:
    """Canonical report organ of ``name`` (``"Pancreatic"`` -> ``"pancreas"``); unknown names lower-cased."""
    key = re.sub(r"[\s_]+", " ", str(name).strip().lower())
    if key in ORGANS:
        return key
    if key in _ORGAN_ALIASES:
        return _ORGAN_ALIASES[key]
    for regex, organ in ORGAN_RES:
        if regex.fullmatch(key):
            return organ
    return key


def segment_numbers(text: str) -> list[int]:
    """Couinaud segments named in ``text`` ("segments 6/7", "segment VIII", "S4a") as sorted ints."""
    found: set[int] = set()
    for match in SEGMENT_RE.finditer(text):
        items = _SEGMENT_ITEM_RE.findall(match.group(1))
        numbers = [int(item) if item.isdigit() else ROMAN[item.lower()] for item in items]
        if re.search(r"\d\s*(?:-|to)\s*\d", match.group(1)) and len(numbers) == 2:
            numbers = list(range(min(numbers), max(numbers) + 1))
        found.update(n for n in numbers if 1 <= n <= 8)
    return sorted(found)


def liver_locations(text: str) -> list[str]:
    """Liver location tokens in ``text``: named segments win over regions (docs/method.md §2)."""
    segments = segment_numbers(text)
    if not segments:
        lower = text.lower()
        for region in sorted(LIVER_REGIONS, key=len, reverse=True):
            if re.search(rf"\b{region}", lower):
                segments = sorted(set(segments) | set(LIVER_REGIONS[region]))
                lower = lower.replace(region, " ")
    return [f"segment {n}" for n in segments]


def pancreas_locations(text: str) -> list[str]:
    """Pancreas tokens (head/body/tail; neck and uncinate count as head) in ``text``."""
    lower = text.lower()
    tokens: set[str] = set()
    for phrase in sorted(PANCREAS_PARTS, key=len, reverse=True):
        if re.search(rf"\b{re.escape(phrase)}\b", lower):
            tokens.update(PANCREAS_PARTS[phrase])
            lower = lower.replace(phrase, " ")
    return sort_locations(tokens)


def side_locations(text: str) -> list[str]:
    """Sides named in ``text`` ("left", "right", "bilateral" -> both)."""
    lower = text.lower()
    if re.search(r"\bbilateral(?:ly)?\b|\bboth\b", lower):
        return ["left", "right"]
    return sort_locations({SIDES[m] for m in re.findall(r"\b(left|right|lt|rt)\b", lower)})


def locations_in(organ: str, text: str) -> list[str]:
    """Location tokens of ``organ`` mentioned in free ``text`` (empty list = not stated)."""
    if organ == "liver":
        return liver_locations(text)
    if organ == "pancreas":
        return pancreas_locations(text)
    if organ in ("kidney", "adrenal gland"):
        return side_locations(text)
    return []


def normalise_location(organ: str, value: object) -> list[str]:
    """Location tokens from a table cell or LLM answer (``"u"``, ``"segment 7 / segment 8"``, ``"Head"``).

    Accepts tokens separated by ``/``, ``,``, ``;`` or ``and``; unknown values give ``[]``.
    """
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else re.split(r"\s*(?:/|,|;|\band\b|\|)\s*", str(value))
    tokens: set[str] = set()
    for item in items:
        text = str(item).strip().lower()
        if not text or text in ("u", "unknown", "nan", "none", "not stated", "multiple"):
            continue
        if organ == "liver" and re.fullmatch(r"(?:viii|vii|vi|iv|v|iii|ii|i|[1-8])[ab]?", text):
            text = f"segment {text}"
        found = locations_in(organ, text)
        if organ == "kidney" or organ == "adrenal gland":
            found = [t for t in found if t in ("left", "right")]
        tokens.update(found)
    return sort_locations(tokens)


def sort_locations(tokens: set[str] | list[str]) -> list[str]:
    """Tokens in anatomical order (segment 1..8, head/body/tail, left/right), duplicates removed."""
    return sorted(set(tokens), key=lambda t: (LOCATION_ORDER.get(t, 99), t))
