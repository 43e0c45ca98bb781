"""Rules backend: deterministic, offline extraction of lesions from report text (docs/method.md §2).

Pipeline per report: sections and sentences (``sections``) -> clauses -> lesion mentions (a lesion
noun that is neither negated nor excluded) -> organ (named, implied by the location, or from the
organ header / previous sentence) -> location, size (``measurements``), count ("two", "multiple ...
the largest ...") -> de-duplication (a mention repeating a known lesion, e.g. in the impression,
updates it instead of adding one).

Example:
    >>> findings = extract_rules("r1", "FINDINGS: 2.1 x 1.8 cm hypodense mass in the pancreatic uncinate process.")
    >>> [(x.organ, x.location, x.size_mm) for x in findings.lesions]
    [('pancreas', ['head'], [21.0, 18.0])]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rsuper.reports.measurements import Measurement, find_measurements
from rsuper.reports.schema import CaseFindings, Lesion
from rsuper.reports.sections import SKIP_KINDS, Sentence, split_report
from rsuper.reports.vocabulary import ORGAN_OF_GROUP, ORGAN_RE, locations_in, segment_numbers

BACKEND = "rules"
PAIRED_ORGANS = frozenset({"kidney", "adrenal gland"})

_LESION_NOUN_RE = re.compile(
    r"\b(?:mass(?:es)?|tumou?rs?|nodules?|lesions?|cysts?|metastas[ie]s|metastatic (?:disease|deposits?|foci)|"
    r"mets|hypodensit(?:y|ies)|hyperdensit(?:y|ies)|hypoattenuations?|neoplasms?|carcinomas?|"
    r"adenocarcinomas?|malignanc(?:y|ies)|hepatomas?|hccs?|rccs?|pdacs?|ipmns?|cholangiocarcinomas?|"
    r"hemangiomas?|haemangiomas?|angiomyolipomas?|amls?|adenomas?|fnh|oncocytomas?|implants?|"
    r"hamartomas?|lipomas?|myelolipomas?|pheochromocytomas?|insulinomas?|gists?|sarcomas?|polyps?|"
    r"fibroids?|leiomyomas?|lymphomas?|"
    r"(?:hypo\w*|hyper\w*|low[- ](?:attenuation|density)|enhancing|cystic)\s+(?:areas?|foc(?:us|i)|regions?))\b",
    re.IGNORECASE,
)
_PLURAL_RE = re.compile(r"(?:es|[^siu]s|foci)$", re.IGNORECASE)
_NEGATION_RE = re.compile(
    r"\b(?:no|not|without|negative for|free of|absence of|absent|neither|nor|none|rule out|ruled out|"
    r"resolution of|resolved)\b",
    re.IGNORECASE,
)
_POST_NEGATION_RE = re.compile(
    r"\b(?:(?:is|are|was|were|has|have)\s+(?:no longer|not)\b|(?:has|have)\s+resolved|resolved\b|"
    r"no longer (?:seen|visualized|identified|present|evident))",
    re.IGNORECASE,
)
_NEGATION_PSEUDO_RE = re.compile(
    r"\bno (?:significant |interval |appreciable |substantial )?(?:change|growth|enlargement|increase)\w*|"
    r"\bnot (?:significantly )?changed|\bcan ?not (?:be )?(?:excluded|ruled out)|\bcannot (?:exclude|rule out)|"
    r"\bnot (?:be )?excluded|\bnot (?:well|fully|completely)\b|\bnot? (?:been )?characteri[sz]ed\b|"
    r"\btoo small to (?:characteri[sz]e|measure)|\bnot amenable\b|\bnot (?:optimally|well) (?:seen|evaluated)",
    re.IGNORECASE,
)
_EXCLUSION_RE = re.compile(
    r"\b(?:stones?|calcul(?:us|i)|\w*lithiasis|gallstones?|sludge|(?:fluid )?collections?|ascites|abscess(?:es)?|"
    r"diverticul\w*|pseudocysts?|hernias?|lymph nodes?|nodal|adenopathy|lymphadenopathy|granulomas?|splenules?|"
    r"accessory spleen|focal fat\w*|fatty (?:infiltration|sparing|deposition)|steatosis|perfusion|"
    r"pseudolesions?|thad|status post|s/p|resect\w*|excised|removed|post-?surgical|post-?operative|surgical bed|"
    r"\w+ectomy|history of|hx of|ablat\w*|hydronephrosis)\b",
    re.IGNORECASE,
)
_CLAUSE_SPLIT_RE = re.compile(
    r";(?!\s*(?:the\s+)?(?:largest|biggest|dominant)\b)|\s*\b(?:but|however|although|though|whereas|except(?: for)?|with the exception of|apart from|aside from)\b\s*",
    re.IGNORECASE,
)
_PART_SPLIT_RE = re.compile(
    r"(?:,\s*|\s+)(?:and|as well as|with|plus)\s+(?=(?:an?|another|one|two|three|four|five|a second|a separate|"
    r"an additional|additional|several|multiple|\d+(?:\.\d+)?\s*(?:cm|mm))\b)|,\s+(?=(?:an?|another|a second)\s)",
    re.IGNORECASE,
)
_COUNT_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_COUNT_RE = re.compile(
    r"\b(two|three|four|five|six|seven|eight|nine|ten|[2-9]|10|couple of|pair of)\s+(?!cm|mm|x\b)"
    r"(?:[\w-]+,?\s+){0,4}$",
    re.IGNORECASE,
)
_MULTIPLE_RE = re.compile(
    r"\b(?:multiple|several|numerous|innumerable|countless|scattered|few|many|various|multifocal|too numerous)\b",
    re.IGNORECASE,
)
_NOT_A_COUNT_RE = re.compile(
    r"(?:segments?|seg\.?|\bs|bosniak|grade|level|lr-?|li-rads|series|image|type|stage|\b[tlc]|/)\s*$", re.IGNORECASE
)
_LARGEST_RE = re.compile(r"\b(?:the\s+)?(?:largest|biggest|dominant|largest of which|up to)\b", re.IGNORECASE)
_ANAPHORA_RE = re.compile(r"\b(?:the|this|these|that|those|said|known|aforementioned|previously described)\s+"
                          r"(?:[\w-]+\s+){0,3}$", re.IGNORECASE)
_RELATION_RE = re.compile(
    r"\b(?:abut\w*|adjacent|near|contact\w*|compress\w*|displac\w*|invad\w*|encas\w*|toward|posterior|anterior|"
    r"medial|lateral|superior|inferior|between|along|extend\w*|into|separate|inseparable)\b"
    r"(?:\s+(?:to|from|the|of|with))*\s*$",
    re.IGNORECASE,
)
_VESSEL_RE = re.compile(r"\s+(?:veins?|arter(?:y|ies)|vessels?|ducts?|vasculature|bed)\b", re.IGNORECASE)
_IMPLIED_ORGAN: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:upper|lower|inferior|superior) pole|interpolar|\bbosniak\b", re.I), "kidney"),
    (re.compile(r"\b(?:caudate|hepatic dome)\b", re.I), "liver"),
)
_ATTENUATION: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"heterogene", re.I), "heterogeneous"),
    (re.compile(r"hypo(?:dens|attenuat|enhanc|echo)|low[- ](?:attenuation|density)|cystic|fluid", re.I), "hypo"),
    (re.compile(r"hyper(?:dens|attenuat|enhanc)|arterially enhancing|avidly enhancing", re.I), "hyper"),
    (re.compile(r"iso(?:dens|attenuat|enhanc)", re.I), "iso"),
)
_LOW_CERTAINTY_RE = re.compile(
    r"\b(?:possibl[ey]|questionabl[ey]|question of|cannot (?:be )?exclude|can ?not be excluded|not excluded|"
    r"may represent|might|could represent|equivocal|indeterminate|subtle|vague|uncertain|cannot rule out|"
    r"versus|vs\.?|differential)\b|\?",
    re.IGNORECASE,
)
_HIGH_CERTAINTY_RE = re.compile(
    r"\b(?:likely|probabl[ey]|suspicious|concerning|consistent with|compatible with|suggestive of|"
    r"representing|favou?red|presumed|presumably|characteristic of|highly)\b",
    re.IGNORECASE,
)
_TYPES: tuple[tuple[str, str], ...] = (
    (r"ipmn|intraductal papillary", "IPMN"),
    (r"pdac|pancreatic (?:ductal )?adenocarcinoma", "PDAC"),
    (r"hcc|hepatocellular|hepatoma", "HCC"),
    (r"rcc|renal cell", "RCC"),
    (r"cholangiocarcinoma", "cholangiocarcinoma"),
    (r"neuroendocrine|pnet|insulinoma", "neuroendocrine tumor"),
    (r"metasta|\bmets\b|implant|deposit", "metastasis"),
    (r"ha?emangioma", "hemangioma"),
    (r"angiomyolipoma|\baml\b", "angiomyolipoma"),
    (r"myelolipoma", "myelolipoma"),
    (r"oncocytoma", "oncocytoma"),
    (r"adenoma", "adenoma"),
    (r"\bfnh\b|focal nodular hyperplasia", "FNH"),
    (r"lymphoma", "lymphoma"),
    (r"adenocarcinoma|carcinoma|malignan", "carcinoma"),
    (r"cyst", "cyst"),
    (r"polyp", "polyp"),
    (r"fibroid|leiomyoma", "fibroid"),
    (r"mass|tumou?r|neoplasm", "mass"),
    (r"nodule", "nodule"),
)
_TYPE_RES = tuple((re.compile(p, re.I), t) for p, t in _TYPES)


@dataclass
class _Mention:
    """Lesions described by one clause part, before de-duplication."""

    organ: str
    lesions: list[Lesion]
    anaphoric: bool
    multiple_rows: list[Lesion] = field(default_factory=list)


def _organ_hits(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping organ mentions (start, end, organ); earlier patterns win overlaps."""
    return [(m.start(), m.end(), ORGAN_OF_GROUP[m.lastgroup]) for m in ORGAN_RE.finditer(text)]


