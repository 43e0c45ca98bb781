"""Does a checkpoint find tumors in both organs of a left/right pair, and in the mirrored CT?

A network trained on few masks can tie a lesion channel to one side: it finds kidney tumors in the left
kidney only and never in the right one, even with the left-right mirror augmentation (measured on the demo,
BENCHMARKS.md session 14). This predicts every CT of a dataset with lesion masks (AbdomenAtlas layout:
``<case>/ct.nii.gz`` and ``<case>/segmentations/<class>.nii.gz``) twice: as it is and mirrored left-right
(the lesion prediction flipped back onto the CT), and prints per organ side: organs with a true
tumor and how many of them get a predicted tumor (as is / mirrored), tumor-free organs and how many are called
tumor. A side-free network gives the same counts both ways; a side-tied one finds on the mirrored CT the
tumors of the other side.

"Called" = at least ``--volume`` mm³ of the lesion channel (probability >= 0.5, gated by nothing) inside the
true organ dilated by 2 voxels of the model grid.

Example:
    python benchmarks/bench_mirror.py demo_out/runs/R-Super/final.pt demo_out/data/test --organ kidney
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from bench_demo import markdown  # this folder is on sys.path when the script runs
from rsuper import labels
from rsuper.infer.predict import PredictOptions, Predictor, find_ct_inputs, predict_probabilities
from rsuper.io import load_nifti, normalize_ct, resample_to_grid, resample_to_spacing, to_canonical


def side_calls(predictor: Predictor, ct_path: Path, organ: str, volume_mm3: float) -> list[dict]:
    """One row per side of ``organ`` in one CT: true tumor?, called as is?, called mirrored?"""
    seg = ct_path.parent / "segmentations"
    work = resample_to_spacing(to_canonical(load_nifti(ct_path)), predictor.spacing_mm, order=1)
    image = normalize_ct(work.array)
    lesion = predictor.class_names.index(labels.lesion_class(organ))
    one_pass = PredictOptions(tta="none")  # each orientation on its own
    as_is = predict_probabilities(predictor, image, one_pass)[lesion]
    mirrored = predict_probabilities(predictor, np.ascontiguousarray(image[::-1]), one_pass)[lesion][::-1]
    voxel_mm3 = float(np.prod(predictor.spacing_mm))

    def on_grid(name: str) -> np.ndarray:
        mask = to_canonical(load_nifti(seg / f"{name}.nii.gz"))
        return resample_to_grid(mask, work.shape, work.affine, order=0).array > 0

    truth = on_grid(labels.lesion_class(organ))
    rows = []
    for side in labels.ORGAN_MASK_CLASSES[organ]:
        area = ndimage.binary_dilation(on_grid(side), iterations=2)
        rows.append({
            "side": side, "tumor": bool((truth & area).any()),
            "as is": float(((as_is >= 0.5) & area).sum()) * voxel_mm3 >= volume_mm3,
            "mirrored": float(((mirrored >= 0.5) & area).sum()) * voxel_mm3 >= volume_mm3,
        })
    return rows


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per side: tumor organs found as is / mirrored, tumor-free organs called as is / mirrored."""
    out = []
    for side, group in rows.groupby("side", sort=True):
        tumor, free = group[group["tumor"]], group[~group["tumor"]]
        out.append({"side": side, "organs with tumor": len(tumor), "found as is": int(tumor["as is"].sum()),
                    "found mirrored": int(tumor["mirrored"].sum()), "tumor-free organs": len(free),
                    "called as is": int(free["as is"].sum()), "called mirrored": int(free["mirrored"].sum())})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="rsuper checkpoint (final.pt)")
    parser.add_argument("dataset", type=Path, help="<case>/ct.nii.gz + <case>/segmentations/ with lesion masks")
    parser.add_argument("--organ", default="kidney", help="an organ made of a left/right pair (default kidney)")
    parser.add_argument("--volume", type=float, default=300.0, help="smallest called tumor volume, mm³")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="also write the per-organ rows as CSV here")
    args = parser.parse_args()
    if len(labels.ORGAN_MASK_CLASSES.get(args.organ, ())) != 2:
        parser.error(f"--organ {args.organ!r} is not a left/right pair of mask classes")
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device)
    rows = []
    for case_id, ct_path in find_ct_inputs(args.dataset):
        rows += [{"case": case_id, **row} for row in side_calls(predictor, ct_path, args.organ, args.volume)]
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    print(markdown(summarise(table)))


if __name__ == "__main__":
    main()
