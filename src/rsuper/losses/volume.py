"""Volume Loss (docs/method.md §5): the predicted tumor volume inside the dilated region must match the report."""

from __future__ import annotations

import torch
from torch import nn

from rsuper.losses.geometry import Spacing, check_spacing, voxel_volume_mm3
from rsuper.losses.region import REGION_DILATION_MM, ReportRegion, report_region, select_channel

VOLUME_E_MM3 = 500.0
SMALL_VOLUME_MM3 = 100.0


def relative_volume_error(a: torch.Tensor, y: torch.Tensor, e_mm3: float = VOLUME_E_MM3) -> torch.Tensor:
    """l(a, y) = |a - y| / (a + y + E), volumes in mm^3."""
    return (a - y).abs() / (a + y + e_mm3)


def volume_loss_from_mm3(
    predicted_mm3: torch.Tensor, reported_mm3: torch.Tensor, *, tolerance: float = 0.1, e_mm3: float = VOLUME_E_MM3
) -> torch.Tensor:
    """Per-sample Volume Loss from volumes in mm^3 (same shapes), zero inside the tolerance band.

    ``t = max((1 - tolerance) y, min(y, 100))``; ``L = clamp(l(x, y) - l(t, y), 0, 1)``.

    Example (docs/method.md §10): y = 1000, tolerance 0.2: x = 0 -> 0.5797, x = 5000 -> 0.5284.
    """
    y = reported_mm3.float()
    t = torch.maximum((1.0 - tolerance) * y, torch.clamp(y, max=SMALL_VOLUME_MM3))
    band = relative_volume_error(t, y, e_mm3)
    return torch.clamp(relative_volume_error(predicted_mm3.float(), y, e_mm3) - band, 0.0, 1.0)


def volume_loss_in_region(
    logits: torch.Tensor,
    region: ReportRegion,
    volumes_mm3: torch.Tensor,
    spacing_mm: Spacing,
    *,
    tolerance: float = 0.1,
    e_mm3: float = VOLUME_E_MM3,
) -> torch.Tensor:
    """Volume Loss for a precomputed :class:`ReportRegion`; mean over the samples that have a region."""
    if not bool(region.has_region.any()):
        return logits.float().sum() * 0.0
    p = torch.sigmoid(select_channel(logits, region.channel).float())
    predicted = voxel_volume_mm3(spacing_mm) * (p * region.dilated).flatten(1).sum(dim=1)
    reported = volumes_mm3.float().clamp(min=0).sum(dim=1).to(predicted.device)
    per_sample = volume_loss_from_mm3(predicted, reported, tolerance=tolerance, e_mm3=e_mm3)
    return per_sample[region.has_region].mean()


def volume_loss(
    logits: torch.Tensor,
    region: torch.Tensor,
    volumes_mm3: torch.Tensor,
    spacing_mm: Spacing,
    *,
    tolerance: float = 0.1,
    E: float = VOLUME_E_MM3,  # noqa: N803 (the paper's name)
    region_dilation_mm: float = REGION_DILATION_MM,
    unknown: torch.Tensor | None = None,
) -> torch.Tensor:
    """Volume Loss of docs/method.md §5.

    ``x = v * sum(sigmoid(z_g) * R)`` with R = dilate(region, 15 mm) and v the voxel volume (mm^3);
    ``y`` = the sum of the sample's reported volumes (mm^3).

    Args:
        logits: (B, C, X, Y, Z) raw scores (float32 or bfloat16; computed in float32).
        region: (B, C, X, Y, Z), the chosen group in its lesion channel g; all zero = no region.
        volumes_mm3: (B, T) reported tumor volumes of the group, padded with 0.
        spacing_mm: voxel spacing in mm, array axis order.
        tolerance: tau (0.1 in the paper, 0.2 in R-Super's code).
        E: stabiliser of the relative error, mm^3.
        region_dilation_mm: dilation of the region, mm.
        unknown: optional (B, C, X, Y, Z), 1 where a channel's truth is not known; voxels unknown because of
            another group are then left out of R (another tumor of unknown size is not counted).

    Returns:
        Scalar: mean over the samples that have a region (0, still attached to the graph, when none has).
    """
    if region.shape != logits.shape:
        raise ValueError(f"region must have the logits' shape {tuple(logits.shape)}, got {tuple(region.shape)}")
    check_spacing(spacing_mm)
    dilated = report_region(region, spacing_mm, dilation_mm=region_dilation_mm, unknown=unknown)
    return volume_loss_in_region(logits, dilated, volumes_mm3, spacing_mm, tolerance=tolerance, e_mm3=E)


class VolumeLoss(nn.Module):
    """Module form of :func:`volume_loss`: ``loss_fn(logits, region, volumes_mm3) -> scalar``.

    Shapes: logits, region (B, C, X, Y, Z); volumes_mm3 (B, T). Reduction: mean over samples with a region.
    """

    def __init__(
        self,
        spacing_mm: Spacing,
        *,
        tolerance: float = 0.1,
        E: float = VOLUME_E_MM3,  # noqa: N803
        region_dilation_mm: float = REGION_DILATION_MM,
    ) -> None:
        super().__init__()
        self.spacing_mm = check_spacing(spacing_mm)
        self.tolerance = tolerance
        self.E = E
        self.region_dilation_mm = region_dilation_mm

    def forward(self, logits: torch.Tensor, region: torch.Tensor, volumes_mm3: torch.Tensor) -> torch.Tensor:
        return volume_loss(logits, region, volumes_mm3, self.spacing_mm, tolerance=self.tolerance, E=self.E,
                           region_dilation_mm=self.region_dilation_mm)