def _pick_organ(text: str, all_hits: list[tuple[int, int, str]], noun_start: int, context: str | None) -> str | None:
    """Organ a lesion noun belongs to: the nearest organ named in ``text``, skipping neighbours
    ("abutting the spleen") and vessels ("splenic vein"); else one implied by the location ("upper pole",
    "segment 7"); else the context organ. ``all_hits`` are ``_organ_hits(text)``."""
    hits = [
        h for h in all_hits
        if not _RELATION_RE.search(text[max(0, h[0] - 40) : h[0]]) and not _VESSEL_RE.match(text[h[1] :])
    ]
    if not hits:
        for regex, organ in _IMPLIED_ORGAN:
            if regex.search(text):
                return organ
        if segment_numbers(text) and context in (None, "liver"):
            return "liver"
        if context is not None or not all_hits:
            return context
        hits = all_hits
    return min(hits, key=lambda h: (abs(h[0] - noun_start), h[0]))[2]


def _negated(text: str, noun: re.Match[str]) -> bool:
    cleaned = _NEGATION_PSEUDO_RE.sub(lambda m: "_" * len(m.group()), text)
    if _NEGATION_RE.search(cleaned[: noun.start()]):
        return True
    return bool(_POST_NEGATION_RE.search(cleaned[noun.end() :]))


