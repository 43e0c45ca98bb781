"""Masked segmentation loss (docs/method.md §5): BCE + soft Dice on the known voxels of every channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsuper.losses.geometry import Spacing, check_spacing, dilate_mm

UNKNOWN_DILATION_MM = 2.5
DICE_SMOOTH = 1e-5


def check_same_shape(reference: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Raise a clear error unless every tensor has the (B, C, X, Y, Z) shape of ``reference``."""
    if reference.dim() != 5:
        raise ValueError(f"logits must be (B, C, X, Y, Z), got shape {tuple(reference.shape)}")
    for name, tensor in tensors.items():
        if tensor.shape != reference.shape:
            raise ValueError(f"{name} must have the logits' shape {tuple(reference.shape)}, got {tuple(tensor.shape)}")


def known_mask(unknown: torch.Tensor, spacing_mm: Spacing, dilation_mm: float = UNKNOWN_DILATION_MM) -> torch.Tensor:
    """K = 1 - dilate(unknown, dilation_mm): float {0, 1} tensor of the shape of ``unknown`` (B, C, X, Y, Z)."""
    return (~dilate_mm(unknown, dilation_mm, spacing_mm)).float()


def masked_bce_dice(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice restricted to ``known`` voxels; all (B, C, X, Y, Z), computed in float32.

    Reduction: BCE is the mean over the known voxels of each sample (all channels together), then the
    mean over the samples that have known voxels. Dice is a batch Dice per channel
    (sums over the batch and the known voxels) averaged over the channels that have at least one known
    positive voxel; channels without positives are left to the BCE. Voxels with ``known == 0`` get
    exactly zero gradient.
    """
    z = logits.float()
    y = target.float()
    k = known.float()
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none") * k
    per_sample_known = k.flatten(1).sum(dim=1)
    has_known = per_sample_known > 0
    zero = z.sum() * 0.0
    if not bool(has_known.any()):
        return zero
    bce_loss = (bce.flatten(1).sum(dim=1)[has_known] / per_sample_known[has_known]).mean()

    p = torch.sigmoid(z) * k
    yk = y * k
    dims = (0, 2, 3, 4)
    intersection = (p * yk).sum(dim=dims)
    target_sum = yk.sum(dim=dims)
    denominator = p.sum(dim=dims) + target_sum
    dice = 1.0 - (2.0 * intersection + DICE_SMOOTH) / (denominator + DICE_SMOOTH)
    has_positive = target_sum > 0
    dice_loss = dice[has_positive].mean() if bool(has_positive.any()) else zero
    return bce_loss + dice_loss


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    unknown: torch.Tensor,
    spacing_mm: Spacing,
    *,
    unknown_dilation_mm: float = UNKNOWN_DILATION_MM,
) -> torch.Tensor:
    """Masked BCE + soft Dice on known voxels, known = 1 - dilate(unknown, 2.5 mm).

    Args:
        logits: (B, C, X, Y, Z) raw scores (float32 or bfloat16; the loss is computed in float32).
        target: (B, C, X, Y, Z) binary labels.
        unknown: (B, C, X, Y, Z), 1 where the channel's truth is not known.
        spacing_mm: voxel spacing in mm, array axis order.
        unknown_dilation_mm: margin around unknown voxels that is ignored too.

    Returns:
        Scalar float32 tensor (see :func:`masked_bce_dice` for the reduction).
    """
    check_same_shape(logits, target=target, unknown=unknown)
    check_spacing(spacing_mm)
    return masked_bce_dice(logits, target, known_mask(unknown, spacing_mm, unknown_dilation_mm))


class MaskedSegmentationLoss(nn.Module):
    """Module form of :func:`segmentation_loss`: ``loss_fn(logits, target, unknown) -> scalar``.

    Shapes: logits, target, unknown (B, C, X, Y, Z). Reduction: mean (see :func:`masked_bce_dice`).
    """

    def __init__(self, spacing_mm: Spacing, *, unknown_dilation_mm: float = UNKNOWN_DILATION_MM) -> None:
        super().__init__()
        self.spacing_mm = check_spacing(spacing_mm)
        self.unknown_dilation_mm = unknown_dilation_mm

    def forward(self, logits: torch.Tensor, target: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(logits, target, unknown, self.spacing_mm, unknown_dilation_mm=self.unknown_dilation_mm)
