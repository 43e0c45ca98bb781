"""Ball Loss (docs/method.md §5): pseudo-tumors from the current prediction, then BCE (+ rank weights) + Dice.

Pseudo-labels (constants, recomputed every step under ``torch.no_grad``), per sample with a region:

1. q = sigmoid(z_g) * R, R = dilate(region, 15 mm).
2. For each reported tumor, largest volume first (D = its largest diameter in mm, N = its volume in voxels,
   ``round(V / v)``, at least 1):
   a. c = argmax of q summed over a ball of diameter D (exact FFT ball sum, ellipsoid in voxels);
   b. B = ball of diameter (1 + m) D at c, clipped to the patch;
   c. candidates = voxels of B inside R not taken by an earlier tumor; N' = min(N, |candidates|)
      (``volume_mode="rsuper_code"``: N' = min(max(N, |ball(D)| - 1), |candidates|));
      P_t = the ``round((1 - m) N')`` candidates of largest q (at least 1),
      E_t = the ``min(round((1 + m) N'), |candidates|)`` candidates of largest q (so P_t is inside E_t);
      ties of q (e.g. zeros) are broken toward the ball centre;
   d. E_t is removed from q and from the candidates of later tumors (tumors never share voxels).
3. P = union of P_t, Bg = dilate(union of E_t, 3.5 mm), border = Bg minus P (ignored).
4. Supervised voxels Pi = (P | known_g | R) minus border; known_g = 1 - dilate(unknown_g, 2.5 mm).
   Loss = BCE toward 1 on P (optionally rank weighted) and toward 0 on Pi minus Bg, averaged over those
   voxels, + soft Dice between sigmoid(z_g) and P over Pi.

Positives are restricted to R (docs/method.md: every reported tumor of the group lies inside it), which
guarantees that unknown voxels outside R are never supervised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rsuper.losses.geometry import (
    Spacing,
    ball_voxel_count,
    bounding_box,
    check_spacing,
    dilate_mm,
    ellipsoid_kernel,
    fft_ball_sum,
    voxel_volume_mm3,
)
from rsuper.losses.region import REGION_DILATION_MM, ReportRegion, report_region, select_channel
from rsuper.losses.segmentation import DICE_SMOOTH, UNKNOWN_DILATION_MM, check_same_shape, known_mask

VolumeMode = Literal["report", "rsuper_code"]
BORDER_DILATION_MM = 3.5
_TIE_BREAK = 1e-6  # q - _TIE_BREAK * (normalised squared distance to the centre)


@dataclass(frozen=True)
class BallPseudoLabels:
    """Ball Loss pseudo-labels of a batch (no gradient).

    Attributes:
        positive: (B, X, Y, Z) bool, P (pseudo-tumor voxels).
        extended: (B, X, Y, Z) bool, union of the extended sets E_t (P is inside it).
        background_zone: (B, X, Y, Z) bool, Bg = dilate(extended, 3.5 mm); Bg minus P is ignored.
        centres_vox: per sample, the centre voxel index (x, y, z) of each tumor in processing order
            (largest reported volume first); empty for samples without a region.
    """

    positive: torch.Tensor
    extended: torch.Tensor
    background_zone: torch.Tensor
    centres_vox: list[list[tuple[int, int, int]]]


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _normalised_distance2(diameter_mm: float, spacing_mm: Spacing, device: torch.device) -> torch.Tensor:
    """(squared distance to the centre) / (d/2)^2 on the grid of :func:`ellipsoid_kernel` (<= 1 inside)."""
    radius = max(diameter_mm / 2.0, 1e-6)
    half = [int(diameter_mm / 2.0 / s + 1e-9) for s in spacing_mm]
    axes = [torch.arange(-h, h + 1, device=device, dtype=torch.float32) * s for h, s in zip(half, spacing_mm)]
    gx, gy, gz = torch.meshgrid(*axes, indexing="ij")
    return (gx**2 + gy**2 + gz**2) / radius**2


def _tumor_order(volumes_mm3: torch.Tensor, diameters_mm: torch.Tensor) -> list[tuple[float, float]]:
    """(volume mm^3, diameter mm) of one sample's tumors, largest volume first; a missing diameter becomes the
    diameter of the sphere of that volume."""
    tumors = []
    for volume, diameter in zip(volumes_mm3.tolist(), diameters_mm.tolist()):
        if volume > 0:
            if diameter <= 0:
                diameter = (6.0 * volume / math.pi) ** (1.0 / 3.0)
            tumors.append((float(volume), float(diameter)))
    return sorted(tumors, key=lambda t: -t[0])


@torch.no_grad()
def ball_pseudo_labels(
    prob: torch.Tensor,
    region_dilated: torch.Tensor,
    diameters_mm: torch.Tensor,
    volumes_mm3: torch.Tensor,
    spacing_mm: Spacing,
    *,
    margin: float = 0.2,
    volume_mode: VolumeMode = "report",
    border_dilation_mm: float = BORDER_DILATION_MM,
) -> BallPseudoLabels:
    """Build the Ball Loss pseudo-labels (steps 1-3 of the module docstring).

    Args:
        prob: (B, X, Y, Z) tumor probability of each sample's region channel.
        region_dilated: (B, X, Y, Z) R = dilate(region, 15 mm), zeros for samples without a region.
        diameters_mm: (B, T) largest diameter of each reported tumor, padded with 0.
        volumes_mm3: (B, T) reported volume of each tumor, padded with 0 (0 = no tumor).
        spacing_mm: voxel spacing in mm, array axis order.
        margin: m, relative margin of the enlarged ball and of the positive / extended sets.
        volume_mode: ``"report"`` (N = reported volume) or ``"rsuper_code"`` (N = max(N, |ball(D)| - 1)).
        border_dilation_mm: dilation of the extended set that defines Bg, mm.
    """
    if volume_mode not in ("report", "rsuper_code"):
        raise ValueError(f"volume_mode must be 'report' or 'rsuper_code', got {volume_mode!r}")
    spacing = check_spacing(spacing_mm)
    voxel_mm3 = voxel_volume_mm3(spacing)
    batch, *spatial = prob.shape
    positive = torch.zeros(prob.shape, dtype=torch.bool, device=prob.device)
    extended = torch.zeros_like(positive)
    centres: list[list[tuple[int, int, int]]] = [[] for _ in range(batch)]
    inside = region_dilated > 0.5
    for b in range(batch):
        box = bounding_box(inside[b])
        tumors = _tumor_order(volumes_mm3[b], diameters_mm[b])
        if box is None or not tumors:
            continue
        q = prob[b].float() * inside[b]
        available = inside[b].clone()
        for volume, diameter in tumors:
            ball = ellipsoid_kernel(diameter, spacing, q.device)
            ball_sum = fft_ball_sum(q[box].unsqueeze(0), ball)[0]
            local = torch.unravel_index(torch.argmax(ball_sum), ball_sum.shape)
            centre = tuple(int(i) + s.start for i, s in zip(local, box))
            centres[b].append(centre)  # type: ignore[arg-type]

            big_diameter = (1.0 + margin) * diameter
            big_ball = ellipsoid_kernel(big_diameter, spacing, q.device)
            half = [k // 2 for k in big_ball.shape]
            lo = [max(c - h, 0) for c, h in zip(centre, half)]
            hi = [min(c + h + 1, n) for c, h, n in zip(centre, half, spatial)]
            window = tuple(slice(a, z) for a, z in zip(lo, hi))
            clip = tuple(slice(a - c + h, z - c + h) for a, z, c, h in zip(lo, hi, centre, half))
            d2 = _normalised_distance2(big_diameter, spacing, q.device)[clip]
            candidates = big_ball[clip] & available[window]
            n_candidates = int(candidates.sum())
            if n_candidates == 0:
                continue
            n_voxels = max(1, _round_half_up(volume / voxel_mm3))
            if volume_mode == "rsuper_code":
                n_voxels = max(n_voxels, ball_voxel_count(diameter, spacing) - 1)
            n_prime = min(n_voxels, n_candidates)
            n_pos = max(1, _round_half_up((1.0 - margin) * n_prime))
            n_ext = min(max(n_pos, _round_half_up((1.0 + margin) * n_prime)), n_candidates)

            key = torch.where(candidates, q[window] - _TIE_BREAK * d2, torch.full_like(d2, -math.inf))
            order = torch.topk(key.flatten(), n_ext).indices
            ext_local = torch.zeros(key.numel(), dtype=torch.bool, device=q.device)
            ext_local[order] = True
            pos_local = torch.zeros_like(ext_local)
            pos_local[order[:n_pos]] = True
            ext_local = ext_local.view(key.shape)
            extended[b][window] |= ext_local
            positive[b][window] |= pos_local.view(key.shape)
            available[window] &= ~ext_local
            q[window] = q[window].masked_fill(ext_local, 0.0)
    background_zone = dilate_mm(extended, border_dilation_mm, spacing)
    return BallPseudoLabels(positive=positive, extended=extended, background_zone=background_zone, centres_vox=centres)


@torch.no_grad()
def rank_weights(prob: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Weights 0.5^(rank / |P|) on each sample's positives, ranked by decreasing ``prob`` and normalised to
    mean 1 over the positives; 1 elsewhere. Shapes (B, X, Y, Z)."""
    weights = torch.ones_like(prob, dtype=torch.float32)
    flat_w = weights.view(prob.shape[0], -1)
    for b in range(prob.shape[0]):
        index = torch.nonzero(positive[b].flatten()).flatten()
        if index.numel() == 0:
            continue
        order = torch.argsort(prob[b].flatten()[index].float(), descending=True)
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(order.numel(), device=prob.device)
        w = 0.5 ** (ranks.float() / index.numel())
        flat_w[b, index] = w / w.mean()
    return weights


