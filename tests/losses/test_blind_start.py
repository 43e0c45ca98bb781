"""Blind start of the Ball Loss: darkness ranks, the per-sample decision, where the balls land, skipped samples."""

from __future__ import annotations

import math

import pytest
import torch

from rsuper.losses import ReportSupervisedLoss, report_region
from rsuper.losses.ball import ball_loss_in_region, ball_pseudo_labels
from rsuper.losses.blind_start import blind_start, darkness_rank
from rsuper.losses.combine import BallLossOptions
from rsuper.losses.segmentation import known_mask

SPACING = (2.0, 2.0, 4.0)  # anisotropic on purpose: sizes stay in mm
SHAPE = (32, 32, 16)
DARK_CENTRE_MM = (42.0, 22.0, 30.0)
DIAMETER_MM = 12.0


def _phantom() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, group, dark ball) of one sample, (X, Y, Z): a 40 HU organ box holding a 12 mm ball at -40 HU and a
    brighter 60 HU corner; outside the organ -100 HU fat (darker than the tumor, but outside the group)."""
    axes = [(torch.arange(n) + 0.5) * s for n, s in zip(SHAPE, SPACING)]
    gx, gy, gz = torch.meshgrid(*axes, indexing="ij")
    group = torch.zeros(SHAPE, dtype=torch.bool)
    group[4:28, 4:28, 2:14] = True
    r2 = sum((g - c) ** 2 for g, c in zip((gx, gy, gz), DARK_CENTRE_MM))
    ball = (r2 <= (DIAMETER_MM / 2) ** 2) & group
    image = torch.full(SHAPE, -100.0)
    image[group] = 40.0
    image[4:10, 4:10, 2:6] = 60.0
    image[ball] = -40.0
    return image, group, ball


def test_darkness_rank_orders_the_group_and_is_zero_outside() -> None:
    image = torch.tensor([[[[5.0, 1.0, 3.0, -9.0]]]])  # (1, 1, 1, 4)
    group = torch.tensor([[[[True, True, True, False]]]])
    rank = darkness_rank(image, group)
    assert rank.flatten().tolist() == [0.0, 1.0, 0.5, 0.0]  # darkest group voxel 1, brightest 0, outside 0
    assert darkness_rank(image, torch.zeros_like(group)).abs().sum() == 0
    assert darkness_rank(image * 7 + 100, group).equal(rank)  # any monotonic intensity scale
    tied = darkness_rank(torch.tensor([[[[2.0, 2.0, 1.0, 2.0]]]]), torch.ones((1, 1, 1, 4), dtype=torch.bool))
    assert tied.flatten().tolist() == pytest.approx([1 / 3, 1 / 3, 1.0, 1 / 3])  # ties share their mean rank: no place preferred
    with pytest.raises(ValueError, match="both be"):
        darkness_rank(image[0], group)


def test_blind_start_decides_per_sample() -> None:
    image, group, _ = _phantom()
    dilated = report_region(group[None, None].float(), SPACING).dilated[0]
    seeing = torch.full(SHAPE, 0.01)
    seeing[10, 10, 8] = 0.6  # one voxel above the floor inside R: the paper's search
    blind = torch.full(SHAPE, 0.01)
    prob = torch.stack([seeing, blind, blind])
    start = blind_start(prob, torch.stack([dilated] * 3), torch.stack([group] * 3), torch.stack([image] * 3),
                        torch.tensor([True, True, False]), floor=0.5)
    assert start.blind.tolist() == [False, True, True]
    assert start.skip.tolist() == [False, False, True]  # blind and not called hypoattenuating: no Ball Loss
    assert start.search[0].equal(seeing) and start.search[2].equal(blind)
    assert start.search[1].equal(darkness_rank(image[None], group[None])[0])
    no_region = blind_start(prob[:1], torch.zeros_like(dilated)[None], group[None], image[None], torch.tensor([True]),
                            floor=0.5)
    assert not no_region.blind.any() and not no_region.skip.any()
    with pytest.raises(ValueError, match="floor"):
        blind_start(prob, dilated[None], group[None], image[None], torch.tensor([True]), floor=0.0)


def test_a_blind_channel_places_the_ball_on_the_dark_tumor_not_elsewhere() -> None:
    image, group, ball = _phantom()
    dilated = report_region(group[None, None].float(), SPACING).dilated
    blind = torch.full((1, *SHAPE), 0.02)
    blind[0, 6:12, 20:26, 2:6] = 0.05  # the blind network's faint, wrong preference
    volume = math.pi * DIAMETER_MM**3 / 6
    sizes = (torch.tensor([[DIAMETER_MM]]), torch.tensor([[volume]]))
    paper = ball_pseudo_labels(blind, dilated, *sizes, SPACING)
    start = blind_start(blind, dilated, group[None], image[None], torch.tensor([True]), floor=0.5)
    dark = ball_pseudo_labels(blind, dilated, *sizes, SPACING, search=start.search)
    precision = lambda labels: float((labels.positive[0] & ball).sum() / labels.positive.sum())  # noqa: E731
    assert precision(paper) < 0.1
    assert precision(dark) > 0.9
    n_voxels = math.floor(volume / (2 * 2 * 4) + 0.5)  # the reported volume in voxels of 2 x 2 x 4 mm
    assert int(dark.positive.sum()) == math.floor(0.8 * n_voxels + 0.5)  # P = (1 - m) N: the size in mm is kept
    with pytest.raises(ValueError, match="shape of prob"):
        ball_pseudo_labels(blind, dilated, *sizes, SPACING, search=start.search[0])


def test_skipped_samples_get_no_ball_loss_and_seeing_samples_are_unchanged() -> None:
    image, group, _ = _phantom()
    channels = 2
    region = torch.zeros((2, channels, *SHAPE))
    region[:, 1] = group.float()
    region_facts = report_region(region, SPACING)
    known = known_mask(torch.zeros_like(region), SPACING)
    sizes = (torch.tensor([[DIAMETER_MM]] * 2), torch.tensor([[math.pi * DIAMETER_MM**3 / 6]] * 2))
    logits = torch.full((2, channels, *SHAPE), -4.0)
    logits[0, 1, 10:14, 10:14, 6:9] = 3.0  # sample 0 sees a tumor; sample 1 is blind
    logits.requires_grad_(True)
    images = torch.stack([image, image])[:, None]
    common = dict(blind_floor=0.5, image=images)
    paper = ball_loss_in_region(logits[:1], report_region(region[:1], SPACING), known[:1], sizes[0][:1],
                                sizes[1][:1], SPACING)
    gated = ball_loss_in_region(logits[:1], report_region(region[:1], SPACING), known[:1], sizes[0][:1],
                                sizes[1][:1], SPACING, blind_floor=0.5, image=images[:1],
                                hypoattenuating=torch.tensor([False]))
    assert torch.allclose(paper, gated)  # a seeing sample keeps the paper's search, hypoattenuating or not
    loss = ball_loss_in_region(logits, region_facts, known, *sizes, SPACING, hypoattenuating=torch.tensor([True, False]),
                               **common)
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad[1].abs().sum() == 0 and grad[0].abs().sum() > 0  # the blind, non-hypo sample is skipped
    only_skipped = ball_loss_in_region(logits[1:], report_region(region[1:], SPACING), known[1:], sizes[0][1:],
                                       sizes[1][1:], SPACING, blind_floor=0.5, image=images[1:],
                                       hypoattenuating=torch.tensor([False]))
    assert float(only_skipped.detach()) == 0.0
    with pytest.raises(ValueError, match="needs the image"):
        ball_loss_in_region(logits, region_facts, known, *sizes, SPACING, blind_floor=0.5)


def test_report_supervised_loss_asks_for_the_blind_start_keys() -> None:
    loss_fn = ReportSupervisedLoss(spacing_mm=SPACING, ball=BallLossOptions(blind_floor=0.5))
    logits = torch.zeros((1, 2, *SHAPE))
    batch = {"label": logits, "unknown": logits, "region": logits, "tumor_volumes_mm3": torch.zeros(1, 1),
             "tumor_diameters_mm": torch.zeros(1, 1)}
    with pytest.raises(KeyError, match="tumor_hypoattenuating"):
        loss_fn(logits, logits, batch)
    out = loss_fn(logits, logits, {**batch, "image": logits[:, :1], "tumor_hypoattenuating": torch.tensor([True])})
    assert torch.isfinite(out["total"])
    with pytest.raises(ValueError, match="blind_floor"):
        BallLossOptions(blind_floor=1.5)


def test_blind_weight_scales_only_the_samples_darkness_placed() -> None:
    image, group, _ = _phantom()
    region = torch.zeros((2, 1, *SHAPE))
    region[:, 0] = group.float()
    known = known_mask(torch.zeros_like(region), SPACING)
    sizes = (torch.tensor([[DIAMETER_MM]] * 2), torch.tensor([[math.pi * DIAMETER_MM**3 / 6]] * 2))
    logits = torch.full((2, 1, *SHAPE), -4.0)
    logits[0, 0, 10:14, 10:14, 6:9] = 3.0  # sample 0 sees a tumor, sample 1 is blind (and hypoattenuating)
    images = torch.stack([image, image])[:, None]

    def loss(index: slice, weight: float) -> float:
        return float(ball_loss_in_region(logits[index], report_region(region[index], SPACING), known[index],
                                         sizes[0][index], sizes[1][index], SPACING, blind_floor=0.5,
                                         image=images[index], hypoattenuating=torch.tensor([True, True])[index],
                                         blind_weight=weight))

    seeing, blind = slice(0, 1), slice(1, 2)
    assert loss(seeing, 10.0) == pytest.approx(loss(seeing, 1.0))
    assert loss(blind, 10.0) == pytest.approx(10 * loss(blind, 1.0))
    assert loss(slice(0, 2), 10.0) == pytest.approx((loss(seeing, 1.0) + 10 * loss(blind, 1.0)) / 2)
