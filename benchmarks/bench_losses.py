"""Cost of the report losses (Ball + Volume Loss, forward + backward) against one DynUNet training step.

Setting (issue 5 / docs/method.md §6): patch 128^3 at 1 mm, batch 2, both samples with a region and one
reported tumor of 10, 25 or 40 mm; a MONAI DynUNet in an nnU-Net-like 6-level configuration with
deep supervision. Also times the ball sum of the centre search alone (FFT vs direct conv3d).

Run:  .venv/bin/python benchmarks/bench_losses.py --threads 2 --out benchmarks/results_losses.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.networks.nets import DynUNet

from rsuper.atomic import write_text_atomic
from rsuper.losses import ellipsoid_kernel, fft_ball_sum, known_mask, report_region
from rsuper.losses.ball import ball_loss_in_region
from rsuper.losses.volume import volume_loss_in_region

SPACING = (1.0, 1.0, 1.0)
SIZE = 128
BATCH = 2
CLASSES = 4  # e.g. organ, two sub-segments, lesion
LESION = 3


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time (s) of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_batch(diameter_mm: float, device: torch.device) -> dict[str, torch.Tensor]:
    """Region: an ellipsoidal sub-segment (semi-axes 40, 30, 30 mm) in the lesion channel; one tumor blob."""
    axes = [torch.arange(SIZE, device=device, dtype=torch.float32) + 0.5] * 3
    gx, gy, gz = torch.meshgrid(*axes, indexing="ij")
    centre = SIZE / 2
    segment = ((gx - centre) / 40) ** 2 + ((gy - centre) / 30) ** 2 + ((gz - centre) / 30) ** 2 <= 1
    region = torch.zeros(BATCH, CLASSES, SIZE, SIZE, SIZE, device=device)
    region[:, LESION] = segment.float()
    r2 = (gx - centre - 10) ** 2 + (gy - centre + 5) ** 2 + (gz - centre) ** 2
    logits = torch.randn(BATCH, CLASSES, SIZE, SIZE, SIZE, device=device) - 3.0
    logits[:, LESION] += 6.0 * (r2 <= (diameter_mm / 2) ** 2).float()
    volume = math.pi * diameter_mm**3 / 6
    return {
        "logits": logits,
        "region": region,
        "unknown": region.clone(),
        "volumes": torch.full((BATCH, 1), volume, device=device),
        "diameters": torch.full((BATCH, 1), diameter_mm, device=device),
    }


def report_losses_step(batch: dict[str, torch.Tensor]) -> None:
    """What ReportSupervisedLoss adds to the segmentation loss: R, Ball(final) + Vol(aux), backward.
    The known mask (shared with the segmentation loss in training) is counted here too."""
    final = batch["logits"].clone().requires_grad_(True)
    aux = batch["logits"].clone().requires_grad_(True)
    region = report_region(batch["region"], SPACING)
    known = known_mask(batch["unknown"], SPACING)
    ball = ball_loss_in_region(final, region, known, batch["diameters"], batch["volumes"], SPACING)
    vol = volume_loss_in_region(aux, region, batch["volumes"], SPACING)
    (ball + vol).backward()


def dynunet(device: torch.device) -> DynUNet:
    return DynUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=CLASSES,
        kernel_size=[3] * 6,
        strides=[1, 2, 2, 2, 2, 2],
        upsample_kernel_size=[2] * 5,
        filters=[32, 64, 128, 256, 320, 320],
        norm_name="instance",
        deep_supervision=True,
        deep_supr_num=1,
    ).to(device)


def network_step(net: DynUNet, image: torch.Tensor, target: torch.Tensor) -> None:
    net.zero_grad(set_to_none=True)
    out = net(image)  # (B, 1 + deep_supr_num, C, X, Y, Z) in training mode
    loss = sum(F.binary_cross_entropy_with_logits(out[:, i], target) for i in range(out.shape[1]))
    loss.backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--net-repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--direct-conv", action="store_true", help="also time direct conv3d with the 49^3 kernel")
    parser.add_argument("--out", default=None, help="write the markdown table here (printed otherwise)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    net = dynunet(device)
    image = torch.randn(BATCH, 1, SIZE, SIZE, SIZE, device=device)
    target = (torch.rand(BATCH, CLASSES, SIZE, SIZE, SIZE, device=device) > 0.9).float()
    net_s = timed(lambda: network_step(net, image, target), args.net_repeats, device)

    rows = []
    for diameter in (10.0, 25.0, 40.0):
        batch = make_batch(diameter, device)
        loss_s = timed(lambda b=batch: report_losses_step(b), args.repeats, device)
        rows.append(f"| {diameter:.0f} | {loss_s * 1000:.0f} | {net_s * 1000:.0f} | {100 * loss_s / net_s:.1f} % |")

    field = torch.rand(1, SIZE, SIZE, SIZE, device=device)
    kernel = ellipsoid_kernel(48.0, SPACING, device)  # the enlarged ball of a 40 mm tumor: 49^3 voxels
    fft_s = timed(lambda: fft_ball_sum(field, kernel), args.repeats, device)
    conv_line = ""
    if args.direct_conv:
        weight = kernel.float()[None, None]
        direct_s = timed(lambda: F.conv3d(field[None], weight, padding=24), 1, device)
        conv_line = f"; direct `conv3d`: {direct_s * 1000:.0f} ms"

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    lines = [
        "# rsuper.losses benchmark",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"Conditions: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, device {device}, "
        f"load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (shared machine).",
        "",
        f"Patch {SIZE}^3 at 1 mm, batch {BATCH}, {CLASSES} channels, both samples with a region (ellipsoid "
        "80 x 60 x 60 mm) and one tumor. Report losses = Ball Loss (final output) + Volume Loss "
        "(deep-supervision output), forward + backward, pseudo-labels, region and unknown dilations included, median of "
        f"{args.repeats}. Network = MONAI DynUNet (6 levels, filters 32-320, instance norm, deep supervision), "
        f"forward + backward of a BCE on both heads, median of {args.net_repeats}.",
        "",
        "| tumor diameter (mm) | report losses (ms) | DynUNet step (ms) | ratio |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Centre-search ball sum alone, 128^3 field, 49^3 kernel (48 mm ball): FFT {fft_s * 1000:.1f} ms{conv_line}.",
        "",
    ]
    text = "\n".join(lines)
    if args.out:
        write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
