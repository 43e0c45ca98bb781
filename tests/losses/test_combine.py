"""Masked segmentation loss and ReportSupervisedLoss (docs/method.md §5 combination)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rsuper.losses import (
    BallLossOptions,
    MaskedSegmentationLoss,
    ReportSupervisedLoss,
    VolumeLossOptions,
    ball_loss,
    known_mask,
    segmentation_loss,
    volume_loss,
)

ISO = (1.0, 1.0, 1.0)


def test_segmentation_loss_is_bce_plus_dice_on_known_voxels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 12, 12, 12, requires_grad=True)
    target = (torch.rand(2, 2, 12, 12, 12) > 0.7).float()
    target[:, 1] = 0  # a channel without positives is left to the BCE
    unknown = torch.zeros_like(target)
    unknown[0, 0, :4] = 1
    loss = segmentation_loss(logits, target, unknown, ISO)
    known = known_mask(unknown, ISO)
    assert float(known[0, 0, :6].sum()) == 0 and float(known[0, 0, 7:].min()) == 1  # 2.5 mm margin
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * known
    expected_bce = (bce.flatten(1).sum(1) / known.flatten(1).sum(1)).mean()
    p = torch.sigmoid(logits[:, 0]) * known[:, 0]
    y = target[:, 0] * known[:, 0]
    expected_dice = 1 - (2 * (p * y).sum() + 1e-5) / (p.sum() + y.sum() + 1e-5)
    assert float(loss.detach()) == pytest.approx(float((expected_bce + expected_dice).detach()), rel=1e-5)
    with torch.no_grad():
        module_value = float(MaskedSegmentationLoss(ISO)(logits, target, unknown))
    assert module_value == pytest.approx(float(loss.detach()))
    loss.backward()
    assert float(logits.grad[0, 0, :4].abs().max()) == 0.0
    assert float(logits.grad[0, 0, 8:].abs().min()) > 0.0


def _batch(dtype: torch.dtype = torch.float32):
    """Sample 0: report case with a region in lesion channel 2; sample 1: mask case with a tumor."""
    shape = (36, 36, 36)
    torch.manual_seed(1)
    final = torch.randn(2, 3, *shape)
    final[0, 2, 14:20, 14:20, 14:20] += 4.0
    aux = torch.randn(2, 3, *shape)
    label = torch.zeros(2, 3, *shape)
    label[:, 0, :18] = 1  # an organ channel
    label[1, 2, 5:9, 5:9, 5:9] = 1  # mask case tumor
    region = torch.zeros_like(label)
    region[0, 2, 10:24, 10:24, 10:24] = 1
    unknown = torch.zeros_like(label)
    unknown[0, 2] = region[0, 2]
    unknown[0, 2, 33:, 33:, 33:] = 1  # another tumor-bearing sub-segment far from the region
    unknown[1, 1] = 1  # a class that dataset does not annotate
    batch = {
        "label": label,
        "unknown": unknown,
        "region": region,
        "tumor_volumes_mm3": torch.tensor([[180.0, 40.0], [0.0, 0.0]]),
        "tumor_diameters_mm": torch.tensor([[7.0, 4.0], [0.0, 0.0]]),
    }
    return final.to(dtype).requires_grad_(True), aux.to(dtype).requires_grad_(True), batch


def test_total_is_the_method_combination_of_the_functional_losses() -> None:
    final, aux, batch = _batch()
    final, aux = final.detach(), aux.detach()
    out = ReportSupervisedLoss(spacing_mm=ISO, report_weight=0.1)(final, aux, batch)
    assert set(out) == {"total", "seg_final", "seg_aux", "ball", "volume"}
    args = (batch["unknown"], ISO)
    assert float(out["seg_final"]) == pytest.approx(float(segmentation_loss(final, batch["label"], *args)), rel=1e-5)
    assert float(out["seg_aux"]) == pytest.approx(float(segmentation_loss(aux, batch["label"], *args)), rel=1e-5)
    ball = ball_loss(final, batch["region"], batch["unknown"], batch["tumor_diameters_mm"], batch["tumor_volumes_mm3"], ISO)
    assert float(out["ball"]) == pytest.approx(float(ball), rel=1e-5)
    vol = volume_loss(aux, batch["region"], batch["tumor_volumes_mm3"], ISO)
    assert float(out["volume"]) == pytest.approx(float(vol), rel=1e-5)
    expected = 0.5 * out["seg_final"] + 0.5 * out["seg_aux"] + 0.1 * 0.5 * (out["ball"] + out["volume"])
    assert float(out["total"]) == pytest.approx(float(expected), rel=1e-6)
    stage1 = ReportSupervisedLoss(spacing_mm=ISO, report_weight=0.0)(final, aux, batch)
    assert float(stage1["ball"]) == 0.0 and float(stage1["volume"]) == 0.0


def test_term_weights_ablate_the_ball_or_the_volume_loss() -> None:
    final, aux, batch = _batch()
    full = ReportSupervisedLoss(spacing_mm=ISO, report_weight=0.1)(final.detach(), aux.detach(), batch)
    no_ball = ReportSupervisedLoss(spacing_mm=ISO, report_weight=0.1, ball=BallLossOptions(weight=0.0))(final, aux, batch)
    seg = 0.5 * full["seg_final"] + 0.5 * full["seg_aux"]
    assert float(no_ball["ball"]) == pytest.approx(float(full["ball"])) and float(full["ball"]) > 0  # still reported
    assert float(no_ball["total"]) == pytest.approx(float(seg + 0.05 * full["volume"]), rel=1e-6)
    no_ball["total"].backward()
    assert float(final.grad[0, 2, 17, 17, 17]) == 0.0  # the region of the final output: only the Ball Loss
    no_volume = ReportSupervisedLoss(spacing_mm=ISO, report_weight=0.1, volume=VolumeLossOptions(weight=0.0))(
        final.detach(), aux, batch)
    assert float(no_volume["total"]) == pytest.approx(float(seg + 0.05 * full["ball"]), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_unknown_voxels_never_get_gradient(dtype: torch.dtype) -> None:
    final, aux, batch = _batch(dtype)
    out = ReportSupervisedLoss(spacing_mm=ISO, report_weight=1.0, ball=BallLossOptions(rank_weighted=True),
                               lesion_channels=[2])(final, aux, batch)
    assert out["total"].dtype == torch.float32 and math.isfinite(float(out["total"].detach()))
    out["total"].backward()
    for grad in (final.grad, aux.grad):
        assert grad.dtype == dtype and bool(torch.isfinite(grad.float()).all())
        assert float(grad[0, 2, 33:, 33:, 33:].abs().max()) == 0.0  # unknown, outside R
        assert float(grad[1, 1].abs().max()) == 0.0  # unannotated class
        assert float(grad[0, 2, 17, 17, 17].abs()) > 0.0  # the region is supervised (Ball / Volume Loss)
    assert float(final.grad[1, 2, 6, 6, 6]) < 0.0  # the mask-case tumor is pushed up, not to background


def test_missing_batch_key_is_a_clear_error() -> None:
    final, aux, batch = _batch()
    del batch["region"]
    with pytest.raises(KeyError, match="region"):
        ReportSupervisedLoss(spacing_mm=ISO)(final, aux, batch)


def test_loss_options_are_keyword_only_and_checked() -> None:
    with pytest.raises(TypeError):
        ReportSupervisedLoss(ISO)  # type: ignore[misc]
    with pytest.raises(ValueError, match="volume_mode"):
        BallLossOptions(volume_mode="sphere")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance"):
        VolumeLossOptions(tolerance=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    final, aux, batch = _batch()
    loss_fn = ReportSupervisedLoss(spacing_mm=ISO, report_weight=1.0, lesion_channels=[2])
    cpu = loss_fn(final, aux, batch)
    cpu["total"].backward()
    gpu_final = final.detach().cuda().to(torch.bfloat16).requires_grad_(True)
    gpu_aux = aux.detach().cuda().to(torch.bfloat16).requires_grad_(True)
    gpu = loss_fn(gpu_final, gpu_aux, {key: value.cuda() for key, value in batch.items()})
    gpu["total"].backward()
    for key in cpu:
        assert float(gpu[key].detach()) == pytest.approx(float(cpu[key].detach()), abs=0.02), key
    assert float(gpu_final.grad[0, 2, 33:, 33:, 33:].abs().max()) == 0.0
