"""ReportSupervisedLoss: METHOD.md §5 combination of the segmentation, Ball and Volume losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from rsuper.losses.ball import BORDER_DILATION_MM, VolumeMode, ball_loss_in_region
from rsuper.losses.geometry import Spacing, check_spacing
from rsuper.losses.region import REGION_DILATION_MM, report_region
from rsuper.losses.segmentation import UNKNOWN_DILATION_MM, check_same_shape, known_mask, masked_bce_dice
from rsuper.losses.volume import VOLUME_E_MM3, volume_loss_in_region

BATCH_KEYS = ("label", "unknown", "region", "tumor_volumes_mm3", "tumor_diameters_mm")


class ReportSupervisedLoss(nn.Module):
    """``total = 0.5 Seg(final) + 0.5 Seg(aux) + λ * 0.5 * (wb Ball(final) + wv Vol(aux))``.

    ``Seg`` = masked BCE + Dice.

    The paper's default: Ball Loss on the final output, Volume Loss on the deep-supervision output.
    Known voxels and the dilated region are computed once per call and shared by all terms.

    Args:
        spacing_mm: voxel spacing of the patches in mm, array axis order.
        report_weight: lambda (0 in stage 1, 0.1 in stage 2).
        tolerance: tau of the Volume Loss (0.1 paper, 0.2 R-Super code).
        margin: m of the Ball Loss.
        volume_mode: Ball Loss positives from the reported volume (``"report"``) or R-Super's code rule.
        rank_weighted: rank-weighted BCE on the Ball Loss positives.
        lesion_channels: lesion channels that get a background BCE from the Ball Loss in samples without a
            region (label positives excluded); ``None``: such samples get no Ball Loss.
        E: Volume Loss stabiliser, mm^3.
        ball_weight, volume_weight: wb and wv, 1 in the paper; 0 ablates a term (it is still reported).

    Call: ``loss_fn(final_logits, aux_logits, batch)`` with logits (B, C, X, Y, Z) (float32 or bfloat16)
    and ``batch`` holding ``label``, ``unknown``, ``region`` (B, C, X, Y, Z) and ``tumor_volumes_mm3``,
    ``tumor_diameters_mm`` (B, T). Returns a dict of scalar float32 tensors ``total``, ``seg_final``,
    ``seg_aux``, ``ball``, ``volume`` (only ``total`` needs ``backward``).
    """

    def __init__(
        self,
        spacing_mm: Spacing,
        report_weight: float = 0.1,
        tolerance: float = 0.1,
        margin: float = 0.2,
        volume_mode: VolumeMode = "report",
        rank_weighted: bool = False,
        lesion_channels: Sequence[int] | None = None,
        E: float = VOLUME_E_MM3,  # noqa: N803 (the paper's name)
        unknown_dilation_mm: float = UNKNOWN_DILATION_MM,
        region_dilation_mm: float = REGION_DILATION_MM,
        border_dilation_mm: float = BORDER_DILATION_MM,
        ball_weight: float = 1.0,
        volume_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.spacing_mm = check_spacing(spacing_mm)
        self.report_weight = report_weight
        self.tolerance = tolerance
        self.margin = margin
        self.volume_mode = volume_mode
        self.rank_weighted = rank_weighted
        self.lesion_channels = None if lesion_channels is None else list(lesion_channels)
        self.E = E
        self.unknown_dilation_mm = unknown_dilation_mm
        self.region_dilation_mm = region_dilation_mm
        self.border_dilation_mm = border_dilation_mm
        self.ball_weight = ball_weight
        self.volume_weight = volume_weight

    def forward(
        self, final_logits: torch.Tensor, aux_logits: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        missing = [key for key in BATCH_KEYS if key not in batch]
        if missing:
            raise KeyError(f"batch is missing {missing}; ReportSupervisedLoss needs the keys {list(BATCH_KEYS)}")
        label, unknown, region = batch["label"], batch["unknown"], batch["region"]
        check_same_shape(final_logits, aux_logits=aux_logits, label=label, unknown=unknown, region=region)
        volumes, diameters = batch["tumor_volumes_mm3"], batch["tumor_diameters_mm"]

        known = known_mask(unknown, self.spacing_mm, self.unknown_dilation_mm)
        seg_final = masked_bce_dice(final_logits, label, known)
        seg_aux = masked_bce_dice(aux_logits, label, known)
        losses = {"seg_final": seg_final, "seg_aux": seg_aux}
        if self.report_weight > 0:
            dilated = report_region(region, self.spacing_mm, self.region_dilation_mm, unknown, self.unknown_dilation_mm)
            ball = ball_loss_in_region(
                final_logits,
                dilated,
                known,
                diameters,
                volumes,
                self.spacing_mm,
                self.margin,
                self.volume_mode,
                self.rank_weighted,
                self.border_dilation_mm,
                self.lesion_channels,
                label,
            )
            volume = volume_loss_in_region(aux_logits, dilated, volumes, self.spacing_mm, self.tolerance, self.E)
        else:
            ball = volume = final_logits.float().sum() * 0.0
        losses["ball"] = ball
        losses["volume"] = volume
        report = self.ball_weight * ball + self.volume_weight * volume
        losses["total"] = 0.5 * seg_final + 0.5 * seg_aux + self.report_weight * 0.5 * report
        return losses
