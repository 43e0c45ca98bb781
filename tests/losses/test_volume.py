"""Volume Loss: docs/method.md §10 reference values, mm^3 physics, reduction over samples with a region."""

from __future__ import annotations

import math

import pytest
import torch

from rsuper.losses import VolumeLoss, volume_loss, volume_loss_from_mm3


def _loss(x: list[float], y: float, tolerance: float) -> list[float]:
    values = volume_loss_from_mm3(torch.tensor(x), torch.full((len(x),), y), tolerance=tolerance)
    return [round(v, 4) for v in values.tolist()]


def test_reference_values_tau_0_2() -> None:
    assert _loss([0, 500, 800, 1000, 1238, 1500, 2000, 5000], 1000, 0.2) == pytest.approx(
        [0.5797, 0.1630, 0, 0, 0, 0.0797, 0.1988, 0.5284], abs=1e-4
    )
    assert _loss([0, 40, 60, 80, 100, 200, 1000], 80, 0.2) == pytest.approx(
        [0.1379, 0.0645, 0.0312, 0, 0.0294, 0.1538, 0.5823], abs=1e-4
    )


def test_reference_check_tau_0_1() -> None:
    values = _loss([0, 5000, 900, 1000, 1100, 1115], 1000, 0.1)
    assert values[0] == pytest.approx(0.625, abs=1e-3)
    assert values[1] == pytest.approx(0.574, abs=1e-3)
    assert values[2:5] == [0, 0, 0]
    assert values[5] > 0  # the upper edge of the band is ~1109 mm^3


def _scene(spacing: float, logit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A 40 mm cube patch, region = the cube [5, 35) mm in channel 1 of 2."""
    n = round(40 / spacing)
    logits = torch.full((1, 2, n, n, n), logit)
    region = torch.zeros_like(logits)
    lo, hi = round(5 / spacing), round(35 / spacing)
    region[0, 1, lo:hi, lo:hi, lo:hi] = 1
    return logits, region


def test_predicted_volume_is_in_mm3_inside_the_dilated_region() -> None:
    logits, region = _scene(2.0, 0.0)  # p = 0.5 everywhere; R = whole 40 mm patch (15 mm dilation)
    x = 0.5 * 40**3
    y = 2000.0
    expected = abs(x - y) / (x + y + 500) - abs(0.9 * y - y) / (0.9 * y + y + 500)
    got = volume_loss(logits, region, torch.tensor([[1500.0, 500.0, 0.0]]), (2.0, 2.0, 2.0))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(VolumeLoss((2.0, 2.0, 2.0))(logits, region, torch.tensor([[2000.0]]))) == pytest.approx(expected, rel=1e-5)


def test_same_scene_at_1_and_2_mm_gives_the_same_loss() -> None:
    values = []
    for spacing in (1.0, 2.0):
        logits, region = _scene(spacing, -3.0)
        values.append(float(volume_loss(logits, region, torch.tensor([[500.0]]), (spacing,) * 3)))
    assert values[0] > 0.1
    assert abs(values[0] - values[1]) < 0.02


def test_mean_over_samples_with_a_region_and_gradient() -> None:
    logits, region = _scene(2.0, -6.0)  # x ~ 160 mm^3 < y
    single = volume_loss(logits, region, torch.tensor([[800.0]]), (2.0, 2.0, 2.0))
    batch_logits = torch.cat([logits, torch.randn_like(logits)]).requires_grad_(True)
    batch_region = torch.cat([region, torch.zeros_like(region)])
    both = volume_loss(batch_logits, batch_region, torch.tensor([[800.0], [0.0]]), (2.0, 2.0, 2.0))
    assert float(both.detach()) == pytest.approx(float(single), rel=1e-6)
    both.backward()
    grad = batch_logits.grad
    assert grad is not None and bool(torch.isfinite(grad).all())
    assert float(grad[1].abs().sum()) == 0.0 and float(grad[0, 0].abs().sum()) == 0.0
    assert bool((grad[0, 1] < 0).all())  # too little predicted volume: every voxel of R should go up


def test_no_region_gives_an_attached_zero() -> None:
    logits = torch.randn(2, 1, 8, 8, 8, requires_grad=True)
    loss = volume_loss(logits, torch.zeros_like(logits), torch.zeros(2, 1), (1.0, 1.0, 1.0))
    loss.backward()
    assert float(loss.detach()) == 0.0 and not math.isnan(float(logits.grad.sum()))