def _certainty(text: str) -> str:
    if _LOW_CERTAINTY_RE.search(text):
        return "low"
    return "high" if _HIGH_CERTAINTY_RE.search(text) else "certain"


def _attenuation(text: str) -> str:
    for regex, value in _ATTENUATION:
        if regex.search(text):
            return value
    return "u"


def _lesion_type(text: str) -> str:
    for regex, value in _TYPE_RES:
        if regex.search(text):
            return value
    return "lesion"


def _nearest(measurements: list[Measurement], position: int) -> Measurement | None:
    if not measurements:
        return None
    return min(measurements, key=lambda m: min(abs(m.start - position), abs(m.end - position)))


def _part_mention(
    part: str, hits: list[tuple[int, int, str]], sentence: Sentence, context_organ: str | None
) -> _Mention | None:
    """The lesions a clause part states, or ``None`` when it states none (negated, excluded, no noun)."""
    nouns = list(_LESION_NOUN_RE.finditer(part))
    if not nouns or _EXCLUSION_RE.search(part):
        return None
    noun = next((n for n in nouns if not _negated(part, n)), None)
    if noun is None:
        return None
    organ = _pick_organ(part, hits, noun.start(), context_organ)
    if organ is None:
        return None
    measurements = [m for m in find_measurements(part) if not m.prior]
    locations = locations_in(organ, part)
    if organ in PAIRED_ORGANS and not locations and sentence.header_side:
        locations = [sentence.header_side]
    common = {
        "organ": organ,
        "type": _lesion_type(part),
        "attenuation": _attenuation(part),
        "certainty": _certainty(part),
        "evidence": sentence.text,
    }
    before = part[: noun.start()]
    count_match = _COUNT_RE.search(before)
    if count_match and _NOT_A_COUNT_RE.search(before[: count_match.start()]):
        count_match = None
    plural = any(_PLURAL_RE.search(n.group()) for n in nouns) and not noun.group().lower().endswith("mass")
    plural = plural or noun.group().lower() == "masses"
    anaphoric = bool(_ANAPHORA_RE.search(before)) and count_match is None
    if count_match:
        word = count_match.group(1).lower()
        count = _COUNT_WORDS.get(word) or (2 if word in ("couple of", "pair of") else int(word))
        sizes = [m.diameters_mm for m in measurements][:count]
        sizes += [None] * (count - len(sizes))
        per_lesion = _split_locations(organ, part, locations, count)
        lesions = [Lesion(**common, location=loc, size_mm=size) for loc, size in zip(per_lesion, sizes)]
        return _Mention(organ, lesions, anaphoric=False)
    if plural or _MULTIPLE_RE.search(before):
        largest = _LARGEST_RE.search(part)
        after = part[largest.end() :] if largest else ""
        sized = [m for m in measurements if not largest or m.start >= largest.start()] or measurements
        lesions = []
        if sized:
            where = locations_in(organ, after) if after else []
            lesions.append(Lesion(**common, location=where or locations, size_mm=max(
                (m.diameters_mm for m in sized), key=max)))
        sides = [s for s in locations if s in ("left", "right")] if organ in PAIRED_ORGANS else []
        rows = [Lesion(**common, location=[side], multiple=True) for side in sides] or [
            Lesion(**common, multiple=True)
        ]
        return _Mention(organ, lesions, anaphoric=anaphoric and not sized, multiple_rows=rows)
    nearest = _nearest(measurements, noun.start())
    lesion = Lesion(**common, location=locations, size_mm=nearest.diameters_mm if nearest else None)
    return _Mention(organ, [lesion], anaphoric=anaphoric and nearest is None)


