"""Absence Loss: top-k known-negative voxels of report samples pushed toward 0."""

import pytest
import torch
import torch.nn.functional as F

from rsuper.losses import ReportSupervisedLoss
from rsuper.losses.absence import absence_loss, absence_voxel_count

SPACING = (4.0, 4.0, 4.0)  # 64 mm³ voxels: 300 mm³ -> k = 5


def _inputs(batch: int = 2, channels: int = 3, size: int = 8):
    logits = torch.full((batch, channels, size, size, size), -6.0)
    known = torch.ones_like(logits)
    region = torch.zeros(batch, size, size, size)
    channel = torch.zeros(batch, dtype=torch.long)
    return logits, known, region, channel


def test_voxel_count_is_the_detection_volume_in_voxels():
    assert absence_voxel_count(300.0, SPACING) == 5  # 300 / 64 = 4.7
    assert absence_voxel_count(300.0, (1.0, 1.0, 1.0)) == 300
    assert absence_voxel_count(1.0, SPACING) == 1
    with pytest.raises(ValueError, match="> 0"):
        absence_voxel_count(0.0, SPACING)


def test_loss_is_the_mean_bce_of_the_k_most_tumor_like_known_negatives():
    logits, known, region, channel = _inputs(batch=1, channels=2)
    blob = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.1])  # 7 high voxels; only the top 5 count
    logits[0, 1].view(-1)[: len(blob)] = blob
    loss = absence_loss(logits, known, region, channel, torch.tensor([True]), [1], SPACING, 300.0)
    assert loss.item() == pytest.approx(F.softplus(blob[:5]).mean().item(), rel=1e-6)


def test_gradient_reaches_only_the_top_k_voxels_of_report_samples():
    logits, known, region, channel = _inputs(batch=2, channels=2)
    logits[:, 1, 0, 0, :6] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    logits.requires_grad_(True)
    absence_loss(logits, known, region, channel, torch.tensor([True, False]), [1], SPACING, 300.0).backward()
    grad = logits.grad
    assert torch.count_nonzero(grad[0, 1]) == 5
    assert torch.count_nonzero(grad[0, 1, 0, 0, :5]) == 5
    assert grad[0, 1, 0, 0, 5] == 0  # sixth highest: not in the top 5
    assert torch.count_nonzero(grad[1]) == 0  # mask sample
    assert torch.count_nonzero(grad[0, 0]) == 0  # not a lesion channel
    assert bool((grad[0, 1, 0, 0, :5] > 0).all())  # gradient descent lowers them


def test_unknown_voxels_and_the_region_of_its_own_channel_are_left_alone():
    logits, known, region, channel = _inputs(batch=1, channels=3)
    logits[0, 1, 0, 0, 0] = 8.0  # unknown (a reported tumor's sub-segment)
    known[0, 1, 0, 0, 0] = 0.0
    logits[0, 1, 7, 7, 7] = 8.0  # inside R of channel 1
    logits[0, 2, 7, 7, 7] = 8.0  # same place, channel 2: R belongs to channel 1 only
    region[0, 6:, 6:, 6:] = 1.0
    channel[0] = 1
    logits.requires_grad_(True)
    loss = absence_loss(logits, known, region, channel, torch.tensor([True]), [1, 2], SPACING, 300.0)
    loss.backward()
    assert logits.grad[0, 1, 0, 0, 0] == 0 and logits.grad[0, 1, 7, 7, 7] == 0
    assert logits.grad[0, 2, 7, 7, 7] > 0
    # channel 1: five -6 voxels (below 0.5: left alone); channel 2: the +8 and four -6 voxels.
    expected = (0.0 + F.softplus(torch.tensor(8.0)) / 5) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_voxels_no_longer_called_tumor_are_left_alone_unless_min_prob_is_zero():
    logits, known, region, channel = _inputs(batch=1, channels=2)
    blob = torch.tensor([2.0, 1.0, 0.0, -1.0, -2.0])  # probabilities 0.88, 0.73, 0.5, 0.27, 0.12
    logits[0, 1, 0, 0, :5] = blob
    logits.requires_grad_(True)
    is_report = torch.tensor([True])
    loss = absence_loss(logits, known, region, channel, is_report, [1], SPACING, 300.0)  # min_prob 0.5
    assert loss.item() == pytest.approx(F.softplus(blob[:3]).sum().item() / 5, rel=1e-6)
    loss.backward()
    grad = logits.grad[0, 1, 0, 0, :5]
    assert torch.count_nonzero(grad[:3]) == 3 and torch.count_nonzero(grad[3:]) == 0
    always = absence_loss(logits, known, region, channel, is_report, [1], SPACING, 300.0, min_prob=0.0)
    assert always.item() == pytest.approx(F.softplus(blob).mean().item(), rel=1e-6)
    strict = absence_loss(logits, known, region, channel, is_report, [1], SPACING, 300.0, min_prob=0.8)
    assert strict.item() == pytest.approx(F.softplus(blob[:1]).sum().item() / 5, rel=1e-6)
    with pytest.raises(ValueError, match="min_prob"):
        absence_loss(logits, known, region, channel, is_report, [1], SPACING, 300.0, min_prob=1.0)


