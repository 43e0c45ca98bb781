"""ReportSupervisedLoss: docs/method.md §5 combination of the segmentation, Ball and Volume losses.

Example:
    >>> loss_fn = ReportSupervisedLoss(spacing_mm=(1.0, 1.0, 1.0), report_weight=0.1,
    ...                                ball=BallLossOptions(margin=0.2), volume=VolumeLossOptions(tolerance=0.1),
    ...                                lesion_channels=[8, 9, 10])
    >>> losses = loss_fn(final_logits, aux_logits, batch)   # losses["total"].backward()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rsuper.losses.ball import BORDER_DILATION_MM, VolumeMode, ball_loss_in_region
from rsuper.losses.geometry import Spacing, check_spacing
from rsuper.losses.region import report_region
from rsuper.losses.segmentation import check_same_shape, known_mask, masked_bce_dice
from rsuper.losses.volume import VOLUME_E_MM3, volume_loss_in_region

BATCH_KEYS = ("label", "unknown", "region", "tumor_volumes_mm3", "tumor_diameters_mm")


@dataclass(frozen=True)
class BallLossOptions:
    """The Ball Loss of docs/method.md §5 (defaults: the paper's).

    Attributes:
        margin: m, relative margin of the enlarged ball and of the positive / extended sets.
        volume_mode: positives from the reported volume (``"report"``) or R-Super code's rule (``"rsuper_code"``).
        rank_weighted: rank-weighted BCE on the positives.
        weight: multiplier of the term inside λ (1; 0 ablates it, it is still reported).
        border_dilation_mm: dilation of the extended set that defines the ignored border, mm.
    """

    margin: float = 0.2
    volume_mode: VolumeMode = "report"
    rank_weighted: bool = False
    weight: float = 1.0
    border_dilation_mm: float = BORDER_DILATION_MM

    def __post_init__(self) -> None:
        if self.volume_mode not in ("report", "rsuper_code"):
            raise ValueError(f"volume_mode must be 'report' or 'rsuper_code', got {self.volume_mode!r}")
        if not 0 <= self.margin < 1 or self.weight < 0:
            raise ValueError(f"margin must be in [0, 1) and weight >= 0, got {self.margin}, {self.weight}")


@dataclass(frozen=True)
class VolumeLossOptions:
    """The Volume Loss of docs/method.md §5 (defaults: the paper's).

    Attributes:
        tolerance: τ (0.1 in the paper, 0.2 in R-Super's code).
        weight: multiplier of the term inside λ (1; 0 ablates it, it is still reported).
        e_mm3: E, stabiliser of the relative volume error, mm³.
    """

    tolerance: float = 0.1
    weight: float = 1.0
    e_mm3: float = VOLUME_E_MM3

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance < 1 or self.weight < 0:
            raise ValueError(f"tolerance must be in [0, 1) and weight >= 0, got {self.tolerance}, {self.weight}")


class ReportSupervisedLoss(nn.Module):
    """``total = 0.5 Seg(final) + 0.5 Seg(aux) + λ * 0.5 * (wb Ball(final) + wv Vol(aux))``.

    ``Seg`` = masked BCE + Dice. The paper's default: Ball Loss on the final output, Volume Loss on the
    deep-supervision output. Known voxels and the dilated region are computed once per call and shared by all terms.

    Args (keyword-only):
        spacing_mm: voxel spacing of the patches in mm, array axis order.
        report_weight: λ (0 in stage 1: the report terms are skipped; 0.1 in stage 2).
        ball: the Ball Loss and its weight wb.
        volume: the Volume Loss and its weight wv.
        lesion_channels: lesion channels that get a background BCE from the Ball Loss in samples without a
            region (label positives excluded); ``None``: such samples get no Ball Loss.

    Call: ``loss_fn(final_logits, aux_logits, batch)`` with logits (B, C, X, Y, Z) (float32 or bfloat16)
    and ``batch`` holding ``label``, ``unknown``, ``region`` (B, C, X, Y, Z) and ``tumor_volumes_mm3``,
    ``tumor_diameters_mm`` (B, T). Returns a dict of scalar float32 tensors ``total``, ``seg_final``,
    ``seg_aux``, ``ball``, ``volume`` (only ``total`` needs ``backward``).
    """

    def __init__(
        self,
        *,
        spacing_mm: Spacing,
        report_weight: float = 0.1,
        ball: BallLossOptions = BallLossOptions(),
        volume: VolumeLossOptions = VolumeLossOptions(),
        lesion_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.spacing_mm = check_spacing(spacing_mm)
        self.report_weight = report_weight
        self.ball = ball
        self.volume = volume
        self.lesion_channels = None if lesion_channels is None else list(lesion_channels)

    def forward(
        self, final_logits: torch.Tensor, aux_logits: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        missing = [key for key in BATCH_KEYS if key not in batch]
        if missing:
            raise KeyError(f"batch is missing {missing}; ReportSupervisedLoss needs the keys {list(BATCH_KEYS)}")
        label, unknown, region = batch["label"], batch["unknown"], batch["region"]
        check_same_shape(final_logits, aux_logits=aux_logits, label=label, unknown=unknown, region=region)
        volumes, diameters = batch["tumor_volumes_mm3"], batch["tumor_diameters_mm"]

        known = known_mask(unknown, self.spacing_mm)
        losses = {"seg_final": masked_bce_dice(final_logits, label, known),
                  "seg_aux": masked_bce_dice(aux_logits, label, known)}
        if self.report_weight > 0:
            dilated = report_region(region, self.spacing_mm, unknown=unknown)
            losses["ball"] = ball_loss_in_region(
                final_logits, dilated, known, diameters, volumes, self.spacing_mm,
                margin=self.ball.margin, volume_mode=self.ball.volume_mode, rank_weighted=self.ball.rank_weighted,
                border_dilation_mm=self.ball.border_dilation_mm, lesion_channels=self.lesion_channels, target=label,
            )
            losses["volume"] = volume_loss_in_region(
                aux_logits, dilated, volumes, self.spacing_mm, tolerance=self.volume.tolerance, e_mm3=self.volume.e_mm3
            )
        else:
            losses["ball"] = losses["volume"] = final_logits.float().sum() * 0.0
        report = self.ball.weight * losses["ball"] + self.volume.weight * losses["volume"]
        losses["total"] = 0.5 * losses["seg_final"] + 0.5 * losses["seg_aux"] + self.report_weight * 0.5 * report
        return losses
