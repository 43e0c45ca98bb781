"""Geometry of rsuper.losses: discrete balls in mm, exact dilation, exact FFT ball sums."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from rsuper.losses import ball_voxel_count, dilate_mm, ellipsoid_kernel, fft_ball_sum, voxel_volume_mm3
from rsuper.reports.schema import volume_from_diameters


@pytest.mark.parametrize(
    ("diameter", "count"), [(3, 19), (5, 81), (7, 179), (9, 389), (11, 739), (15, 1791), (21, 4945), (31, 15515)]
)
def test_discrete_ball_counts_match_method_reference(diameter: int, count: int) -> None:
    assert ball_voxel_count(diameter, (1.0, 1.0, 1.0)) == count


def test_method_reference_volumes_from_diameters() -> None:
    assert volume_from_diameters([11, 10]) == pytest.approx(604.8, abs=0.05)
    assert volume_from_diameters([20]) == pytest.approx(4188.8, abs=0.05)
    assert volume_from_diameters([40, 30, 30]) == pytest.approx(18849.6, abs=0.05)


def test_ball_is_an_ellipsoid_in_voxels_with_anisotropic_spacing() -> None:
    kernel = ellipsoid_kernel(10.0, (1.0, 1.0, 3.0))
    assert kernel.shape == (11, 11, 3)
    assert bool(kernel[5, 5, 0]) and bool(kernel[0, 5, 1]) and not bool(kernel[0, 5, 0])
    # ~ the physical ball volume, in 1 x 1 x 3 mm voxels
    assert abs(int(kernel.sum()) * voxel_volume_mm3((1.0, 1.0, 3.0)) - np.pi * 10**3 / 6) < 0.1 * np.pi * 10**3 / 6
    one = torch.zeros(1, 1, 21, 21, 9)
    one[0, 0, 10, 10, 4] = 1
    grown = dilate_mm(one, 5.0, (1.0, 1.0, 3.0))[0, 0]
    assert torch.equal(grown[10:11, 10:11, :].flatten().nonzero().flatten(), torch.tensor([3, 4, 5]))
    assert torch.equal(grown[:, 10, 4].nonzero().flatten(), torch.arange(5, 16))


@pytest.mark.parametrize(
    ("radius", "spacing"), [(2.5, (1.0, 1.0, 1.0)), (3.5, (1.0, 1.0, 3.0)), (15.0, (2.0, 2.0, 2.0)), (7.0, (0.8, 1.3, 2.1))]
)
def test_dilation_is_exact(radius: float, spacing: tuple[float, float, float]) -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((2, 2, 30, 33, 24)) > 0.997
    mask[1, 1] = True  # a full volume and
    mask[1, 0] = False  # an empty one take the shortcut
    got = dilate_mm(torch.from_numpy(mask), radius, spacing).numpy()
    structure = ellipsoid_kernel(2 * radius, spacing).numpy()
    expected = np.stack([np.stack([ndi.binary_dilation(m, structure) for m in sample]) for sample in mask])
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, expected)


def test_fft_ball_sum_equals_direct_convolution() -> None:
    torch.manual_seed(0)
    volume = torch.rand(2, 17, 20, 15)
    kernel = ellipsoid_kernel(7.0, (1.0, 1.5, 1.0))
    direct = F.conv3d(volume.unsqueeze(1), kernel.float()[None, None], padding=tuple(k // 2 for k in kernel.shape))
    torch.testing.assert_close(fft_ball_sum(volume, kernel), direct[:, 0], atol=1e-4, rtol=1e-5)


def test_bad_spacing_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="spacing_mm"):
        ellipsoid_kernel(5.0, (1.0, 0.0, 1.0))


def test_dilate_mm_respects_anisotropic_spacing() -> None:
    mask = np.zeros((21, 21, 21), bool)
    mask[10, 10, 10] = True
    grown = dilate_mm(torch.from_numpy(mask), 3.0, (1.0, 1.0, 3.0)).numpy()
    assert grown[:, 10, 10].sum() == 7 and grown[10, 10, :].sum() == 3
