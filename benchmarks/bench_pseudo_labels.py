"""How right are the Ball Loss pseudo-labels of a checkpoint? Measured on a demo's phantom report CTs.

For every true tumor of the report split (``data/gold/tumors_truth.csv`` of a ``rsuper demo`` folder) the
checkpoint predicts the cached CT (sliding window at the training patch size, as in training), the
Ball Loss pseudo-labels are built exactly as in training (region = the tumor's true sub-segments, R =
region dilated 15 mm, the reported diameter and volume), and the precision is the share of pseudo-positive
voxels inside a true tumor of that organ. The "darkest ball" row uses the negated CT instead of the
network (inside the region only): how visible the tumors are by intensity alone.

A stage-1 model whose precision is low makes the Ball Loss teach false positives (the network learns to
"hedge"); this is the number to check before trusting stage 2 on new data.

Example:
    python benchmarks/bench_pseudo_labels.py demo_out/runs/stage1/final.pt demo_out --per-tumor
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai.inferers import sliding_window_inference

from rsuper.data.preprocess import load_cached_case
from rsuper.infer.predict import infer_logits_fn
from rsuper.losses.ball import ball_pseudo_labels
from rsuper.losses.region import report_region
from rsuper.models.checkpoint import load_checkpoint, model_from_checkpoint
from rsuper.refine.grow import darkness_score
from rsuper.reports.schema import volume_from_diameters


def _mask(root: Path, case: str, name: str) -> np.ndarray:
    """A truth mask (sub-segment or lesion) of a phantom, else the organ mask of the report case."""
    path = root / "data" / "truth" / case / "segmentations" / f"{name}.nii.gz"
    if not path.is_file():
        path = root / "data" / "reports" / case / "segmentations" / f"{name}.nii.gz"
    return np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj) > 0


def _precision(score: torch.Tensor, region: np.ndarray, lesion: np.ndarray, diameters: list[float],
               spacing: tuple[float, float, float]) -> float:
    dilated = report_region(torch.from_numpy(region)[None, None].float(), spacing).dilated
    labels = ball_pseudo_labels(score[None].float(), dilated, torch.tensor([[diameters[0]]]),
                                torch.tensor([[volume_from_diameters(diameters)]]), spacing)
    positive = labels.positive[0].numpy()
    return float((positive & lesion).sum() / max(positive.sum(), 1))


def measure(checkpoint: Path, root: Path) -> pd.DataFrame:
    """One row per true report-split tumor: organ, location, diameter (mm), the network's highest probability
    inside the case's lesion mask of that organ (the tumor itself for the pancreas, at most one per case; all the
    organ's tumors for kidney and liver), and the pseudo-label precision of the network and of darkness."""
    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload, use_ema=True).eval()
    names, patch = payload["class_names"], tuple(payload["patch_size"])
    truth = pd.read_csv(root / "data" / "gold" / "tumors_truth.csv")
    rows = []
    for case, tumors in truth[truth["split"] == "reports"].groupby("BDMAP ID"):
        cached = load_cached_case(root / "cache", case)
        image = torch.from_numpy(np.array(cached.image, dtype=np.float32))[None, None]  # a copy: the cache is read-only
        with torch.no_grad():
            logits = sliding_window_inference(image, patch, 4, infer_logits_fn(model), overlap=0.5, mode="gaussian")
        prob = torch.sigmoid(logits)[0]
        for _, tumor in tumors.iterrows():
            lesion = _mask(root, case, tumor["lesion class"])
            region = np.zeros(lesion.shape, bool)
            for name in tumor["sub-segment classes"].split(" / "):
                region |= _mask(root, case, name)
            diameters = [float(v) for v in tumor["diameters (mm)"].split(" x ")]
            dark = torch.from_numpy(darkness_score(cached.image, region))
            channel = prob[names.index(tumor["lesion class"])]
            rows.append({
                "case": case, "organ": tumor["organ"], "location": tumor["location"], "diameter_mm": diameters[0],
                "max_p_in_lesion_mask": float(channel[torch.from_numpy(lesion)].max()),
                "network": _precision(channel, region, lesion, diameters, cached.spacing_mm),
                "darkest_ball": _precision(dark, region, lesion, diameters, cached.spacing_mm),
            })
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("demo_dir", type=Path, help="a `rsuper demo --out` folder (data/, cache/)")
    parser.add_argument("--per-tumor", action="store_true", help="also print one row per tumor")
    args = parser.parse_args()
    table = measure(args.checkpoint, args.demo_dir)
    if args.per_tumor:
        print(table.round(3).to_string())
    summary = table.groupby("organ")[["network", "darkest_ball"]].agg(["mean", "count"]).round(3)
    print(f"Ball Loss pseudo-label precision of {args.checkpoint} on {args.demo_dir} report CTs")
    print(summary.to_string())


if __name__ == "__main__":
    main()
