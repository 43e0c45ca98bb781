"""The report region of a batch: which samples have one, its lesion channel, and R = dilate(region, 15 mm).

R never reaches into another tumor-bearing group: voxels of the region's lesion channel that are unknown
because of another group (another sub-segment with a tumor of unknown size, say) are taken out of R, so
neither the Ball Loss's background nor the Volume Loss's count ever touches them (docs/method.md, Losses).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rsuper.losses.geometry import Spacing, dilate_mm
from rsuper.losses.segmentation import UNKNOWN_DILATION_MM

REGION_DILATION_MM = 15.0


@dataclass(frozen=True)
class ReportRegion:
    """Per-sample region facts, all without gradient.

    Attributes:
        has_region: (B,) bool, True where the sample's ``region`` is non-zero.
        channel: (B,) long, the lesion channel g holding the region (0 where there is none).
        dilated: (B, X, Y, Z) float {0, 1}, R = dilate(region, dilation) in channel g, less the voxels unknown
            because of another group (zeros without region).
    """

    has_region: torch.Tensor
    channel: torch.Tensor
    dilated: torch.Tensor


@torch.no_grad()
def report_region(
    region: torch.Tensor,
    spacing_mm: Spacing,
    *,
    dilation_mm: float = REGION_DILATION_MM,
    unknown: torch.Tensor | None = None,
    unknown_dilation_mm: float = UNKNOWN_DILATION_MM,
) -> ReportRegion:
    """Find each sample's region channel and dilate its region by ``dilation_mm`` (mm).

    Args:
        region: (B, C, X, Y, Z), non-zero only in the lesion channel of the chosen group; all zero means
            the sample has no region. A region spread over several channels is an error.
        unknown: (B, C, X, Y, Z) or None. Where given, the voxels of the region's channel that are unknown
            outside the region itself (another group), dilated by ``unknown_dilation_mm`` like the known
            mask, are removed from R; the region's own voxels always stay.
    """
    if region.dim() != 5:
        raise ValueError(f"region must be (B, C, X, Y, Z), got shape {tuple(region.shape)}")
    occupied = (region > 0.5).flatten(2).any(dim=2)  # (B, C)
    if bool((occupied.sum(dim=1) > 1).any()):
        raise ValueError("region must be non-zero in at most one channel per sample (the chosen group's lesion channel)")
    has_region = occupied.any(dim=1)
    channel = occupied.float().argmax(dim=1)
    picked = region[torch.arange(region.shape[0], device=region.device), channel]
    dilated = dilate_mm(picked, dilation_mm, spacing_mm) & has_region.view(-1, 1, 1, 1)
    if unknown is not None:
        inside = picked > 0.5
        other = (select_channel(unknown, channel) > 0.5) & ~inside
        dilated &= ~(dilate_mm(other, unknown_dilation_mm, spacing_mm) & ~inside)
    return ReportRegion(has_region=has_region, channel=channel, dilated=dilated.float())


def select_channel(tensor: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
    """(B, C, X, Y, Z) -> (B, X, Y, Z): channel ``channel[b]`` of each sample (keeps the gradient)."""
    return tensor[torch.arange(tensor.shape[0], device=tensor.device), channel]
