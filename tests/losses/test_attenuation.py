"""The hypoattenuation prior of the Ball Loss search (rsuper.losses.attenuation, ball_pseudo_labels)."""

from __future__ import annotations

import math

import pytest
import torch

from rsuper.losses import ReportSupervisedLoss, ball_pseudo_labels, darkness_rank, report_region

ISO = (1.0, 1.0, 1.0)
SHAPE = (40, 40, 40)


def _ball(centre: tuple[int, int, int], radius: float) -> torch.Tensor:
    gx, gy, gz = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in SHAPE], indexing="ij")
    return (gx - centre[0]) ** 2 + (gy - centre[1]) ** 2 + (gz - centre[2]) ** 2 <= radius**2


def _scene(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, group, tumor): a noisy organ box of 100 HU with a 10 mm tumor at 10 HU off its centre."""
    gen = torch.Generator().manual_seed(seed)
    group = torch.zeros(SHAPE, dtype=torch.bool)
    group[8:32, 8:32, 8:32] = True
    tumor = _ball((13, 26, 14), 5.0)
    image = torch.full(SHAPE, -100.0) + 10.0 * torch.randn(SHAPE, generator=gen)
    image[group] = 100.0 + 10.0 * torch.randn(int(group.sum()), generator=gen)
    image[tumor] = 10.0 + 10.0 * torch.randn(int(tumor.sum()), generator=gen)
    return image, group, tumor


def test_darkness_rank_orders_the_group_and_ignores_the_rest() -> None:
    image = torch.tensor([[5.0, -3.0, 7.0, -50.0]]).view(1, 4, 1, 1)
    group = torch.tensor([[True, True, True, False]]).view(1, 4, 1, 1)
    prior = darkness_rank(image, group).flatten().tolist()
    assert prior == [0.5, 1.0, 0.0, 0.0]  # darkest group voxel 1, brightest 0; the darker outsider stays 0
    assert torch.equal(darkness_rank(2.0 * image + 7.0, group), darkness_rank(image, group))  # any window
    assert float(darkness_rank(image, torch.zeros_like(group)).abs().sum()) == 0.0
    with pytest.raises(ValueError, match="both be"):
        darkness_rank(image[0], group)


def _pseudo_labels(prob: torch.Tensor, group: torch.Tensor, image: torch.Tensor, hypo: float, weight: float):
    volume = math.pi * 10.0**3 / 6
    dilated = report_region(group[None, None].float(), ISO).dilated
    prior = darkness_rank(image[None], group[None])
    return ball_pseudo_labels(prob[None], dilated, torch.tensor([[10.0]]), torch.tensor([[volume]]), ISO,
                              prior=prior, prior_tumors=torch.tensor([[hypo]]), prior_weight=weight)


def _precision(positive: torch.Tensor, tumor: torch.Tensor) -> float:
    return float((positive[0] & tumor).sum()) / float(positive.sum())


def test_a_blind_network_finds_a_hypoattenuating_tumor_through_the_prior() -> None:
    image, group, tumor = _scene()
    blind = torch.where(_ball((26, 13, 26), 5.0), 0.02, 1e-4)  # a faint false blob, nothing on the tumor
    with_prior = _pseudo_labels(blind, group, image, hypo=1.0, weight=1.0)
    assert _precision(with_prior.positive, tumor) > 0.9
    without = _pseudo_labels(blind, group, image, hypo=1.0, weight=0.0)  # METHOD.md: q alone
    assert _precision(without.positive, tumor) < 0.1
    not_hypo = _pseudo_labels(blind, group, image, hypo=0.0, weight=1.0)  # the report did not say "hypo"
    assert torch.equal(not_hypo.positive, without.positive)
    assert float(with_prior.confidence) < 0.01  # the confidence stays the network's mean probability


def test_a_confident_network_outweighs_the_prior() -> None:
    """The network sees a tumor elsewhere in the group: at weight 1 its ball wins over the darkest one."""
    image, group, tumor = _scene()
    seen = _ball((26, 13, 26), 5.0)
    prob = torch.where(seen, 0.95, 1e-4)
    labels = _pseudo_labels(prob, group, image, hypo=1.0, weight=1.0)
    assert _precision(labels.positive, seen) > 0.9


def test_report_supervised_loss_uses_the_prior_and_asks_for_its_inputs() -> None:
    image, group, tumor = _scene()
    region = torch.zeros(1, 2, *SHAPE)
    region[0, 1][group] = 1
    batch = {
        "label": torch.zeros(1, 2, *SHAPE), "unknown": region.clone(), "region": region,
        "tumor_volumes_mm3": torch.tensor([[math.pi * 1000 / 6]]), "tumor_diameters_mm": torch.tensor([[10.0]]),
    }
    final = torch.full((1, 2, *SHAPE), -9.0, requires_grad=True)  # a network that sees no tumor
    aux = torch.full((1, 2, *SHAPE), -9.0)  # the Volume Loss's output, not checked here
    loss_fn = ReportSupervisedLoss(ISO, ball_attenuation_weight=1.0)
    with pytest.raises(KeyError, match="tumor_hypoattenuating"):
        loss_fn(final, aux, batch)
    batch.update(image=image[None, None], tumor_hypoattenuating=torch.tensor([[1.0]]))
    loss_fn(final, aux, batch)["total"].backward()
    pulled_up = final.grad[0, 1] < 0  # gradient descent raises these logits: the Ball Loss pseudo-tumor
    assert float((pulled_up & tumor).sum()) / float(pulled_up.sum()) > 0.9
