"""Where does R-Super's DSC gap to all-masks come from? A diagnosis on finished bench_gain seeds (issue 28).

Three readings per tumor organ and arm (the seed's ``runs/<arm>/final.pt``), pooled over the seeds given:

1. Test CTs, from bench_gain's ``per_case_none.csv`` (no TTA): share of tumor CTs hit (lesion DSC > 0), mean DSC
   on the hit ones, median predicted / true tumor volume there, false-positive lesions per tumor CT.
2. Report CTs: the arm's checkpoint refines the seed's report CTs (``rsuper refine``, no TTA: every reported
   tumor placed as the Ball Loss places it, margin 0) into ``diag_place/<arm>``; the share of ball centres on a
   true tumor (``rsuper.review.truth.refined_tumor_truth``). ``stage1`` is where stage 2's Ball Loss starts.
3. Test CTs: the arm's lesion probabilities (no TTA, ``diag_prob/<arm>``) thresholded at 0.1 ... 0.7: DSC on the
   tumor CTs and the mean probability inside the true tumors (is the gap a threshold?).

Every step resumes. Example (2026-12-05, CPU box, one thread; ~1 min per arm and seed for 2, ~2 min for 3):
    PYTHONPATH=src:benchmarks python benchmarks/bench_dsc_gap.py gain_out/demo/seed41 gain_out/demo/seed42 \\
        gain_out/demo/seed43 --arms stage1 masks-only R-Super all-masks
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from bench_gain import refine_report_cts  # this folder is on sys.path when the script runs

from rsuper import labels
from rsuper.evaluate.collect import load_truth_mask, on_grid
from rsuper.infer.predict import PROBABILITY_SCALE, PredictOptions, Predictor, find_ct_inputs, predict_cases
from rsuper.io import load_nifti
from rsuper.refine.run import RefineOptions
from rsuper.review.truth import refined_tumor_truth

THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
TEST_ARMS = ("masks-only", "R-Super", "all-masks")


def test_decomposition(seed_dirs: list[Path], arms: list[str]) -> pd.DataFrame:
    """Reading 1 from the seeds' per-case tables (arms without test rows are skipped)."""
    cases = pd.concat([pd.read_csv(d / "per_case_none.csv") for d in seed_dirs], ignore_index=True)
    tumor = cases[cases["truth"].astype(bool) & cases["arm"].isin(arms)].copy()
    tumor["hit"] = tumor["dsc"] > 0
    tumor["volume_ratio"] = tumor["pred_volume_mm3"] / tumor["mask_volume_mm3"]
    hit = tumor[tumor["hit"]].groupby(["organ", "arm"])
    g = tumor.groupby(["organ", "arm"])
    return pd.DataFrame({
        "tumor_cts": g.size(), "dsc": 100 * g["dsc"].mean(), "hit_%": 100 * g["hit"].mean(),
        "dsc_on_hit": 100 * hit["dsc"].mean(), "volume_ratio_on_hit": hit["volume_ratio"].median(),
        "fp_lesions_per_ct": (g["pred_lesions"].sum() - g["pred_matched"].sum()) / g.size(),
    }).round(2)


def placement(seed_dir: Path, arm: str) -> pd.DataFrame:
    """Reading 2 for one seed and arm: one row per refined tumor (refines first when needed)."""
    out = seed_dir / "diag_place" / arm
    if not (out / "refine_tumors.csv").is_file():
        refine_report_cts(seed_dir, seed_dir / "runs" / arm / "final.pt", out, RefineOptions(), tta="none")
    return refined_tumor_truth(out, out / "predictions", seed_dir / "data" / "truth").assign(arm=arm)


def threshold_sweep(seed_dir: Path, arm: str) -> pd.DataFrame:
    """Reading 3 for one seed and arm: one row per tumor CT and lesion class (predicts first when needed)."""
    out = seed_dir / "diag_prob" / arm
    predict_cases(Predictor.from_checkpoint(seed_dir / "runs" / arm / "final.pt", device="cpu"),
                  find_ct_inputs(seed_dir / "data" / "test"), out, PredictOptions(tta="none", save_probabilities=True))
    rows = []
    for case in sorted(p for p in out.iterdir() if (p / "probabilities").is_dir()):
        for path in sorted((case / "probabilities").glob("*_lesion.nii.gz")):
            lesion_class = path.name.removesuffix(".nii.gz")
            truth = load_truth_mask(seed_dir / "data" / "test", case.name, lesion_class)
            if truth is None or not truth.array.any():
                continue
            prob = on_grid(load_nifti(path), truth).array.astype(np.float32) / PROBABILITY_SCALE  # uint8 on disk
            row = {"organ": labels.ORGAN_OF_LESION_CLASS[lesion_class], "arm": arm,
                   "p_in_tumor": 100 * float(prob[truth.array].mean())}
            for threshold in THRESHOLDS:
                called = prob >= threshold
                row[f"dsc@{threshold}"] = 200 * (called & truth.array).sum() / (called.sum() + truth.array.sum())
            rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed_dir", type=Path, nargs="+", help="finished bench_gain seed folders (OUT/<family>/seed<N>)")
    parser.add_argument("--arms", nargs="+", default=["stage1", *TEST_ARMS],
                        help="runs/<arm> checkpoints to read (e.g. a bench_variant arm)")
    parser.add_argument("--no-sweep", action="store_true", help="skip reading 3")
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    print("1. Test CTs with a true tumor, no TTA (DSC and hit in %):")
    print(test_decomposition(args.seed_dir, args.arms).to_string())
    placed = pd.concat([placement(d, arm).assign(seed=d.name) for d in args.seed_dir for arm in args.arms])
    on = placed.groupby(["lesion_class", "arm"], sort=False)["on_true_tumor"]
    print("\n2. Report CTs: share of Ball-Loss ball centres on a true tumor (%), pooled, and per seed:")
    per_seed = placed.pivot_table(index=["lesion_class", "arm"], columns="seed", values="on_true_tumor", sort=False)
    print((100 * per_seed).assign(pooled=100 * on.mean(), tumors=on.size()).round(1).to_string())
    if not args.no_sweep:
        sweep = pd.concat([threshold_sweep(d, arm) for d in args.seed_dir for arm in args.arms if arm != "stage1"])
        print("\n3. Test tumor CTs, lesion probability thresholded (DSC %) and mean probability in the tumor (%):")
        print(sweep.groupby(["organ", "arm"]).mean(numeric_only=True).round(1).to_string())


if __name__ == "__main__":
    main()
