"""The versioned LLM prompt and answer schema for report extraction (docs/method.md §2 in instructions).

Bump ``PROMPT_VERSION`` whenever the wording or the schema changes: it is part of the cache key and of
every output row, so answers from different prompts never mix.

Example:
    >>> messages = build_messages("FINDINGS: 2 cm cyst in the left kidney.")
    >>> messages[0]["role"], PROMPT_VERSION
    ('system', 'rsuper-extract-v1')
"""

from __future__ import annotations

import functools

from pydantic import BaseModel, ConfigDict, Field

from rsuper.reports.schema import Lesion

PROMPT_VERSION = "rsuper-extract-v1"

SYSTEM_PROMPT = """You read one abdominal CT radiology report and list every lesion it describes as present now.
Answer with JSON only: {"lesions": [ ... ]}, one object per lesion, with the fields:
- organ: one of liver, pancreas, kidney, spleen, adrenal gland, gallbladder, stomach, colon (rectum is colon),
  duodenum, esophagus, bladder, uterus, prostate, lung, bone, breast.
- location: list of tokens; liver "segment 1".."segment 8" (right lobe = segments 5-8, left lobe = 2-4,
  dome = 7 and 8, caudate = 1; a named segment wins over a region; Roman numerals are segments);
  pancreas "head", "body", "tail" (neck and uncinate process are head; neck-body junction is head and body);
  kidney and adrenal gland "left" or "right". Empty list when not stated.
- size_mm: the CURRENT size as 1 to 3 diameters in millimetres (convert cm; a range "8-9 mm" gives 9; a number
  without unit is mm); null when not stated. Ignore prior sizes ("previously 1.5 cm", sizes on older exams).
- multiple: true for one row standing for "several/multiple/numerous lesions, count not given" in an organ
  (its location is empty except the side for kidney/adrenal gland, its size_mm null). For "multiple lesions,
  the largest 2 cm in segment 7" give the largest as its own lesion plus one multiple row.
- type: cyst, metastasis, PDAC, HCC, RCC, IPMN, hemangioma, adenoma, mass, ... as written; "u" if none.
- attenuation: "hypo", "hyper", "iso", "heterogeneous" or "u".
- certainty: "certain", "high" (likely, consistent with, suspicious for) or "low" (possible, cannot exclude).
- evidence: the sentence the lesion comes from, copied from the report.
A lesion is any focal abnormality (mass, tumor, nodule, cyst, metastasis, focal hypodensity, IPMN), benign or
malignant. NOT lesions: stones, fluid collections, abscesses, diverticula, lymph nodes, resected tumors with no
current evidence, diffuse changes (fatty liver, cirrhosis, atrophy, pancreatitis), negated statements
("no focal pancreatic mass"), the clinical history and the comparison section.
A lesion repeated in the findings and the impression is ONE lesion. No lesion at all: {"lesions": []}."""

REPAIR_PROMPT = (
    "Your previous answer could not be used: {error}\n"
    'Reply again with only the JSON object {{"lesions": [...]}} following the field rules.'
)


class LLMAnswer(BaseModel):
    """What the model must return: the lesions of one report."""

    model_config = ConfigDict(extra="forbid")

    lesions: list[Lesion] = Field(default_factory=list)


@functools.cache
def answer_json_schema() -> dict:
    """JSON schema of ``LLMAnswer`` for the server's structured-output mode (built once)."""
    return LLMAnswer.model_json_schema()


def build_messages(report_text: str) -> list[dict[str, str]]:
    """Chat messages asking for the lesions of ``report_text``."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"REPORT:\n{report_text}"},
    ]


def repair_message(error: str) -> dict[str, str]:
    """The follow-up user message sent once after an invalid answer."""
    return {"role": "user", "content": REPAIR_PROMPT.format(error=error[:500])}
