"""Absence Loss (rsuper, beyond R-Super): "the report says there is no tumor here" as a detection-sized push.

A report sample's lesion channels are known negatives outside the tumor-bearing sub-segments (METHOD.md §4),
and the segmentation loss already pushes them toward 0, but as a mean over every known voxel of every
channel: a false-positive blob of a few hundred voxels in a healthy organ costs almost nothing (about 1e-6 of
the loss per voxel on a 48³ patch), while it is exactly what makes a CT-level call wrong. The Absence Loss
takes, per report sample and lesion channel, the ``k`` known-negative voxels of highest logit, k = the voxels
of ``volume_mm3`` (a detectable tumor: the evaluation's CT-level volume threshold), and applies BCE toward 0
to them: the largest false-positive "tumor" of a tumor-free area is pushed down as hard as a ball of the Ball
Loss is pushed up.

Supervised voxels of sample b, lesion channel c: ``known[b, c]`` minus the dilated report region
(``region_dilated``, the Ball Loss' R, which supervises its own background) in the region's channel. Mask
samples (``is_report`` False) get nothing: their lesion labels are exact and already in the segmentation loss,
so the loss is a report loss only (a masks-only run is unchanged by it).

Only voxels that would still be called tumor are pushed: a top-k voxel whose probability is already below
``min_prob`` (default 0.5, the inference threshold) contributes 0. Without that stop (``min_prob=0``) the
term keeps lowering the most tumor-like tissue of every healthy organ long after nothing is called there, and
on the demo it took a lesion channel down with it (BENCHMARKS.md, demo section: seed 5 found no kidney tumor).

Reduction: per (sample, lesion channel) pair, the sum of softplus(z) over its top-k voxels with
sigmoid(z) >= ``min_prob``, divided by the number of top-k voxels (fewer than k when a channel has fewer
supervised voxels); mean over the pairs with at least one supervised voxel; 0 (attached to the graph) when
there is none.

Example:
    >>> loss = absence_loss(logits, known, region_dilated, channel, is_report, [2, 5], (4, 4, 4), 300.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from rsuper.losses.geometry import Spacing, voxel_volume_mm3

ABSENCE_VOLUME_MM3 = 300.0
ABSENCE_MIN_PROB = 0.5


def absence_voxel_count(volume_mm3: float, spacing_mm: Spacing) -> int:
    """k: voxels of a ``volume_mm3`` tumor at ``spacing_mm`` (at least 1)."""
    if volume_mm3 <= 0:
        raise ValueError(f"absence volume must be > 0 mm³, got {volume_mm3}")
    return max(1, math.ceil(volume_mm3 / voxel_volume_mm3(spacing_mm)))


def absence_loss(
    logits: torch.Tensor,
    known: torch.Tensor,
    region_dilated: torch.Tensor,
    region_channel: torch.Tensor,
    is_report: torch.Tensor,
    lesion_channels: Sequence[int],
    spacing_mm: Spacing,
    volume_mm3: float = ABSENCE_VOLUME_MM3,
    min_prob: float = ABSENCE_MIN_PROB,
) -> torch.Tensor:
    """Mean BCE toward 0 of the k most tumor-like known-negative voxels per report sample and lesion channel.

    Args:
        logits: (B, C, X, Y, Z) raw scores (computed in float32).
        known: (B, C, X, Y, Z) float {0, 1}, the segmentation loss' known voxels.
        region_dilated: (B, X, Y, Z) float {0, 1}, R of each sample's region (zeros without one).
        region_channel: (B,) long, the lesion channel holding the region (ignored where R is empty).
        is_report: (B,) bool, True for report samples.
        lesion_channels: the lesion channel indices.
        spacing_mm: voxel spacing in mm, array axis order.
        volume_mm3: size of the pushed-down blob, mm³ (k = ceil(volume / voxel volume)).
        min_prob: top-k voxels below this probability are left alone (0: always pushed).

    Returns:
        Scalar float32 tensor (see the module docstring for the reduction).
    """
    z_all = logits.float()
    if not 0.0 <= min_prob < 1.0:
        raise ValueError(f"absence min_prob must be in [0, 1), got {min_prob}")
    if not lesion_channels or not bool(is_report.any()):
        return z_all.sum() * 0.0
    k = absence_voxel_count(volume_mm3, spacing_mm)
    channels = torch.as_tensor(list(lesion_channels), device=logits.device)
    z = z_all[is_report][:, channels].flatten(2)  # (R, L, N)
    supervised = known[is_report][:, channels].flatten(2) > 0.5
    in_region = channels.view(1, -1) == region_channel[is_report].view(-1, 1)  # (R, L)
    region = region_dilated[is_report].flatten(1).unsqueeze(1) > 0.5  # (R, 1, N)
    supervised &= ~(region & in_region.unsqueeze(2))
    masked = z.masked_fill(~supervised, float("-inf"))
    top = masked.topk(min(k, masked.shape[2]), dim=2).values  # (R, L, k), -inf where fewer are supervised
    taken = torch.isfinite(top)
    contributes = taken[:, :, 0]  # the pair has at least one supervised voxel
    min_logit = math.log(min_prob / (1.0 - min_prob)) if min_prob > 0 else -math.inf
    pushed = taken & (top >= min_logit)
    per_pair = (F.softplus(top.masked_fill(~taken, 0.0)) * pushed).sum(dim=2) / taken.sum(dim=2).clamp(min=1)
    if not bool(contributes.any()):
        return z_all.sum() * 0.0
    return per_pair[contributes].mean()
