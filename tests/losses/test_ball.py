"""Ball Loss: pseudo-label construction (centre, sizes, no sharing, modes), reductions and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rsuper.losses import (
    ReportSupervisedLoss,
    ball_loss,
    ball_pseudo_labels,
    ball_voxel_count,
    known_mask,
    rank_weights,
    report_region,
    volume_loss,
)

ISO = (1.0, 1.0, 1.0)


def _blob_logits(shape: tuple[int, int, int], centre_mm: tuple[float, ...], radius_mm: float, spacing) -> torch.Tensor:
    """Logits of a smooth physical blob: > 0 within radius_mm of centre_mm (voxel centres at (i + 0.5) s)."""
    axes = [(torch.arange(n) + 0.5) * s for n, s in zip(shape, spacing)]
    gx, gy, gz = torch.meshgrid(*axes, indexing="ij")
    r2 = (gx - centre_mm[0]) ** 2 + (gy - centre_mm[1]) ** 2 + (gz - centre_mm[2]) ** 2
    return 6.0 * (1.0 - r2 / radius_mm**2)


def _box_region(shape: tuple[int, int, int], lo_mm: float, hi_mm: float, spacing) -> torch.Tensor:
    region = torch.zeros(shape)
    lo = [round(lo_mm / s) for s in spacing]
    hi = [round(hi_mm / s) for s in spacing]
    region[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return region


def _labels(prob, region, diameters, volumes, spacing=ISO, **kwargs):
    dilated = report_region(region[:, None], spacing).dilated
    return ball_pseudo_labels(prob, dilated, torch.tensor(diameters), torch.tensor(volumes), spacing, **kwargs)


def test_planted_blob_is_found_and_positives_have_the_reported_size() -> None:
    shape = (40, 40, 40)
    prob = torch.sigmoid(_blob_logits(shape, (25.5, 15.5, 20.5), 4.0, ISO))[None]
    region = _box_region(shape, 8, 32, ISO)[None]
    volume = math.pi * 8**3 / 6
    labels = _labels(prob, region, [[8.0, 0.0]], [[volume, 0.0]], margin=0.2)
    assert labels.centres_vox == [[(25, 15, 20)]]
    n = round(volume)  # 268 voxels < |enlarged ball|, so N' = N
    assert int(labels.positive.sum()) == round(0.8 * n)
    assert int(labels.extended.sum()) == round(1.2 * n)
    idx = labels.positive[0].nonzero().float()
    assert float((idx - torch.tensor([25.0, 15.0, 20.0])).norm(dim=1).max()) <= 1.2 * 8 / 2
    assert bool(labels.extended[labels.positive].all())  # P is inside E
    assert bool((labels.background_zone >= labels.extended).all())


def test_two_tumors_never_share_voxels_and_largest_goes_first() -> None:
    shape = (40, 40, 40)
    prob = torch.sigmoid(_blob_logits(shape, (20.5, 20.5, 20.5), 5.0, ISO))[None]
    region = _box_region(shape, 6, 34, ISO)[None]
    # two reported tumors, the smaller listed first; only one blob: the second must take other voxels
    labels = _labels(prob, region, [[6.0, 10.0]], [[100.0, 400.0]])
    assert int(labels.positive.sum()) == round(0.8 * 100) + round(0.8 * 400)  # disjoint P_t
    assert round(0.8 * 100) + round(1.2 * 400) <= int(labels.extended.sum()) <= round(1.2 * 100) + round(1.2 * 400)
    assert labels.centres_vox[0][0] == (20, 20, 20)  # the 400 mm^3 tumor took the blob


def test_rsuper_code_mode_uses_the_ball_of_the_diameter() -> None:
    shape = (40, 40, 40)
    prob = torch.sigmoid(_blob_logits(shape, (20.5, 20.5, 20.5), 5.0, ISO))[None]
    region = _box_region(shape, 6, 34, ISO)[None]
    report = _labels(prob, region, [[10.0]], [[50.0]])
    code = _labels(prob, region, [[10.0]], [[50.0]], volume_mode="rsuper_code")
    assert int(report.positive.sum()) == round(0.8 * 50)
    assert int(code.positive.sum()) == round(0.8 * (ball_voxel_count(10.0, ISO) - 1))
    with pytest.raises(ValueError, match="volume_mode"):
        _labels(prob, region, [[10.0]], [[50.0]], volume_mode="sphere")


def test_positives_are_clipped_to_the_enlarged_ball_inside_the_region() -> None:
    shape = (30, 30, 30)
    prob = torch.full((1, *shape), 0.9)
    region = _box_region(shape, 5, 25, ISO)[None]
    labels = _labels(prob, region, [[6.0]], [[5000.0]])  # far more volume than the 7.2 mm ball holds
    n_ball = ball_voxel_count(7.2, ISO)
    assert int(labels.positive.sum()) == round(0.8 * n_ball)
    assert int(labels.extended.sum()) == n_ball


def test_same_physical_scene_at_1_and_2_mm() -> None:
    results = []
    for s in (1.0, 2.0):
        spacing = (s, s, s)
        shape = (round(64 / s),) * 3
        prob = torch.sigmoid(_blob_logits(shape, (30.0, 36.0, 28.0), 7.0, spacing))[None]
        region = _box_region(shape, 12, 52, spacing)[None]
        labels = _labels(prob, region, [[12.0]], [[math.pi * 12**3 / 6]], spacing)
        centre_mm = torch.tensor([(c + 0.5) * s for c in labels.centres_vox[0][0]])
        logits = torch.logit(prob)[:, None]
        vol_loss = float(volume_loss(logits, region[:, None], torch.tensor([[3000.0]]), spacing))
        results.append((float(labels.positive.sum()) * s**3, centre_mm, vol_loss))
    (vol1, c1, loss1), (vol2, c2, loss2) = results
    assert abs(vol1 - vol2) <= 0.1 * vol1
    assert loss1 > 0.1 and abs(loss1 - loss2) < 0.02
    assert bool(((c1 - c2).abs() <= 2.0).all())
    assert bool(((c1 - torch.tensor([30.0, 36.0, 28.0])).abs() <= 1.0).all())


def test_anisotropic_spacing_finds_the_centre() -> None:
    spacing = (1.0, 1.0, 3.0)
    shape = (40, 40, 14)
    prob = torch.sigmoid(_blob_logits(shape, (18.5, 22.5, 19.5), 6.0, spacing))[None]
    region = _box_region(shape, 6, 36, spacing)[None]
    volume = math.pi * 10**3 / 6
    labels = _labels(prob, region, [[10.0]], [[volume]], spacing)
    assert labels.centres_vox == [[(18, 22, 6)]]
    assert int(labels.positive.sum()) == round(0.8 * round(volume / 3.0))
    extent = labels.positive[0].nonzero()
    assert int(extent[:, 2].max() - extent[:, 2].min()) <= 3 < int(extent[:, 0].max() - extent[:, 0].min())


def test_rank_weights_have_mean_one_and_favour_confident_voxels() -> None:
    prob = torch.rand(1, 6, 6, 6)
    positive = prob > 0.5
    weights = rank_weights(prob, positive)
    w = weights[positive]
    assert float(w.mean()) == pytest.approx(1.0, rel=1e-5)
    assert float(weights[positive][prob[positive].argmax()]) == pytest.approx(float(w.max()))
    assert float(w.max() / w.min()) == pytest.approx(2 ** (1 - 1 / w.numel()), rel=1e-4)
    assert bool((weights[~positive] == 1).all())


def _report_batch():
    """Sample 0: region in channel 1 with a blob; unknown = region + a far unknown sub-segment."""
    shape = (40, 40, 40)
    logits = torch.full((2, 2, *shape), -3.0)
    logits[0, 1] = _blob_logits(shape, (20.5, 20.5, 20.5), 4.0, ISO).clamp(min=-3.0)
    region = torch.zeros_like(logits)
    region[0, 1] = _box_region(shape, 14, 26, ISO)
    unknown = region.clone()
    unknown[0, 1, 36:, 36:, 36:] = 1  # another tumor-bearing sub-segment, outside R
    unknown[1, 1, :5] = 1
    diameters = torch.tensor([[8.0, 0.0], [0.0, 0.0]])
    volumes = torch.tensor([[268.0, 0.0], [0.0, 0.0]])
    return logits, region, unknown, diameters, volumes


def test_gradient_finite_nonzero_on_pseudo_tumor_and_region_zero_on_unknown() -> None:
    logits, region, unknown, diameters, volumes = _report_batch()
    logits.requires_grad_(True)
    loss = ball_loss(logits, region, unknown, diameters, volumes, ISO, rank_weighted=True, lesion_channels=[1])
    loss.backward()
    grad = logits.grad
    assert bool(torch.isfinite(grad).all())
    dilated = report_region(region, ISO).dilated[0] > 0
    labels = ball_pseudo_labels(torch.sigmoid(logits[:, 1]).detach(), report_region(region, ISO).dilated, diameters, volumes, ISO)
    assert bool((grad[0, 1][labels.positive[0]] < 0).all())  # push pseudo-tumor up
    far_background = dilated & ~labels.background_zone[0]
    assert bool((grad[0, 1][far_background] > 0).all())  # the rest of the region down, unknown or not
    border = labels.background_zone[0] & ~labels.positive[0]
    assert float(grad[0, 1][border].abs().max()) == 0.0
    assert not bool(dilated[36:, 36:, 36:].any())
    assert float(grad[0, 1, 36:, 36:, 36:].abs().max()) == 0.0  # unknown outside R
    assert float(grad[1, 1, :5].abs().max()) == 0.0
    assert float(grad[:, 0].abs().max()) == 0.0  # channels that are not lesion channels


def test_sample_without_region_gets_only_background_bce_on_known_voxels() -> None:
    logits, region, unknown, diameters, volumes = _report_batch()
    no_region = ball_loss(logits[1:], region[1:], unknown[1:], diameters[1:], volumes[1:], ISO, lesion_channels=[1])
    known = known_mask(unknown[1:], ISO)[:, 1]
    expected = (F.softplus(logits[1:, 1]) * known).sum() / known.sum()
    assert float(no_region) == pytest.approx(float(expected), rel=1e-5)
    silent = ball_loss(logits[1:], region[1:], unknown[1:], diameters[1:], volumes[1:], ISO)
    assert float(silent) == 0.0
    target = torch.zeros_like(logits[1:])
    target[0, 1, 20:25, 20:25, 20:25] = 1
    without_positives = ball_loss(
        logits[1:], region[1:], unknown[1:], diameters[1:], volumes[1:], ISO, lesion_channels=[1], target=target
    )
    kept = known * (1 - target[:, 1])
    expected = (F.softplus(logits[1:, 1]) * kept).sum() / kept.sum()
    assert float(without_positives) == pytest.approx(float(expected), rel=1e-5)


def test_bfloat16_logits_run_in_float32() -> None:
    logits, region, unknown, diameters, volumes = _report_batch()
    logits = logits.to(torch.bfloat16).requires_grad_(True)
    loss = ball_loss(logits, region, unknown, diameters, volumes, ISO)
    assert loss.dtype == torch.float32 and math.isfinite(float(loss.detach()))
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16 and bool(torch.isfinite(logits.grad.float()).all())


def _adjacent_groups() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A body region (20 x 10 x 16 voxels at 1 mm) next to an unknown-size head of the same size (channel 0)."""
    shape = (1, 1, 48, 12, 16)
    region, unknown, head = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape, dtype=torch.bool)
    region[0, 0, 24:44, 1:11] = 1  # the chosen group (tumor of known size)
    head[0, 0, 4:24, 1:11] = True  # the neighbouring group: a tumor of unknown size
    unknown[0, 0][head[0, 0] | (region[0, 0] > 0)] = 1  # both tumor-bearing groups are unknown
    return region, unknown, head


