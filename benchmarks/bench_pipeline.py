"""Training data pipeline throughput vs the network's training speed (issue 7 bar).

Builds a synthetic prepared cache (docs/data.md) of CT-sized cases at 1 mm (default 256 x 256 x 192 voxels,
organ and sub-segment masks, tumors in the mask cases, report cases with tumors of known size), then
measures, per patch size:
  * pipeline: samples/s of ``TrainingDataset`` + ``MixedBatchSampler`` through a ``DataLoader`` with
    ``--workers`` workers, mask:report 1:1, augmentation on, batch 2 (memory-mapped cache);
  * network: full training steps/s (forward, ``ReportSupervisedLoss`` with lambda = 0.1, backward, AdamW)
    of ``--model`` on ``--device`` with real batches from the pipeline.
The pipeline keeps up when its samples/s >= the network's steps/s x batch size.

Run:  .venv/bin/python benchmarks/bench_pipeline.py --sizes 96 128 --workers 2 --model dynunet_small \
          --device cpu --out benchmarks/results_pipeline.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from rsuper.config import default_class_names
from rsuper.data.augment import PatchAugmentation
from rsuper.data.dataset import MixedBatchSampler, TrainingDataset, collect_training_cases
from rsuper.io import CT_NORMALISATION
from rsuper.losses.combine import ReportSupervisedLoss
from rsuper.models.registry import build_model
from rsuper.reports.schema import CaseFindings, Lesion

TARGETS = ["pancreas", "kidney", "liver"]


def _box(shape, lo, hi) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return mask


def make_cache(root: Path, shape: tuple[int, int, int], n_mask: int, n_report: int) -> dict[str, CaseFindings]:
    """Writes a synthetic 1 mm cache; returns the report cases' findings."""
    x, y, z = shape
    organs = {
        "liver": ((x // 10, y // 8, z // 2), (x // 2, y // 2, z - z // 8)),
        "pancreas_head": ((x // 5, y // 2, z // 3), (2 * x // 5, 5 * y // 8, z // 2)),
        "pancreas_body": ((2 * x // 5, y // 2, z // 3), (3 * x // 5, 5 * y // 8, z // 2)),
        "pancreas_tail": ((3 * x // 5, y // 2, z // 3), (4 * x // 5, 5 * y // 8, z // 2)),
        "kidney_right": ((x // 8, 5 * y // 8, z // 8), (x // 4, 7 * y // 8, z // 3)),
        "kidney_left": ((3 * x // 4, 5 * y // 8, z // 8), (7 * x // 8, 7 * y // 8, z // 3)),
        "spleen": ((3 * x // 4, y // 8, z // 2), (7 * x // 8, y // 3, 3 * z // 4)),
    }
    rng = np.random.default_rng(0)
    manifest_cases = {}
    findings = {}
    for i in range(n_mask + n_report):
        case_id = f"{'mask' if i < n_mask else 'report'}_{i:03d}"
        masks = {name: _box(shape, lo, hi) for name, (lo, hi) in organs.items()}
        masks["pancreas"] = masks["pancreas_head"] | masks["pancreas_body"] | masks["pancreas_tail"]
        if i < n_mask:
            c = np.array([x // 2, 9 * y // 16, 5 * z // 12])
            masks["pancreatic_lesion"] = _box(shape, c - 8, c + 8)
            masks["liver_lesion"] = _box(shape, (x // 4, y // 4, 2 * z // 3), (x // 4 + 20, y // 4 + 20, 2 * z // 3 + 20))
            masks["kidney_lesion"] = np.zeros(shape, np.uint8)
        else:
            findings[case_id] = CaseFindings(
                case_id=case_id,
                lesions=[
                    Lesion(organ="pancreas", location=["body", "tail"], size_mm=[25, 20]),
                    Lesion(organ="kidney", location=["left"], size_mm=[15]),
                    Lesion(organ="liver", location=["segment 7"], size_mm=[30]),
                ],
            )
        folder = root / case_id
        (folder / "masks").mkdir(parents=True)
        np.save(folder / "ct.npy", rng.normal(-0.3, 0.2, shape).astype(np.float32))
        for name, mask in masks.items():
            np.save(folder / "masks" / f"{name}.npy", mask)
        meta = {"case_id": case_id, "shape": list(shape), "affine": np.eye(4).tolist(), "spacing_mm": [1.0] * 3,
                "classes": sorted(masks)}
        (folder / "meta.json").write_text(json.dumps(meta))
        manifest_cases[case_id] = {"dir": case_id, "classes": sorted(masks), "shape": list(shape)}
    manifest = {"spacing_mm": [1.0] * 3, "orientation": "RAS", "normalisation": CT_NORMALISATION, "cases": manifest_cases}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return findings


def bench_pipeline(cache: Path, findings, size: int, workers: int, batches: int, batch_size: int = 2):
    classes = default_class_names(TARGETS)
    mask_cases, report_cases, _ = collect_training_cases(cache, findings, classes, TARGETS)
    dataset = TrainingDataset(mask_cases, report_cases, class_names=classes, patch_size=(size,) * 3,
                              spacing_mm=(1.0, 1.0, 1.0), target_organs=TARGETS,
                              augmentation=PatchAugmentation(classes))
    sampler = MixedBatchSampler(len(mask_cases), len(report_cases), batch_size, 0.5, steps=batches + 8, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=False,
                        prefetch_factor=2 if workers else None)
    it = iter(loader)
    warm = [next(it) for _ in range(8)]  # workers started, most cases opened
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - start
    # CPU seconds of one sample in this process (one thread), all cases already opened.
    keys = [k for step in range(batches) for k in sampler.batch_keys(step)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like a DataLoader worker
    for key in keys:
        dataset[key]
    cpu = time.process_time()
    for key in keys:
        dataset[key]
    cpu_per_sample = (time.process_time() - cpu) / len(keys)
    torch.set_num_threads(threads)
    return batches * batch_size / elapsed, cpu_per_sample, warm[-1]


def bench_network(batch, model_name: str, device: torch.device, steps: int, amp: str) -> float:
    classes = default_class_names(TARGETS)
    model = build_model(model_name, 1, len(classes)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    loss_fn = ReportSupervisedLoss(spacing_mm=(1.0, 1.0, 1.0), report_weight=0.1)
    data = {k: (v.to(device).float() if torch.is_tensor(v) else v) for k, v in batch.items()}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            final, aux = model(data["image"])
        loss = loss_fn(final.float(), aux.float(), data)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 128])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 192])
    parser.add_argument("--model", default="dynunet_small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument("--net-steps", type=int, default=3, help="0 skips the network")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    lines = [
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}",
        f"cache: 4 mask + 4 report cases of {tuple(args.shape)} voxels at 1 mm, memory-mapped; batch 2 (1 mask + 1 "
        f"report), augmentation on; network {args.model}, amp {args.amp}",
        "",
        f"| patch | pipeline samples/s ({args.workers} workers) | CPU s per sample (1 thread) | network steps/s "
        "| network samples/s | pipeline / network |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        findings = make_cache(Path(tmp), tuple(args.shape), 4, 4)
        for size in args.sizes:
            pipe, cpu, batch = bench_pipeline(Path(tmp), findings, size, args.workers, args.batches)
            net = bench_network(batch, args.model, device, args.net_steps, args.amp) if args.net_steps else float("nan")
            lines.append(f"| {size}^3 | {pipe:.2f} | {cpu:.3f} | {net:.3f} | {2 * net:.2f} | {pipe / (2 * net):.1f}x |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        with args.out.open("a", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
