"""Report CTs turned into mask cases: exact masks (oracle) or darkness pseudo-masks, for a bench_gain seed.

Diagnosis of a lesion channel that stage 1 left blind (BENCHMARKS.md, gain section): is the information in the
report CTs, and can masks built from the reports alone carry it? The cases are the seed's report CTs whose
extracted report (``extract/findings.jsonl``) calls every kidney or every pancreatic tumor hypoattenuating. Writes a
cache of extra MASK cases beside the seed's caches (never touching them):

``--source truth``     ``cache_truth_hypo``: those CTs from bench_gain's all-masks cache (``<case>_truth``: every
                       true lesion mask, liver included);
``--source darkness``  ``cache_darkness_hypo`` (``<case>_darkness``): organ masks from the report cache; for each
                       usable kidney / pancreas tumor group of the report whose tumors are all hypoattenuating, the
                       lesion mask is, per reported tumor (largest first), the N darkest voxels of the ball of the
                       reported diameter that is darkest inside the report's sub-segments (N = reported volume in
                       voxels; the Ball Loss construction of docs/losses.md with the negated CT as the score and
                       m = 0); an organ the report lists no tumor in gets an empty lesion mask (a known negative);
                       every other lesion channel is left out (unknown). No network is used.

It prints each pseudo-mask's precision and recall against the true masks. Train and compare with bench_variant
(the seed's R-Super run file with the extra cache; same stage 1 and report supervision), e.g.:
    PYTHONPATH=src:benchmarks python benchmarks/bench_pseudo_masks.py gain_out/demo/seed43 --source darkness
    PYTHONPATH=src:benchmarks python benchmarks/bench_variant.py gain_out/demo/seed43 --name pseudo-hypo-masks \\
        --set "cache=[gain_out/demo/seed43/cache, gain_out/demo/seed43/cache_darkness_hypo]"
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rsuper import labels
from rsuper.config import default_class_names
from rsuper.data.preprocess import load_cached_case
from rsuper.data.reportcases import build_report_supervision
from rsuper.losses.ball import ball_pseudo_labels
from rsuper.losses.region import report_region
from rsuper.refine.grow import darkness_score
from rsuper.reports.pipeline import load_findings
from rsuper.reports.schema import CaseFindings

ORGANS = ("pancreas", "kidney", "liver")
SEARCHED = ("kidney", "pancreas")


def mask_accuracy(mask: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Voxels, precision and recall of a non-empty bool ``mask`` against a bool ``truth`` of the same grid."""
    hit = int((mask & truth).sum())
    return {"voxels": int(mask.sum()), "precision": hit / int(mask.sum()), "recall": hit / max(int(truth.sum()), 1)}


def darkness_masks(seed_dir: Path, findings: CaseFindings) -> tuple[dict[str, np.ndarray], object]:
    """Lesion masks (uint8, the cache grid) of one report CT from its report and its CT alone (module docstring)."""
    cached = load_cached_case(seed_dir / "cache", findings.case_id)
    sup = build_report_supervision(findings, set(cached.masks), default_class_names(ORGANS), list(ORGANS), 16)
    reported = {g.organ for g in sup.groups}
    lesion = {labels.lesion_class(o): np.zeros(cached.image.shape, np.uint8) for o in ORGANS if o not in reported}
    for group in sup.groups:
        if group.organ not in SEARCHED or not group.usable or not findings.all_hypoattenuating(group.organ):
            lesion.pop(group.lesion_class, None)
            continue
        region = np.zeros(cached.image.shape, dtype=bool)
        for name in group.mask_classes:
            region |= np.asarray(cached.masks[name]) > 0
        score = torch.from_numpy(darkness_score(cached.image, region))
        placed = ball_pseudo_labels(score[None], report_region(torch.from_numpy(region)[None, None].float(),
                                                               cached.spacing_mm).dilated,
                                    torch.tensor([list(group.diameters_mm)]), torch.tensor([list(group.volumes_mm3)]),
                                    cached.spacing_mm, margin=0.0).positive[0].numpy()
        earlier = lesion.get(group.lesion_class)
        lesion[group.lesion_class] = (placed | (earlier > 0 if earlier is not None else False)).astype(np.uint8)
    return lesion, cached


def write_darkness_case(seed_dir: Path, out: Path, findings: CaseFindings) -> tuple[dict, list]:
    """One ``<case>_darkness`` cache case (CT and organ masks linked from the report cache); its manifest entry and
    precision / recall rows."""
    case = findings.case_id
    lesion, cached = darkness_masks(seed_dir, findings)
    case_id = f"{case}_darkness"
    folder = out / case_id
    (folder / "masks").mkdir(parents=True)
    os.symlink((seed_dir / "cache" / case / "ct.npy").resolve(), folder / "ct.npy")
    for name in cached.masks:
        os.symlink((seed_dir / "cache" / case / "masks" / f"{name}.npy").resolve(), folder / "masks" / f"{name}.npy")
    rows = []
    for name, mask in lesion.items():
        np.save(folder / "masks" / f"{name}.npy", mask)
        truth = np.load(seed_dir / "cache_truth" / f"{case}_truth" / "masks" / f"{name}.npy") > 0
        if mask.any():
            rows.append({"case": case, "lesion": name, **mask_accuracy(mask > 0, truth)})
    classes = sorted([*cached.masks, *lesion])
    (folder / "meta.json").write_text(json.dumps({**cached.meta, "case_id": case_id, "classes": classes}))
    return {"dir": case_id, "classes": classes, "shape": list(cached.image.shape)}, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed_dir", type=Path, help="a finished bench_gain seed folder (OUT/<family>/seed<N>)")
    parser.add_argument("--source", choices=("truth", "darkness"), required=True)
    args = parser.parse_args()
    seed_dir = args.seed_dir
    findings = load_findings(seed_dir / "extract" / "findings.jsonl")
    cases = sorted(case for case, f in findings.items() if any(f.all_hypoattenuating(organ) for organ in SEARCHED))
    manifest = json.loads((seed_dir / "cache_truth" / "manifest.json").read_text())
    out = seed_dir / f"cache_{args.source}_hypo"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    entries, rows = {}, []
    for case in cases:
        if args.source == "truth":
            entries[f"{case}_truth"] = manifest["cases"][f"{case}_truth"]
            os.symlink((seed_dir / "cache_truth" / f"{case}_truth").resolve(), out / f"{case}_truth")
        else:
            entries[f"{case}_darkness"], case_rows = write_darkness_case(seed_dir, out, findings[case])
            rows += case_rows
    (out / "manifest.json").write_text(json.dumps({**manifest, "cases": entries}, indent=1))
    print(f"{out}: {len(entries)} mask cases ({args.source})")
    if rows:
        table = pd.DataFrame(rows)
        print(table.groupby("lesion")[["precision", "recall"]].agg(["mean", "count"]).round(3).to_string())


if __name__ == "__main__":
    main()
