"""Organ-balanced lesion BCE (rsuper.losses.segmentation.organ_balanced_bce) and its wiring."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rsuper.config import TrainConfig
from rsuper.demo import DemoPlan
from rsuper.labels import lesion_organ_channels
from rsuper.losses import ReportSupervisedLoss, organ_balanced_bce
from rsuper.losses.segmentation import masked_bce_dice

# Channels: 0 kidney_left, 1 kidney_right, 2 kidney_lesion.
ORGANS = {2: [0, 1]}


def _kidneys(shape=(1, 3, 24, 24, 24)) -> tuple[torch.Tensor, torch.Tensor]:
    """Two kidneys (boxes) and a tumor in the right one; logits -20 everywhere (a saturated lesion channel)."""
    target = torch.zeros(shape)
    target[:, 0, 2:8, 4:12, 4:12] = 1
    target[:, 1, 14:20, 4:12, 4:12] = 1
    target[:, 2, 15:18, 6:9, 6:9] = 1
    return torch.full(shape, -20.0), target


def test_matches_the_two_means_by_hand() -> None:
    torch.manual_seed(0)
    _, target = _kidneys()
    logits = torch.randn_like(target)
    known = torch.ones_like(target)
    bce = F.binary_cross_entropy_with_logits(logits[:, 2], target[:, 2], reduction="none")
    organ = target[:, :2].amax(1)
    tumor = target[:, 2] > 0
    healthy_organ = (organ > 0) & ~tumor
    expected = (bce[tumor].mean() + bce[healthy_organ].mean()) / 2
    assert float(organ_balanced_bce(logits, target, known, ORGANS)) == pytest.approx(float(expected), rel=1e-5)


def test_a_saturated_tumor_voxel_gets_a_gradient_the_plain_loss_does_not_give() -> None:
    """The case seen on the demo: the lesion logit is ~ -20 in every right kidney, tumor or not."""
    logits, target = _kidneys()
    known = torch.ones_like(target)

    def tumor_grad(loss_fn) -> float:
        z = logits.clone().requires_grad_(True)
        loss_fn(z).backward()
        return float(z.grad[0, 2, 16, 7, 7])

    plain = tumor_grad(lambda z: masked_bce_dice(z, target, known))
    balanced = tumor_grad(lambda z: organ_balanced_bce(z, target, known, ORGANS))
    n_tumor = int(target[:, 2].sum())
    assert plain < 0 and abs(plain) < 1e-4  # 1 / (all voxels of all channels) and a dead Dice gradient
    assert balanced == pytest.approx(-1.0 / (2 * n_tumor), rel=1e-4)  # (p - 1) / tumor voxels, mean of 2 terms
    assert abs(balanced) > 100 * abs(plain)


def test_unknown_voxels_and_voxels_outside_the_organ_get_no_gradient() -> None:
    logits, target = _kidneys()
    logits[:, 2] = 3.0  # confident everywhere: every healthy voxel is a false positive
    known = torch.ones_like(target)
    known[:, 2, 14:20] = 0  # the right kidney's lesion channel is unknown (a reported tumor there)
    z = logits.clone().requires_grad_(True)
    organ_balanced_bce(z, target, known, ORGANS).backward()
    grad = z.grad[0, 2]
    assert float(grad[14:20].abs().max()) == 0.0  # unknown
    assert float(grad[22:, 20:].abs().max()) == 0.0  # outside both kidneys
    left_kidney = grad[2:8, 4:12, 4:12]
    assert float(left_kidney.min()) > 0  # healthy left kidney pushed down
    assert float(left_kidney.sum()) == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item(), rel=1e-4)


def test_no_tumor_and_no_organ_gives_a_differentiable_zero() -> None:
    logits = torch.zeros(1, 3, 8, 8, 8, requires_grad=True)
    value = organ_balanced_bce(logits, torch.zeros_like(logits), torch.ones_like(logits), ORGANS)
    value.backward()
    assert float(value.detach()) == 0.0 and float(logits.grad.abs().max()) == 0.0


def test_lesion_organ_channels_maps_each_lesion_to_its_organ_channels() -> None:
    names = ["liver", "kidney_left", "kidney_right", "pancreatic_lesion", "kidney_lesion", "liver_lesion"]
    assert lesion_organ_channels(names) == {4: [1, 2], 5: [0]}  # no pancreas channel: its lesion is left out


def test_report_supervised_loss_adds_the_term_to_both_heads() -> None:
    torch.manual_seed(1)
    _, label = _kidneys((2, 3, 16, 16, 16))
    final, aux = torch.randn_like(label), torch.randn_like(label)
    batch = {"label": label, "unknown": torch.zeros_like(label), "region": torch.zeros_like(label),
             "tumor_volumes_mm3": torch.zeros(2, 3), "tumor_diameters_mm": torch.zeros(2, 3)}
    plain = ReportSupervisedLoss((4.0, 4.0, 4.0), report_weight=0.0)(final, aux, batch)
    weighted = ReportSupervisedLoss((4.0, 4.0, 4.0), report_weight=0.0, organ_bce_weight=0.5,
                                    lesion_organs=ORGANS)(final, aux, batch)
    known = torch.ones_like(label)
    both_heads = organ_balanced_bce(final, label, known, ORGANS) + organ_balanced_bce(aux, label, known, ORGANS)
    extra = 0.5 * 0.5 * both_heads
    assert float(weighted["total"] - plain["total"]) == pytest.approx(float(extra), rel=1e-5)
    with pytest.raises(ValueError, match="lesion_organs"):
        ReportSupervisedLoss((4.0, 4.0, 4.0), organ_bce_weight=1.0)


def test_demo_plan_passes_the_weight_to_every_training_run(tmp_path) -> None:
    plan = DemoPlan(out=tmp_path, lesion_organ_bce=1.0)
    stage1 = plan.train_config("stage1", 1, 10, None, 0.0)
    arm = plan.train_config("masks-only", 2, 10, tmp_path / "stage1.pt", 0.0)
    assert stage1.lesion_organ_bce == arm.lesion_organ_bce == 1.0
    assert DemoPlan(out=tmp_path).train_config("stage1", 1, 10, None, 0.0).lesion_organ_bce == 0.0


def test_lesion_organ_channels_keeps_only_the_chosen_organs() -> None:
    names = ["liver", "kidney_left", "kidney_right", "pancreas", "pancreatic_lesion", "kidney_lesion", "liver_lesion"]
    assert lesion_organ_channels(names, ["kidney", "pancreas"]) == {4: [3], 5: [1, 2]}
    assert lesion_organ_channels(names, []) == {}


def test_organ_selection_reaches_the_training_config_and_is_validated(tmp_path) -> None:
    plan = DemoPlan(out=tmp_path, lesion_organ_bce=1.0, lesion_organ_bce_organs=("kidney", "pancreas"))
    assert plan.train_config("stage1", 1, 10, None, 0.0).lesion_organ_bce_organs == ["kidney", "pancreas"]
    assert DemoPlan(out=tmp_path).train_config("stage1", 1, 10, None, 0.0).lesion_organ_bce_organs is None
    with pytest.raises(ValueError, match="lesion_organ_bce_organs: organ .brain."):
        TrainConfig(lesion_organ_bce_organs=["brain"])


def test_config_rejects_an_organ_bce_with_no_channel_to_act_on() -> None:
    with pytest.raises(ValueError, match="no output channel pairs a lesion of \\['spleen'\\]"):
        TrainConfig(lesion_organ_bce=1.0, lesion_organ_bce_organs=["spleen"])  # spleen is not a target organ
    assert TrainConfig(lesion_organ_bce=0.0, lesion_organ_bce_organs=["spleen"]).lesion_organ_bce_organs == ["spleen"]
