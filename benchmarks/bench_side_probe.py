"""Paired side probe: is a checkpoint's kidney-lesion channel side-free? (successor of bench_mirror.py)

Natural test sets hold 2-4 kidney tumors per side, too few to tell a side-locked channel from chance. This probe
builds ``--n`` phantom patients and renders each three times from the same anatomy seed: healthy, with one kidney
tumor in the LEFT kidney, and with the same-size, same-contrast tumor in the RIGHT kidney. Each version is
predicted without TTA and without organ gating, at the checkpoint's spacing. Per side it reports:

- sensitivity: tumor kidneys "called" (>= ``--volume`` mm³ of lesion probability >= 0.5 inside the true kidney
  dilated by 2 voxels), and the mean lesion logit inside the tumor;
- healthy call rate: kidneys of the healthy version called, and the 99th-percentile lesion logit in them;
- the gaps left - right. A side-free channel has gaps near 0; the issue's bar is gaps <= 25 points.

``--family demo``: the demo's phantoms (``rsuper.demo.DemoPlan``: tumor contrast, noise); ``--family realct``: the
second family (``rsuper.synthetic.realct``, the real CT of ../shared/data deformed per patient, tumor contrast
-70 to -20 HU). Both at the checkpoint's spacing, portal venous unless ``--phase`` says otherwise; the patient seeds
start at ``--seed-base`` (far from any training seed).

Example:
    python benchmarks/bench_side_probe.py demo_out/runs/masks-only/final.pt --n 20 --out probe.json
    python benchmarks/bench_side_probe.py run/final.pt --family realct --n 20
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from rsuper import labels
from rsuper.demo import DemoPlan
from rsuper.infer.predict import PredictOptions, Predictor, predict_probabilities
from rsuper.io import normalize_ct
from rsuper.synthetic.anatomy import AnatomySettings, Phantom, TumorPlan, generate_anatomy

PHASES = {"portal": (1.0, 0.0, 0.0), "arterial": (0.0, 1.0, 0.0), "non-contrast": (0.0, 0.0, 1.0)}
SIDES = ("left", "right")
FAMILIES = ("demo", "realct")


def phantom_maker(family: str, spacing_mm: float, phase: str) -> Callable[[int, list[TumorPlan]], Phantom]:
    """``make(seed, plans) -> Phantom``: one patient of ``family`` per seed, with the given tumors."""
    if family == "demo":
        plan = DemoPlan(out=Path("."), device="cpu")
        settings = replace(AnatomySettings(), spacing_mm=(spacing_mm,) * 3, tumor_contrast_hu=plan.tumor_contrast_hu,
                           noise_sd_hu=tuple(plan.noise_sd_hu), phase_weights=PHASES[phase])
        return lambda seed, plans: generate_anatomy(np.random.default_rng([seed, 0]), settings, plans)
    from rsuper.synthetic.realct import DEFAULT_CT, DEFAULT_SEG, RealCTSettings, generate_case

    rc = RealCTSettings(ct_path=str(DEFAULT_CT), seg_path=str(DEFAULT_SEG), spacing_mm=(spacing_mm,) * 3,
                        phase_weights=PHASES[phase])
    return lambda seed, plans: generate_case(0, "test", seed, rc, plans=plans)[0]


def paired_phantoms(seed: int, make: Callable[[int, list[TumorPlan]], Phantom]) -> tuple[dict[str, Phantom], float]:
    """(healthy, tumor-left, tumor-right) versions of one patient; the same tumor (15-40 mm) on either side."""
    size_rng = np.random.default_rng([seed, 1])
    d1 = float(size_rng.uniform(15.0, 40.0))
    diameters = (d1, d1 * 0.9, d1 * 0.8)
    versions = {"healthy": []} | {side: [TumorPlan("kidney", side, diameters)] for side in SIDES}
    return {name: make(seed, plans) for name, plans in versions.items()}, d1


def lesion_logits(predictor: Predictor, ct_hu: np.ndarray) -> np.ndarray:
    """Kidney-lesion logit (X, Y, Z) float32 of a RAS CT at model spacing, one pass (no TTA, no gating)."""
    prob = predict_probabilities(predictor, normalize_ct(ct_hu), PredictOptions(tta="none"))
    p = prob[predictor.class_names.index(labels.lesion_class("kidney"))].astype(np.float32)
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def probe(predictor: Predictor, family: str, n: int, seed_base: int = 90_000, phase: str = "portal",
          volume_mm3: float = 300.0, mirrored: bool = False) -> pd.DataFrame:
    """One row per (patient, side, version): called?, logit summaries. Phantoms at the checkpoint's spacing;
    ``mirrored``: each CT flipped left-right first (situs inversus: a side preference that follows the image
    side moves to the other anatomical side, one that follows anatomy stays)."""
    spacing = predictor.spacing_mm
    if len(set(spacing)) != 1:
        raise SystemExit(f"the probe renders isotropic phantoms; this checkpoint's spacing is {spacing} mm")
    make = phantom_maker(family, float(spacing[0]), phase)
    voxel_mm3 = float(np.prod(spacing))
    rows = []
    for i in range(n):
        phantoms, d1 = paired_phantoms(seed_base + i, make)
        for version, ph in phantoms.items():
            flip = (lambda a: np.ascontiguousarray(a[::-1])) if mirrored else (lambda a: a)
            logit = lesion_logits(predictor, flip(ph.ct_hu))
            tumor = flip(ph.lesions[labels.lesion_class("kidney")]).astype(bool)
            for side in SIDES:
                kidney = flip(ph.organs[f"kidney_{side}"]).astype(bool)
                area = ndimage.binary_dilation(kidney, iterations=2)
                has_tumor = version == side
                row = {"patient": i, "version": version, "side": side, "tumor": has_tumor, "diameter_mm": round(d1, 1),
                       "called": float(((logit >= 0) & area).sum()) * voxel_mm3 >= volume_mm3,
                       "p99_logit_kidney": float(np.percentile(logit[kidney & ~tumor], 99))}
                if has_tumor:
                    row["mean_logit_tumor"] = float(logit[tumor].mean())
                rows.append(row)
    return pd.DataFrame(rows)


def summarise(rows: pd.DataFrame) -> dict:
    """Per side: sensitivity, healthy call rate (healthy version only), logit summaries, and the gaps."""
    out: dict = {}
    for side in SIDES:
        tumor = rows[(rows["side"] == side) & rows["tumor"]]
        healthy = rows[(rows["side"] == side) & (rows["version"] == "healthy")]
        out[f"sens_{side}"] = round(float(tumor["called"].mean()), 3)
        out[f"fp_{side}"] = round(float(healthy["called"].mean()), 3)
        out[f"tumor_logit_{side}"] = round(float(tumor["mean_logit_tumor"].mean()), 2)
        out[f"healthy_p99_logit_{side}"] = round(float(healthy["p99_logit_kidney"].mean()), 2)
    out["sens_gap"] = round(out["sens_left"] - out["sens_right"], 3)
    out["fp_gap"] = round(out["fp_left"] - out["fp_right"], 3)
    out["tumor_logit_gap"] = round(out["tumor_logit_left"] - out["tumor_logit_right"], 2)
    out["healthy_logit_gap"] = round(out["healthy_p99_logit_left"] - out["healthy_p99_logit_right"], 2)
    out["n_per_side"] = int(rows["patient"].nunique())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--family", choices=FAMILIES, default="demo")
    parser.add_argument("--n", type=int, default=20, help="patients (each rendered healthy, tumor left, tumor right)")
    parser.add_argument("--seed-base", type=int, default=90_000)
    parser.add_argument("--phase", choices=tuple(PHASES), default="portal")
    parser.add_argument("--mirrored", action="store_true", help="flip every CT left-right first (situs inversus)")
    parser.add_argument("--volume", type=float, default=300.0, help="mm³ of p >= 0.5 that make a kidney 'called'")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="JSON file for the summaries (and a CSV of rows beside it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for ckpt in args.checkpoints:
        t0 = time.time()
        predictor = Predictor.from_checkpoint(ckpt, device="cpu")
        rows = probe(predictor, args.family, args.n, args.seed_base, args.phase, args.volume, args.mirrored)
        results[str(ckpt)] = {**summarise(rows), "family": args.family, "phase": args.phase, "mirrored": args.mirrored,
                              "wall_s": round(time.time() - t0)}
        print(json.dumps({str(ckpt): results[str(ckpt)]}), flush=True)
        if args.out:
            rows.to_csv(args.out.with_suffix(f".{len(results)}.csv"), index=False)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