def test_no_report_sample_or_nothing_known_gives_zero_attached_to_the_graph():
    logits, known, region, channel = _inputs()
    logits.requires_grad_(True)
    loss = absence_loss(logits, known, region, channel, torch.tensor([False, False]), [1, 2], SPACING)
    assert loss.item() == 0.0 and loss.requires_grad
    loss = absence_loss(logits, torch.zeros_like(known), region, channel, torch.tensor([True, True]), [1], SPACING)
    assert loss.item() == 0.0 and loss.requires_grad


def _batch(logits: torch.Tensor, is_report: list[bool]) -> dict[str, torch.Tensor]:
    zeros = torch.zeros_like(logits)
    return {"label": zeros, "unknown": zeros, "region": zeros,
            "tumor_volumes_mm3": torch.zeros(logits.shape[0], 2), "tumor_diameters_mm": torch.zeros(logits.shape[0], 2),
            "is_report": torch.tensor(is_report)}


def test_report_supervised_loss_adds_it_with_lambda_half_and_its_weight():
    logits, *_ = _inputs(batch=2, channels=3)
    logits[0, 2, 0, 0, :5] = 3.0  # a false-positive blob in a report sample's lesion channel
    batch = _batch(logits, [True, False])
    base = ReportSupervisedLoss(SPACING, report_weight=0.1, lesion_channels=[1, 2])(logits, logits, batch)
    with_absence = ReportSupervisedLoss(SPACING, report_weight=0.1, lesion_channels=[1, 2], absence_weight=2.0)(
        logits, logits, batch)
    assert base["absence"].item() == 0.0
    # channel 1 of the report sample: all -6 (not called, left alone); channel 2: the blob of 5 voxels at +3.
    expected = (0.0 + F.softplus(torch.tensor(3.0))) / 2
    assert with_absence["absence"].item() == pytest.approx(expected.item(), rel=1e-5)
    gained = with_absence["total"].item() - base["total"].item()
    assert gained == pytest.approx(0.1 * 0.5 * 2.0 * expected.item(), rel=1e-4)


def test_report_supervised_loss_needs_is_report_and_lesion_channels_for_it():
    logits, *_ = _inputs()
    batch = _batch(logits, [True, True])
    del batch["is_report"]
    with pytest.raises(KeyError, match="is_report"):
        ReportSupervisedLoss(SPACING, lesion_channels=[1], absence_weight=1.0)(logits, logits, batch)
    ReportSupervisedLoss(SPACING, lesion_channels=[1])(logits, logits, batch)  # off: not needed
    with pytest.raises(ValueError, match="lesion_channels"):
        ReportSupervisedLoss(SPACING, absence_weight=1.0)
