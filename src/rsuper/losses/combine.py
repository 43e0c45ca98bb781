"""ReportSupervisedLoss: METHOD.md §5 combination of the segmentation, Ball and Volume losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from rsuper.losses.absence import ABSENCE_MIN_PROB, ABSENCE_VOLUME_MM3, absence_loss
from rsuper.losses.attenuation import darkness_rank
from rsuper.losses.ball import BORDER_DILATION_MM, VolumeMode, ball_loss_in_region
from rsuper.losses.geometry import Spacing, check_spacing
from rsuper.losses.region import REGION_DILATION_MM, report_region, select_channel
from rsuper.losses.segmentation import (
    UNKNOWN_DILATION_MM,
    check_same_shape,
    known_mask,
    masked_bce_dice,
    organ_balanced_bce,
)
from rsuper.losses.volume import VOLUME_E_MM3, volume_loss_in_region

BATCH_KEYS = ("label", "unknown", "region", "tumor_volumes_mm3", "tumor_diameters_mm")
ATTENUATION_KEYS = ("image", "tumor_hypoattenuating")


class ReportSupervisedLoss(nn.Module):
    """``total = 0.5 Seg(final) + 0.5 Seg(aux) + λ * 0.5 * (wb Ball(final) + wv Vol(aux) + wa Abs(final))``.

    ``Seg`` = masked BCE + Dice, plus ``wo`` times the organ-balanced lesion BCE when ``organ_bce_weight`` > 0.

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
        ball_min_confidence: Ball Loss only for samples whose balls have at least this mean probability
            (0, the paper: always; see :mod:`rsuper.losses.ball`).
        ball_region_background: the Ball Loss pushes the region's voxels outside the balls toward 0 (True,
            the paper); False: only known voxels, so a ball on healthy tissue cannot suppress the real tumor.
        ball_attenuation_weight: weight of the hypoattenuation prior in the Ball Loss search of tumors the
            report calls hypoattenuating (:mod:`rsuper.losses.attenuation`, not in the paper); 0 (default) = off.
        pooled_dice_channels: channels that get one more, joint Dice term in the segmentation loss (see
            :func:`masked_bce_dice`); ``None``: the paper's per-channel Dice only.
        absence_weight: wa of the Absence Loss (:mod:`rsuper.losses.absence`, not in the paper: report
            samples' most tumor-like known-negative blob of ``absence_volume_mm3`` pushed toward 0 in every
            lesion channel of ``lesion_channels``); 0 (default) = the paper's losses only.
        absence_volume_mm3: size of that blob, mm³ (the CT-level detection threshold).
        absence_min_prob: the Absence Loss leaves voxels below this probability alone (0.5: only blobs that
            would be called tumor are pushed; 0: always push).
        organ_bce_weight: wo of :func:`organ_balanced_bce` in both segmentation terms (not in the paper; every
            sample, mask or report); 0 (default) = off.
        lesion_organs: lesion channel -> its organ channels, needed when ``organ_bce_weight`` > 0.

    Call: ``loss_fn(final_logits, aux_logits, batch)`` with logits (B, C, X, Y, Z) (float32 or bfloat16)
    and ``batch`` holding ``label``, ``unknown``, ``region`` (B, C, X, Y, Z) and ``tumor_volumes_mm3``,
    ``tumor_diameters_mm`` (B, T), with ``absence_weight > 0`` ``is_report`` (B,) bool, and with
    ``ball_attenuation_weight > 0`` ``image`` (B, 1, X, Y, Z) and ``tumor_hypoattenuating`` (B, T) {0, 1}. Returns a dict of
    scalar float32 tensors ``total``, ``seg_final``, ``seg_aux``, ``ball``, ``volume``, ``absence`` (only
    ``total`` needs ``backward``).
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
        pooled_dice_channels: Sequence[int] | None = None,
        ball_min_confidence: float = 0.0,
        ball_region_background: bool = True,
        ball_attenuation_weight: float = 0.0,
        absence_weight: float = 0.0,
        absence_volume_mm3: float = ABSENCE_VOLUME_MM3,
        absence_min_prob: float = ABSENCE_MIN_PROB,
        organ_bce_weight: float = 0.0,
        lesion_organs: Mapping[int, Sequence[int]] | None = None,
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
        self.pooled_dice_channels = None if pooled_dice_channels is None else list(pooled_dice_channels)
        self.ball_min_confidence = ball_min_confidence
        self.ball_region_background = ball_region_background
        self.ball_attenuation_weight = ball_attenuation_weight
        self.absence_weight = absence_weight
        self.absence_volume_mm3 = absence_volume_mm3
        self.absence_min_prob = absence_min_prob
        self.organ_bce_weight = organ_bce_weight
        self.lesion_organs = {int(k): [int(c) for c in v] for k, v in (lesion_organs or {}).items()}
        if organ_bce_weight > 0 and not self.lesion_organs:
            raise ValueError("organ_bce_weight > 0 needs lesion_organs (lesion channel -> its organ channels)")
        if absence_weight > 0 and not self.lesion_channels:
            raise ValueError("absence_weight > 0 needs lesion_channels (the channels the Absence Loss supervises)")

    def forward(
        self, final_logits: torch.Tensor, aux_logits: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        report_terms = self.report_weight > 0
        needed = BATCH_KEYS + (("is_report",) if self.absence_weight > 0 and report_terms else ()) \
            + (ATTENUATION_KEYS if self.ball_attenuation_weight > 0 and report_terms else ())
        missing = [key for key in needed if key not in batch]
        if missing:
            raise KeyError(f"batch is missing {missing}; ReportSupervisedLoss needs the keys {list(needed)}")
        label, unknown, region = batch["label"], batch["unknown"], batch["region"]
        check_same_shape(final_logits, aux_logits=aux_logits, label=label, unknown=unknown, region=region)
        volumes, diameters = batch["tumor_volumes_mm3"], batch["tumor_diameters_mm"]

        known = known_mask(unknown, self.spacing_mm, self.unknown_dilation_mm)
        seg_final = masked_bce_dice(final_logits, label, known, self.pooled_dice_channels)
        seg_aux = masked_bce_dice(aux_logits, label, known, self.pooled_dice_channels)
        if self.organ_bce_weight > 0:
            w, organs = self.organ_bce_weight, self.lesion_organs
            seg_final = seg_final + w * organ_balanced_bce(final_logits, label, known, organs)
            seg_aux = seg_aux + w * organ_balanced_bce(aux_logits, label, known, organs)
        losses = {"seg_final": seg_final, "seg_aux": seg_aux}
        if report_terms:
            dilated = report_region(region, self.spacing_mm, self.region_dilation_mm, unknown, self.unknown_dilation_mm)
            prior = prior_tumors = None
            if self.ball_attenuation_weight > 0:
                group = select_channel(region, dilated.channel) * dilated.has_region.view(-1, 1, 1, 1)
                prior = darkness_rank(batch["image"][:, 0].to(region.device), group)
                prior_tumors = batch["tumor_hypoattenuating"]
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
                self.ball_min_confidence,
                self.ball_region_background,
                prior,
                prior_tumors,
                self.ball_attenuation_weight,
            )
            volume = volume_loss_in_region(aux_logits, dilated, volumes, self.spacing_mm, self.tolerance, self.E)
        else:
            ball = volume = final_logits.float().sum() * 0.0
        if report_terms and self.absence_weight > 0:
            absence = absence_loss(final_logits, known, dilated.dilated, dilated.channel,
                                   batch["is_report"].to(final_logits.device).bool(), self.lesion_channels or [],
                                   self.spacing_mm, self.absence_volume_mm3, self.absence_min_prob)
        else:
            absence = final_logits.float().sum() * 0.0
        losses["ball"] = ball
        losses["volume"] = volume
        losses["absence"] = absence
        report = self.ball_weight * ball + self.volume_weight * volume + self.absence_weight * absence
        losses["total"] = 0.5 * seg_final + 0.5 * seg_aux + self.report_weight * 0.5 * report
        return losses
