"""Benchmark `rsuper predict` on one synthetic abdominal-sized CT: wall seconds and peak memory.

A body-shaped phantom CT (ellipsoid of soft tissue in air, HU noise) of --shape voxels at --spacing mm
is written as NIfTI, a randomly initialised network (--model, seeded) is saved as an rsuper checkpoint
with --classes output channels, and one `predict_case` call is timed end to end (load, resample,
sliding window, gating, resampling back, writing masks + findings.json). Random weights give about
half of the voxels above 0.5, so every class is really resampled and written (the worst case for the
writing stage). Peak memory: the process's max RSS (includes Python, torch and the model) and, on CUDA,
torch's peak allocated GPU memory.

Example:
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_predict.py --shape 300 300 200 --model dynunet
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from rsuper.infer.predict import PredictOptions, Predictor, predict_case
from rsuper.infer.tta import TTA_MODES
from rsuper.models.checkpoint import make_payload, save_checkpoint
from rsuper.models.registry import build_model

CLASSES = ["liver", "pancreas", "pancreas_head", "pancreas_body", "pancreas_tail", "kidney_left", "kidney_right",
           "spleen", "liver_lesion", "pancreatic_lesion", "kidney_lesion"]


def phantom_ct(shape: tuple[int, int, int], spacing: float, seed: int = 0) -> nib.Nifti1Image:
    """int16 HU volume: an ellipsoidal body (40 HU +- 20) in air (-1000 HU), RAS affine."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    r2 = sum(((g - n / 2) / (0.45 * n)) ** 2 for g, n in zip(grid, shape))
    rng = np.random.default_rng(seed)
    hu = np.where(r2 <= 1.0, 40, -1000).astype(np.int16) + rng.normal(0, 20, shape).astype(np.int16)
    return nib.Nifti1Image(hu, np.diag([spacing, spacing, spacing, 1.0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 300, 200))
    parser.add_argument("--spacing", type=float, default=1.0, help="CT and model spacing (mm)")
    parser.add_argument("--model", default="dynunet")
    parser.add_argument("--patch", type=int, nargs=3, default=(128, 128, 128))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sw-batch-size", type=int, default=1)
    parser.add_argument("--tta", choices=TTA_MODES, default="none")
    parser.add_argument("--check-against-cpu", action="store_true",
                        help="also predict on CPU and print the per-class Dice between the two mask sets")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        out = tmp / "out"
        nib.save(phantom_ct(tuple(args.shape), args.spacing), str(tmp / "ct.nii.gz"))
        torch.manual_seed(0)
        model = build_model(args.model, 1, len(CLASSES))
        save_checkpoint(tmp / "model.pt", make_payload(args.model, 1, CLASSES, (args.spacing,) * 3, args.patch,
                                                       model.state_dict()))
        del model
        predictor = Predictor.from_checkpoint(tmp / "model.pt", device=args.device)
        options = PredictOptions(sw_batch_size=args.sw_batch_size, tta=args.tta)
        if predictor.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        findings = predict_case(predictor, tmp / "ct.nii.gz", out / "bench", options)
        seconds = time.perf_counter() - start
        rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        gpu = (f", GPU peak allocated {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB "
               f"({torch.cuda.get_device_name()})" if predictor.device.type == "cuda" else "")
        print(f"| {args.model} | {'x'.join(map(str, args.shape))} @ {args.spacing} mm | patch "
              f"{'x'.join(map(str, args.patch))} | {args.device} | sw_batch {args.sw_batch_size} | tta {args.tta} "
              f"| {torch.get_num_threads()} threads | {seconds:.1f} s | peak RSS {rss_gib:.2f} GiB{gpu} | "
              f"{len(findings['classes'])} classes | {platform.processor() or platform.machine()} |")
        if args.check_against_cpu:
            cpu = Predictor.from_checkpoint(tmp / "model.pt", device="cpu")
            predict_case(cpu, tmp / "ct.nii.gz", out / "cpu", options)
            print("Dice device vs CPU masks:", {c: round(mask_dice(out / "bench", out / "cpu", c), 5) for c in CLASSES})


def mask_dice(dir_a: Path, dir_b: Path, name: str) -> float:
    """Dice of one class's masks in two prediction folders (1.0 when both are empty)."""
    a = np.asarray(nib.load(str(dir_a / "segmentations" / f"{name}.nii.gz")).dataobj) > 0
    b = np.asarray(nib.load(str(dir_b / "segmentations" / f"{name}.nii.gz")).dataobj) > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


if __name__ == "__main__":
    main()
