"""Free-text radiology reports for phantoms, written from varied templates, plus their ideal extraction.

`write_report` returns the report text and the lesions a perfect reader would extract from it
(docs/method.md §2: current sizes in mm, location tokens after the liver/pancreas conventions, `multiple`
rows, no lesion for negations and distractors). Templates are data (lists of phrase patterns); all
choices come from the given seeded RNG, so a report is deterministic per seed.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field

import numpy as np

from rsuper.reports.schema import Lesion

ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII"}


@dataclass
class ReportTumor:
    """What the report writer needs to know about one true tumor."""

    organ: str  # pancreas | kidney | liver
    tokens: list[str]  # true sub-segment tokens, anatomical order
    diameters_mm: tuple[float, float, float]  # largest first
    axial_position: float = 0.5  # 0 inferior .. 1 superior end of the organ (kidney poles)


@dataclass
class ReportLesion:
    """A lesion the report states, and which true tumor it describes (None for a `multiple` row)."""

    lesion: Lesion
    tumor_index: int | None


@dataclass
class _Said:
    sentence: str
    lesions: list[ReportLesion] = field(default_factory=list)


# ---- phrase data --------------------------------------------------------------------------------
NOUNS = {
    "pancreas": [("mass", "mass"), ("lesion", "lesion"), ("hypoenhancing mass", "mass")],
    "kidney": [("mass", "mass"), ("lesion", "lesion"), ("solid lesion", "lesion"), ("renal mass", "mass")],
    "liver": [("lesion", "lesion"), ("mass", "mass"), ("nodule", "nodule"), ("metastasis", "metastasis")],
}
PLURAL = {"mass": "masses", "lesion": "lesions", "nodule": "nodules", "metastasis": "metastases"}
ADJECTIVES = [("hypodense", "hypo"), ("hypoattenuating", "hypo"), ("low-attenuation", "hypo"),
              ("ill-defined hypodense", "hypo"), ("heterogeneous", "heterogeneous"), ("", "u")]
ORGAN_ADJ = {"pancreas": "pancreatic", "kidney": "renal", "liver": "hepatic"}

PANCREAS_SITES = {
    ("head",): ["in the pancreatic head", "in the head of the pancreas", "in the uncinate process",
                "in the pancreatic neck", "in the pancreatic head/uncinate process"],
    ("body",): ["in the pancreatic body", "in the body of the pancreas", "within the mid pancreatic body"],
    ("tail",): ["in the pancreatic tail", "in the tail of the pancreas",
                "in the pancreatic tail near the splenic hilum"],
    ("head", "body"): ["at the pancreatic neck-body junction", "involving the pancreatic head and body"],
    ("body", "tail"): ["in the pancreatic body/tail", "involving the body and tail of the pancreas"],
    ("head", "body", "tail"): ["involving the pancreatic head, body and tail"],
}
KIDNEY_POLES = {"lower": ["lower pole of the {side} kidney", "{side} kidney lower pole", "{side} renal lower pole"],
                "mid": ["interpolar region of the {side} kidney", "mid {side} kidney", "{side} kidney"],
                "upper": ["upper pole of the {side} kidney", "{side} kidney upper pole", "{side} renal upper pole"]}
LIVER_REGIONS = [  # (tokens covered, phrase, tokens the phrase means) per docs/method.md §2
    ({"segment 1"}, "in the caudate lobe", ["segment 1"]),
    ({"segment 7", "segment 8"}, "at the hepatic dome", ["segment 7", "segment 8"]),
    ({"segment 5", "segment 6", "segment 7", "segment 8"}, "in the right hepatic lobe",
     ["segment 5", "segment 6", "segment 7", "segment 8"]),
    ({"segment 2", "segment 3", "segment 4"}, "in the left hepatic lobe", ["segment 2", "segment 3", "segment 4"]),
]

SIZED = [
    "There is a {adj}{noun} {site} measuring {size}{prior}.",
    "A {size} {adj}{noun} is present {site}{prior}.",
    "{Adj}{noun} {site}, measuring {size}{prior}.",
    "{Adj}{noun} {site} ({size}){prior}.",
    "Again seen is a {adj}{noun} {site}, now measuring {size}{prior}.",
    "There is a {adj}{noun} {site} measuring approximately {size} (series 3, image {image}){prior}.",
    "Redemonstrated {adj}{noun} {site} measures up to {size}{prior}.",
]
UNSIZED = [
    "There is a small {adj}{noun} {site}.",
    "{Adj}{noun} {site}, too small to accurately measure.",
    "Subtle {adj}{noun} {site} is incompletely characterized.",
]
MULTIPLE = [
    "Multiple {adj}{nouns} {organ_site}, the largest {site} measuring {size}.",
    "Several {adj}{nouns} are seen {organ_site}; the largest is {site} and measures {size}.",
]
ORGAN_SITE = {"pancreas": "in the pancreas", "liver": "throughout the liver", "kidney": "in the {side} kidney"}

HEALTHY = {
    "pancreas": ["No focal pancreatic mass.", "The pancreas is unremarkable.",
                 "Normal pancreas without ductal dilatation.",
                 "The pancreas enhances homogeneously without focal lesion."],
    "kidney": ["The kidneys are unremarkable without hydronephrosis.", "No renal mass or hydronephrosis.",
               "Kidneys enhance symmetrically. No focal renal lesion.", "Normal kidneys bilaterally."],
    "liver": ["The liver is normal in size and contour without focal lesion.", "No focal hepatic lesion.",
              "Homogeneous hepatic enhancement without focal mass.", "Unremarkable liver."],
}
OTHER_KIDNEY_OK = ["The {side} kidney is unremarkable.", "No {side} renal mass or hydronephrosis."]
SPLEEN = ["The spleen is normal in size.", "Spleen: unremarkable.", "No splenomegaly."]
ADRENALS = ["The adrenal glands are unremarkable.", "No adrenal nodule."]
GALLBLADDER = {
    "normal": ["The gallbladder is unremarkable.", "Gallbladder is normally distended without wall thickening."],
    "stones": ["Cholelithiasis without evidence of acute cholecystitis.",
               "Several gallstones, the largest measuring 8 mm, without gallbladder wall thickening."],
    "absent": ["Status post cholecystectomy.", "The gallbladder is surgically absent."],
}
FATTY = ["Diffuse hepatic steatosis.", "Diffusely decreased hepatic attenuation compatible with fatty infiltration."]
BOWEL = ["No bowel obstruction.", "Scattered colonic diverticulosis without diverticulitis.",
         "Normal caliber small and large bowel.", "Sigmoid diverticulosis. No bowel wall thickening."]
OTHER = ["No retroperitoneal or mesenteric lymphadenopathy.",
         "Mild atherosclerotic calcification of the abdominal aorta.",
         "Degenerative changes of the lumbar spine. No aggressive osseous lesion.", "No free fluid or free air."]
STONE = ["Nonobstructing {mm} mm {side} renal calculus.", "Punctate {mm} mm nonobstructing stone in the {side} kidney."]
HISTORY = ["Abdominal pain.", "Weight loss.", "Staging of known malignancy.", "Elevated liver enzymes.",
           "Hematuria.", "Follow-up.", "Jaundice.", "Left upper quadrant pain, evaluate."]
TECHNIQUE = {
    "portal venous": ["CT of the abdomen and pelvis with intravenous contrast in the portal venous phase.",
                      "Contrast-enhanced CT abdomen, portal venous phase, 2.5 mm reconstructions."],
    "arterial": ["Multiphase CT of the abdomen, late arterial phase.", "CT abdomen with IV contrast, arterial phase."],
    "non-contrast": ["CT of the abdomen without intravenous contrast.", "Non-contrast CT abdomen and pelvis."],
}
COMPARISON = ["None.", "None available.", "CT abdomen dated {date}.", "Prior CT from {date}."]
IMPRESSION_TUMOR = {
    "pancreas": ["{Site} mass, suspicious for pancreatic adenocarcinoma.", "{Site} lesion as described above."],
    "kidney": ["{Side} renal mass, concerning for renal cell carcinoma.", "{Side} renal lesion as above."],
    "liver": ["Hepatic lesion(s) as described above.", "Hepatic lesion(s), metastatic disease not excluded."],
}
IMPRESSION_HEALTHY = ["No acute abdominal abnormality.", "No focal pancreatic, renal or hepatic mass.",
                      "Unremarkable CT of the abdomen."]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def format_size(rng: np.random.Generator, diameters_mm, unitless_ok: bool = True) -> tuple[str, list[float]]:
    """Size phrase (mm or cm, 1-3 diameters, rounded like a radiologist) and its value in mm.

    With `unitless_ok`, about 1 in 20 phrases omit the unit (a bare number is mm, docs/method.md §2).
    """
    k = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
    dims = sorted(diameters_mm, reverse=True)[:k]
    style = rng.random()
    if style < 0.55:  # cm, 0.1 cm precision
        values = [max(0.1, round(d / 10.0, 1)) for d in dims]
        return " x ".join(f"{v:.1f}" for v in values) + " cm", [round(v * 10.0, 1) for v in values]
    values = [max(1, int(round(d))) for d in dims]
    unit = "" if style > 0.95 and unitless_ok else " mm"  # a number without unit is mm (docs/method.md §2)
    return " x ".join(str(v) for v in values) + unit, [float(v) for v in values]


def _site(rng, t: ReportTumor) -> tuple[str, list[str]]:
    """Location phrase and the tokens a reader should extract from it."""
    if t.organ == "pancreas":
        if rng.random() < 0.1:
            return "in the pancreas", []
        return _pick(rng, PANCREAS_SITES[tuple(t.tokens)]), list(t.tokens)
    if t.organ == "kidney":
        side = t.tokens[0]
        pole = "lower" if t.axial_position < 0.33 else "upper" if t.axial_position > 0.66 else "mid"
        phrase = _pick(rng, KIDNEY_POLES[pole]).format(side=side)
        return ("arising from the " if rng.random() < 0.3 else "in the ") + phrase, [side]
    if rng.random() < 0.1:
        return "in the liver", []
    tokens = set(t.tokens)
    regions = [r for r in LIVER_REGIONS if tokens <= r[0]]
    if regions and rng.random() < 0.3:
        _, phrase, means = regions[0]
        return phrase, means
    nums = [int(tok.split()[1]) for tok in t.tokens]
    roman = rng.random() < 0.4
    names = [ROMAN[n] if roman else str(n) for n in nums]
    if len(names) == 1:
        phrase = _pick(rng, ["in segment {0}", "in hepatic segment {0}", "in segment {0} of the liver"])
        phrase = phrase.format(names[0])
    elif len(names) == 2 and rng.random() < 0.5:
        phrase = f"in segment {names[0]}/{names[1]}"
    else:
        phrase = "spanning segments " + ", ".join(names[:-1]) + " and " + names[-1]
    return phrase, list(t.tokens)


def _describe(rng, t: ReportTumor, index: int, has_comparison: bool) -> _Said:
    noun, type_ = _pick(rng, NOUNS[t.organ])
    adj, att = _pick(rng, ADJECTIVES)
    adj_s = f"{adj} " if adj else ""
    site, tokens = _site(rng, t)
    if rng.random() < 0.08:
        sentence = _pick(rng, UNSIZED).format(adj=adj_s, Adj=(adj_s or "").capitalize() or "A ", noun=noun, site=site)
        size_mm = None
    else:
        follow_up = ("Again", "Redemonstrated")  # only when there is a comparison study
        template = _pick(rng, SIZED if has_comparison else [t for t in SIZED if not t.startswith(follow_up)])
        size, size_mm = format_size(rng, t.diameters_mm, unitless_ok="{size} {adj}" not in template)
        prior = ""
        if has_comparison and rng.random() < 0.35:
            old, _ = format_size(rng, [0.7 * d for d in t.diameters_mm], unitless_ok=False)
            prior = _pick(rng, [", previously {0}", " (previously measured {0})", ", increased from {0}"]).format(old)
        sentence = template.format(
            adj=adj_s, Adj=adj_s.capitalize() if adj_s else "", noun=noun, site=site, size=size, prior=prior,
            image=int(rng.integers(20, 120)),
        )
    sentence = sentence[0].upper() + sentence[1:]
    lesion = Lesion(organ=t.organ, location=tokens, size_mm=size_mm, type=type_, attenuation=att,
                    certainty="certain", evidence=sentence)
    return _Said(sentence, [ReportLesion(lesion, index)])


def _describe_multiple(rng, organ: str, items: list[tuple[int, ReportTumor]]) -> _Said:
    idx, largest = max(items, key=lambda it: it[1].diameters_mm[0])
    noun, type_ = _pick(rng, NOUNS[organ])
    adj, att = _pick(rng, ADJECTIVES)
    site, tokens = _site(rng, largest)
    size, size_mm = format_size(rng, largest.diameters_mm)
    side = largest.tokens[0] if organ == "kidney" else ""
    words = noun.split()
    sentence = _pick(rng, MULTIPLE).format(
        adj=f"{adj} " if adj else "", nouns=" ".join(words[:-1] + [PLURAL[words[-1]]]),
        organ_site=ORGAN_SITE[organ].format(side=side), site=site, size=size,
    )
    sentence = sentence[0].upper() + sentence[1:]
    main = Lesion(organ=organ, location=tokens, size_mm=size_mm, type=type_, attenuation=att,
                  certainty="certain", evidence=sentence)
    more = Lesion(organ=organ, location=[side] if side else [], multiple=True, type=type_, attenuation=att,
                  certainty="certain", evidence=sentence)
    return _Said(sentence, [ReportLesion(main, idx), ReportLesion(more, None)])


def write_report(
    rng: np.random.Generator, tumors: list[ReportTumor], incidental: dict
) -> tuple[str, list[ReportLesion]]:
    """Report text and the lesions it states (in report order) for one phantom."""
    has_comparison = rng.random() < 0.4
    by_organ: dict[str, list[tuple[int, ReportTumor]]] = {"liver": [], "pancreas": [], "kidney": []}
    for i, t in enumerate(tumors):
        by_organ[t.organ].append((i, t))
    organ_text: dict[str, list[_Said]] = {}
    for organ, items in by_organ.items():
        said: list[_Said] = []
        if organ == "liver" and incidental.get("fatty_liver"):
            said.append(_Said(_pick(rng, FATTY)))
        if not items:
            said.append(_Said(_pick(rng, HEALTHY[organ])))
        else:
            sides = {t.tokens[0] for _, t in items} if organ == "kidney" else {""}
            if len(items) >= 2 and len(sides) == 1 and rng.random() < 0.35:
                said.append(_describe_multiple(rng, organ, items))
            else:
                said += [_describe(rng, t, i, has_comparison) for i, t in items]
            if organ == "kidney" and len(sides) == 1:
                other = "right" if sides == {"left"} else "left"
                said.append(_Said(_pick(rng, OTHER_KIDNEY_OK).format(side=other)))
        if organ == "kidney" and incidental.get("kidney_stone"):
            said.append(_Said(_pick(rng, STONE).format(mm=int(rng.integers(3, 6)), side=incidental["kidney_stone"])))
        organ_text[organ] = said
    gb = "absent" if incidental.get("cholecystectomy") else "stones" if incidental.get("gallstones") else "normal"
    headed = rng.random() < 0.6
    blocks = [
        ("LIVER", organ_text["liver"]),
        ("GALLBLADDER", [_Said(_pick(rng, GALLBLADDER[gb]))]),
        ("PANCREAS", organ_text["pancreas"]),
        ("SPLEEN", [_Said(_pick(rng, SPLEEN))]),
        ("ADRENALS", [_Said(_pick(rng, ADRENALS))]),
        ("KIDNEYS", organ_text["kidney"]),
        ("BOWEL", [_Said(_pick(rng, BOWEL))]),
        ("OTHER", [_Said(_pick(rng, OTHER))]),
    ]
    if headed:
        findings = "\n".join(f"{name}: " + " ".join(s.sentence for s in said) for name, said in blocks)
    else:
        findings = " ".join(s.sentence for _, said in blocks for s in said)
    lesions = [rl for _, said in blocks for s in said for rl in s.lesions]

    impression: list[str] = []
    for organ, items in by_organ.items():
        if not items:
            continue
        first = items[0][1]
        site = _pick(rng, PANCREAS_SITES.get(tuple(first.tokens), ["in the pancreas"]))
        site = re.sub(r"^(?:within|in|at|involving) the ", "", site)  # "within the mid body" -> "mid body"
        impression.append(_pick(rng, IMPRESSION_TUMOR[organ]).format(
            Site=site[0].upper() + site[1:], Side=first.tokens[0].capitalize()))
    if gb == "stones":
        impression.append("Cholelithiasis.")
    if not impression:
        impression.append(_pick(rng, IMPRESSION_HEALTHY))
    date = f"{int(rng.integers(2015, 2024))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    comparison = _pick(rng, COMPARISON[2:]).format(date=date) if has_comparison else _pick(rng, COMPARISON[:2])
    history_head = _pick(rng, ["CLINICAL HISTORY", "INDICATION", "HISTORY"])
    text = (
        f"{history_head}: {_pick(rng, HISTORY)}\n"
        f"TECHNIQUE: {_pick(rng, TECHNIQUE[incidental.get('phase', 'portal venous')])}\n"
        f"COMPARISON: {comparison}\n"
        f"FINDINGS:\n{findings}\n"
        "IMPRESSION:\n" + "\n".join(f"{i}. {line}" for i, line in enumerate(impression, 1))
    )
    return text, lesions
