"""Report layout: sections (history, comparison, findings, impression), organ headers and sentences.

A report is cut at headers (``FINDINGS:``, ``Liver:``, ``Kidneys/ureters:``) and then into sentences;
each sentence carries its section kind and the organ named by the closest organ header, which the
rules backend uses for sentences that do not name an organ ("There is a 2 cm lesion in segment 7").

Example:
    >>> [(s.kind, s.header_organ, s.text) for s in split_report("HISTORY: pain. FINDINGS: Liver: 2 cm cyst.")]
    [('history', None, 'pain.'), ('findings', 'liver', '2 cm cyst.')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rsuper.reports.vocabulary import ORGAN_OF_GROUP, ORGAN_RE, side_locations

SKIP_KINDS: frozenset[str] = frozenset({"history", "comparison", "technique"})
_KIND_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("history", re.compile(r"histor|indication|reason|clinical|symptom|complaint", re.I)),
    ("comparison", re.compile(r"comparison|compared|prior (?:exam|stud)", re.I)),
    ("technique", re.compile(r"technique|protocol|procedure|contrast|dose|ctdi|dlp|^exam", re.I)),
    ("impression", re.compile(r"impression|conclusion|summary|assessment|opinion|diagnos", re.I)),
    ("findings", re.compile(r"finding|report|^body$|abdomen|pelvis|observation", re.I)),
)
_HEADER_RE = re.compile(r"(?:^|(?<=[.;\n]))[ \t]*([A-Za-z][A-Za-z /&,()\-]{0,40}?)[ \t]*:(?![\d/])", re.M)
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[]|\d+(?:\.\d+)?\s*(?:x|cm|mm)\b)|\n+\s*(?=\S)|(?<=[.:;])\s+(?=\d{1,2}[.)]\s+[A-Z])")
_LIST_MARK_RE = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+")
_SIDE_HEADERS = {"left": "left", "right": "right", "left kidney": "left", "right kidney": "right"}


@dataclass(frozen=True)
class Sentence:
    """One sentence with its section ``kind`` and the organ/side of the enclosing organ header, if any."""

    text: str
    kind: str
    header_organ: str | None
    header_side: str | None = None


def header_organ(header: str) -> str | None:
    """First organ named in a header (``"Kidneys/ureters"`` -> ``"kidney"``); ``None`` for other headers."""
    match = ORGAN_RE.search(header)
    return ORGAN_OF_GROUP[match.lastgroup] if match else None


def _header_kind(header: str) -> str | None:
    text = header.strip().lower()
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(text):
            return kind
    return None


def split_sentences(text: str) -> list[str]:
    """Sentences of a block of text (list markers such as ``1.`` removed, empty pieces dropped)."""
    pieces = (_LIST_MARK_RE.sub("", piece).strip() for piece in _SENTENCE_RE.split(text))
    return [piece for piece in pieces if piece and re.search(r"[A-Za-z]", piece)]


def split_report(text: str) -> list[Sentence]:
    """Sentences of a report in order, each tagged with section kind and organ header context.

    Text before any section header counts as ``findings``. Organ headers inside a skipped section
    (history, comparison, technique) start the findings.
    """
    kind, organ, side = "findings", None, None
    blocks: list[tuple[str, str, str | None, str | None]] = []
    position = 0
    for match in _HEADER_RE.finditer(text):
        blocks.append((text[position : match.start()], kind, organ, side))
        header = match.group(1).strip()
        new_kind = _header_kind(header)
        lower = header.lower()
        if lower in _SIDE_HEADERS and organ is not None:
            side = _SIDE_HEADERS[lower]
        elif new_kind is not None:
            kind, organ, side = new_kind, None, None
        else:
            organ = header_organ(header)
            sides = side_locations(header)
            side = sides[0] if organ is not None and len(sides) == 1 else None
            if kind in SKIP_KINDS:
                kind = "findings"
        position = match.end()
    blocks.append((text[position:], kind, organ, side))
    return [
        Sentence(sentence, block_kind, block_organ, block_side)
        for block, block_kind, block_organ, block_side in blocks
        for sentence in split_sentences(block)
    ]