def test_ball_loss_never_pushes_a_neighbouring_unknown_group_toward_background() -> None:
    region, unknown, head = _adjacent_groups()
    logits = torch.zeros(region.shape, requires_grad=True)
    loss = ball_loss(logits, region, unknown, torch.tensor([[8.0]]), torch.tensor([[268.0]]), (1.0, 1.0, 1.0))
    loss.backward()
    touched = (logits.grad[head] != 0).sum().item()
    assert touched == 0, f"{touched} of {int(head.sum())} voxels of the unknown head got a gradient"


def test_volume_loss_does_not_count_a_neighbouring_unknown_group() -> None:
    region, unknown, head = _adjacent_groups()
    aux = torch.zeros(region.shape, requires_grad=True)
    batch = {"label": torch.zeros(region.shape), "unknown": unknown, "region": region,
             "tumor_volumes_mm3": torch.tensor([[268.0]]), "tumor_diameters_mm": torch.tensor([[8.0]])}
    terms = ReportSupervisedLoss(spacing_mm=(1.0, 1.0, 1.0), report_weight=0.1)(torch.zeros(region.shape), aux, batch)
    terms["volume"].backward()
    touched = (aux.grad[head] != 0).sum().item()
    assert touched == 0, f"the Volume Loss counts {touched} voxels of the unknown head"
    alone = volume_loss(aux, region, batch["tumor_volumes_mm3"], (1.0, 1.0, 1.0), unknown=unknown)
    assert alone.item() == pytest.approx(terms["volume"].item())