def _parts(clause: str) -> list[str]:
    """Clause cut before "and a ..." / "as well as two ..." when each piece names its own lesion."""
    parts: list[str] = []
    for piece in _PART_SPLIT_RE.split(clause):
        if parts and not _LESION_NOUN_RE.search(piece):
            parts[-1] = f"{parts[-1]} and {piece}"
        else:
            parts.append(piece)
    return parts


def _split_locations(organ: str, part: str, locations: list[str], count: int) -> list[list[str]]:
    """Per-lesion locations for "two lesions in segments 2 and 6" (paired when the numbers agree)."""
    if len(locations) == count and organ in ("liver", "pancreas", "kidney", "adrenal gland"):
        if organ != "liver" or len(segment_numbers(part)) == count:
            return [[token] for token in locations]
    return [locations] * count


def _compatible(a: Lesion, b: Lesion) -> bool:
    """Same organ and no contradiction in location or size (within 3 mm or 15 %)."""
    if a.organ != b.organ or a.multiple != b.multiple:
        return False
    if a.location and b.location and not set(a.location) & set(b.location):
        return False
    if a.size_mm and b.size_mm:
        da, db = max(a.size_mm), max(b.size_mm)
        return abs(da - db) <= max(3.0, 0.15 * max(da, db))
    return True