def ball_loss_in_region(
    logits: torch.Tensor,
    region: ReportRegion,
    known: torch.Tensor,
    diameters_mm: torch.Tensor,
    volumes_mm3: torch.Tensor,
    spacing_mm: Spacing,
    *,
    margin: float = 0.2,
    volume_mode: VolumeMode = "report",
    rank_weighted: bool = False,
    border_dilation_mm: float = BORDER_DILATION_MM,
    lesion_channels: Sequence[int] | None = None,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ball Loss for a precomputed :class:`ReportRegion` and known mask ``known`` (B, C, X, Y, Z).

    Per sample with a region: mean BCE over P and Pi minus Bg, + Dice over Pi (when P is non-empty).
    Per sample without a region, only when ``lesion_channels`` is given: mean BCE toward 0 over the known
    voxels of those channels (excluding ``target`` positives when ``target`` is given).
    Returns the mean over the contributing samples (0, attached to the graph, when none contributes).
    """
    z_all = logits.float()
    z = select_channel(z_all, region.channel)
    p = torch.sigmoid(z)
    labels = ball_pseudo_labels(
        p.detach(), region.dilated, diameters_mm, volumes_mm3, spacing_mm, margin=margin, volume_mode=volume_mode,
        border_dilation_mm=border_dilation_mm,
    )
    pos = labels.positive
    supervised = pos | (select_channel(known, region.channel) > 0.5) | (region.dilated > 0.5)
    supervised = supervised & ~(labels.background_zone & ~pos)
    negative = (supervised & ~labels.background_zone).float()
    weights = rank_weights(p.detach(), pos) if rank_weighted else torch.ones_like(p)
    posf = pos.float()
    bce_sum = (weights * F.softplus(-z) * posf + F.softplus(z) * negative).flatten(1).sum(dim=1)
    count = (posf + negative).flatten(1).sum(dim=1)
    sup = supervised.float()
    inter = (p * posf * sup).flatten(1).sum(dim=1)
    denom = (p * sup).flatten(1).sum(dim=1) + posf.flatten(1).sum(dim=1)
    dice = 1.0 - (2.0 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH)
    has_pos = posf.flatten(1).sum(dim=1) > 0
    per_sample = bce_sum / count.clamp(min=1.0) + torch.where(has_pos, dice, torch.zeros_like(dice))
    contributes = region.has_region & (count > 0)

    if lesion_channels:
        channels = list(lesion_channels)
        background = known[:, channels] > 0.5
        if target is not None:
            background &= target[:, channels] <= 0.5
        background &= ~region.has_region.view(-1, 1, 1, 1, 1)
        bg = background.float()
        bg_count = bg.flatten(1).sum(dim=1)
        bg_loss = (F.softplus(z_all[:, channels]) * bg).flatten(1).sum(dim=1) / bg_count.clamp(min=1.0)
        per_sample = torch.where(region.has_region, per_sample, bg_loss)
        contributes = contributes | (bg_count > 0)

    if not bool(contributes.any()):
        return z_all.sum() * 0.0
    return per_sample[contributes].mean()


def ball_loss(
    logits: torch.Tensor,
    region: torch.Tensor,
    unknown: torch.Tensor,
    diameters_mm: torch.Tensor,
    volumes_mm3: torch.Tensor,
    spacing_mm: Spacing,
    *,
    margin: float = 0.2,
    volume_mode: VolumeMode = "report",
    rank_weighted: bool = False,
    lesion_channels: Sequence[int] | None = None,
    target: torch.Tensor | None = None,
    region_dilation_mm: float = REGION_DILATION_MM,
    unknown_dilation_mm: float = UNKNOWN_DILATION_MM,
    border_dilation_mm: float = BORDER_DILATION_MM,
) -> torch.Tensor:
    """Ball Loss of docs/method.md §5 (see the module docstring for the pseudo-label steps).

    Args:
        logits: (B, C, X, Y, Z) raw scores (float32 or bfloat16; computed in float32).
        region: (B, C, X, Y, Z), the chosen group in its lesion channel g; all zero = no region.
        unknown: (B, C, X, Y, Z), 1 where a channel's truth is not known.
        diameters_mm: (B, T) largest diameter of each reported tumor of the group, padded with 0.
        volumes_mm3: (B, T) reported volumes, padded with 0 (0 = no tumor).
        spacing_mm: voxel spacing in mm, array axis order.
        margin: m (0.2).
        volume_mode: ``"report"`` (default) or ``"rsuper_code"`` (see :func:`ball_pseudo_labels`).
        rank_weighted: weight the positives by 0.5^(rank / |P|) (normalised to mean 1).
        lesion_channels: lesion channels that get a background BCE on known voxels in samples without
            a region; ``None``: samples without a region contribute nothing.
        target: optional (B, C, X, Y, Z) labels; their positives are excluded from that background BCE.
        region_dilation_mm, unknown_dilation_mm, border_dilation_mm: the dilation radii, mm.

    Returns:
        Scalar: mean over the contributing samples of (mean BCE over the supervised voxels + Dice).
    """
    check_same_shape(logits, region=region, unknown=unknown)
    if target is not None:
        check_same_shape(logits, target=target)
    if diameters_mm.shape != volumes_mm3.shape or diameters_mm.dim() != 2 or diameters_mm.shape[0] != logits.shape[0]:
        raise ValueError(
            f"diameters_mm and volumes_mm3 must both be (B, T) with B = {logits.shape[0]}, "
            f"got {tuple(diameters_mm.shape)} and {tuple(volumes_mm3.shape)}"
        )
    check_spacing(spacing_mm)
    return ball_loss_in_region(
        logits,
        report_region(region, spacing_mm, dilation_mm=region_dilation_mm, unknown=unknown,
                      unknown_dilation_mm=unknown_dilation_mm),
        known_mask(unknown, spacing_mm, unknown_dilation_mm),
        diameters_mm,
        volumes_mm3,
        spacing_mm,
        margin=margin,
        volume_mode=volume_mode,
        rank_weighted=rank_weighted,
        border_dilation_mm=border_dilation_mm,
        lesion_channels=lesion_channels,
        target=target,
    )


class BallLoss(nn.Module):
    """Module form of :func:`ball_loss`: ``loss_fn(logits, region, unknown, diameters_mm, volumes_mm3)``.

    Shapes: logits, region, unknown (B, C, X, Y, Z); diameters_mm, volumes_mm3 (B, T).
    Reduction: mean over the contributing samples.
    """

    def __init__(
        self,
        spacing_mm: Spacing,
        *,
        margin: float = 0.2,
        volume_mode: VolumeMode = "report",
        rank_weighted: bool = False,
        lesion_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.spacing_mm = check_spacing(spacing_mm)
        self.margin = margin
        self.volume_mode = volume_mode
        self.rank_weighted = rank_weighted
        self.lesion_channels = lesion_channels

    def forward(
        self,
        logits: torch.Tensor,
        region: torch.Tensor,
        unknown: torch.Tensor,
        diameters_mm: torch.Tensor,
        volumes_mm3: torch.Tensor,
        target: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return ball_loss(
            logits,
            region,
            unknown,
            diameters_mm,
            volumes_mm3,
            self.spacing_mm,
            margin=self.margin,
            volume_mode=self.volume_mode,
            rank_weighted=self.rank_weighted,
            lesion_channels=self.lesion_channels,
            target=target,
        )
