"""Report CTs of a blind lesion channel as mask cases, through `rsuper refine --intensity-where-blind` (issue 28).

On a finished bench_gain seed: refine the report CTs with the seed's STAGE-1 checkpoint (``refine_stage1/``:
predictions with refine's default TTA, ``refine_channels.csv`` says which lesion channels are blind), then prepare
the seed's data again as the documented self-training loop does (docs/review_refine.md): the report split with
``--masks-dir organs --masks-dir refine_stage1/from_intensity`` (``cache_intensity``), so the CTs refine grew from
intensity become mask cases (the lesion channels refine left out stay unknown) and the other report CTs stay
report cases. Prints the channels' sight and each refined lesion mask's precision and recall against the
phantom's true mask. Train and compare with bench_variant (the seed's R-Super run file on that cache):

    PYTHONPATH=src:benchmarks python benchmarks/bench_intensity_masks.py gain_out/demo/seed44
    PYTHONPATH=src:benchmarks python benchmarks/bench_variant.py gain_out/demo/seed44 --name intensity-masks \\
        --set "cache=[gain_out/demo/seed44/cache_intensity]"

When no channel is blind, nothing is grown from intensity, no cache is written and the arm would equal R-Super.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from bench_gain import refine_report_cts  # this folder is on sys.path when the script runs
from bench_pseudo_masks import mask_accuracy

from rsuper.data.cases import find_mask_files
from rsuper.data.preprocess import prepare_dataset
from rsuper.demo import DemoPlan
from rsuper.io import load_nifti
from rsuper.refine.run import RefineOptions


def refine_with_stage1(seed_dir: Path, device: str) -> Path:
    """``rsuper refine --checkpoint runs/stage1/final.pt --intensity-where-blind`` on the seed's report CTs."""
    return refine_report_cts(seed_dir, seed_dir / "runs" / "stage1" / "final.pt", seed_dir / "refine_stage1",
                             RefineOptions(intensity_where_blind=True), device)


def intensity_mask_accuracy(seed_dir: Path, refined: Path) -> pd.DataFrame:
    """Precision and recall of every non-empty refined lesion mask against the phantom's true mask (CT grid)."""
    rows = []
    for case_dir in sorted((refined / "from_intensity").iterdir()):
        for name, path in find_mask_files(case_dir / "segmentations").items():
            mask = np.asarray(load_nifti(path).array) > 0
            if not mask.any():
                continue
            truth_path = seed_dir / "data" / "truth" / case_dir.name / "segmentations" / f"{name}.nii.gz"
            truth = np.asarray(load_nifti(truth_path).array) > 0 if truth_path.is_file() else np.zeros_like(mask)
            rows.append({"case": case_dir.name, "lesion": name, **mask_accuracy(mask, truth)})
    return pd.DataFrame(rows, columns=["case", "lesion", "voxels", "precision", "recall"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed_dir", type=Path, help="a bench_gain seed folder with runs/stage1/final.pt")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    seed_dir = args.seed_dir
    refined = refine_with_stage1(seed_dir, args.device)
    print(pd.read_csv(refined / "refine_channels.csv").to_string(index=False))
    grown = refined / "from_intensity"
    cases = sorted(grown.iterdir()) if grown.is_dir() else []
    if not cases:
        print(f"{seed_dir}: no channel blind, nothing grown from intensity (the arm would equal R-Super)")
        return
    accuracy = intensity_mask_accuracy(seed_dir, refined)
    print(accuracy.groupby("lesion")[["precision", "recall"]].agg(["mean", "count"]).round(3).to_string())
    cache = seed_dir / "cache_intensity"
    if cache.exists():
        shutil.rmtree(cache)
    plan = DemoPlan.load(seed_dir / "demo_plan.json")
    for split, masks_dirs in (("masks", ()), ("reports", (seed_dir / "organs", grown))):
        result = prepare_dataset(seed_dir / "data" / split, cache, plan.spacing_mm, masks_dirs=masks_dirs)
        if result.failed:
            raise SystemExit(f"prepare failed: {result.failed}")
    print(f"{cache}: the seed's cache with {len(cases)} report CTs as mask cases grown from intensity")


if __name__ == "__main__":
    main()