def _merge_into(known: Lesion, new: Lesion) -> Lesion:
    """``known`` completed with what ``new`` adds (location, size, type, attenuation)."""
    update: dict[str, object] = {}
    if not known.location and new.location:
        update["location"] = new.location
    if not known.size_mm and new.size_mm:
        update["size_mm"] = new.size_mm
    if known.type in ("lesion", "mass", "nodule", "u") and new.type not in ("lesion", "mass", "nodule", "u"):
        update["type"] = new.type
    if known.attenuation == "u" and new.attenuation != "u":
        update["attenuation"] = new.attenuation
    return known.model_copy(update=update) if update else known


def _add(lesions: list[Lesion], mention: _Mention, repeat_ok: bool) -> None:
    """Adds a mention's lesions, merging those that repeat a known lesion of the same organ.

    ``repeat_ok`` (impression sentences, anaphora) lets any compatible known lesion absorb the new one;
    in the findings only an unsized anaphoric mention or an identical size+location does.
    """
    for new in mention.lesions + mention.multiple_rows:
        candidates = [i for i, known in enumerate(lesions) if _compatible(known, new)]
        if repeat_ok and not candidates and not new.size_mm and not new.multiple:
            # an unsized impression mention restates the organ's findings, even when worded differently
            candidates = [i for i, known in enumerate(lesions) if known.organ == new.organ and not known.multiple]
        if not repeat_ok and not mention.anaphoric and not new.multiple:
            candidates = [
                i for i in candidates
                if lesions[i].size_mm and new.size_mm and lesions[i].size_mm == new.size_mm
                and lesions[i].location == new.location
            ]
        if candidates:
            best = min(candidates, key=lambda i: _distance(lesions[i], new))
            lesions[best] = _merge_into(lesions[best], new)
        elif mention.anaphoric and any(known.organ == new.organ for known in lesions):
            continue
        else:
            lesions.append(new)


def _distance(known: Lesion, new: Lesion) -> float:
    if known.size_mm and new.size_mm:
        return abs(max(known.size_mm) - max(new.size_mm))
    return 0.0 if set(known.location) & set(new.location) else 1.0


def extract_rules(case_id: str, text: str) -> CaseFindings:
    """Lesions stated by one report (``CaseFindings`` with ``backend="rules"``)."""
    lesions: list[Lesion] = []
    previous_organ: str | None = None
    previous_block: tuple[str, str | None] | None = None
    for sentence in split_report(text or ""):
        if sentence.kind in SKIP_KINDS:
            continue
        block = (sentence.kind, sentence.header_organ)
        if block != previous_block:
            previous_organ, previous_block = None, block
        context = sentence.header_organ or previous_organ
        for clause in _CLAUSE_SPLIT_RE.split(sentence.text):
            for part in _parts(clause):
                hits = _organ_hits(part)
                mention = _part_mention(part, hits, sentence, context)
                if mention is not None:
                    _add(lesions, mention, repeat_ok=sentence.kind == "impression")
                context = mention.organ if mention is not None else hits[-1][2] if hits else context
        previous_organ = context
    return CaseFindings(case_id=case_id, lesions=_order(lesions), backend=BACKEND)


def _order(lesions: list[Lesion]) -> list[Lesion]:
    """Each organ's lesions together (first-mention order), its ``multiple`` rows last."""
    organs = list(dict.fromkeys(lesion.organ for lesion in lesions))
    return [
        lesion
        for organ in organs
        for multiple in (False, True)
        for lesion in lesions
        if lesion.organ == organ and lesion.multiple == multiple
    ]

