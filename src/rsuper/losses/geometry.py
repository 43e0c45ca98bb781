"""Spacing-aware geometry shared by the losses: ellipsoid kernels in mm, exact dilation, fast ball sums.

Everything takes ``spacing_mm``, a 3-tuple in mm in the array's axis order (X, Y, Z). A "ball" of
diameter ``d`` mm is the set of voxels whose centre lies within ``d / 2`` mm (inclusive) of the ball's
centre voxel; with anisotropic spacing it is an ellipsoid in voxel space.

Ball sums and dilations are computed exactly with FFT convolution (``torch.fft.rfftn``), restricted to
the bounding box of the non-zero input plus the kernel's reach, so their cost does not grow with the
kernel size (a 40 mm ball at 1 mm spacing is a 41^3 kernel; direct ``conv3d`` would be ~70k MACs/voxel).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Spacing = Sequence[float]

_EPS_MM2 = 1e-6  # tolerance on squared mm distances, so that exact-boundary voxels count as inside


def check_spacing(spacing_mm: Spacing) -> tuple[float, float, float]:
    """Validate a spacing (3 positive floats, mm, array axis order) and return it as a tuple."""
    values = tuple(float(s) for s in spacing_mm)
    if len(values) != 3 or not all(s > 0 for s in values):
        raise ValueError(f"spacing_mm must be 3 positive floats in mm (array axis order), got {spacing_mm!r}")
    return values  # type: ignore[return-value]


def voxel_volume_mm3(spacing_mm: Spacing) -> float:
    """Volume of one voxel in mm^3."""
    sx, sy, sz = check_spacing(spacing_mm)
    return sx * sy * sz


def ellipsoid_kernel(diameter_mm: float, spacing_mm: Spacing, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ball of ``diameter_mm`` on a grid of ``spacing_mm``; shape (2hx+1, 2hy+1, 2hz+1).

    ``h_i = floor(d / 2 / s_i)``. A voxel at offset (i, j, k) is inside iff
    ``(i sx)^2 + (j sy)^2 + (k sz)^2 <= (d / 2)^2``. A diameter below one voxel gives the single centre voxel.

    Example:
        >>> int(ellipsoid_kernel(3.0, (1.0, 1.0, 1.0)).sum())
        19
    """
    spacing = check_spacing(spacing_mm)
    if diameter_mm < 0:
        raise ValueError(f"diameter_mm must be >= 0, got {diameter_mm!r}")
    radius = diameter_mm / 2.0
    half = [int(radius / s + 1e-9) for s in spacing]
    axes = [torch.arange(-h, h + 1, device=device, dtype=torch.float64) * s for h, s in zip(half, spacing)]
    gx, gy, gz = torch.meshgrid(*axes, indexing="ij")
    return gx**2 + gy**2 + gz**2 <= radius**2 + _EPS_MM2


def ball_voxel_count(diameter_mm: float, spacing_mm: Spacing) -> int:
    """Number of voxels of the discrete ball of ``diameter_mm`` (see :func:`ellipsoid_kernel`)."""
    return int(ellipsoid_kernel(diameter_mm, spacing_mm).sum())


def _fast_length(n: int) -> int:
    """Smallest integer >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def fft_ball_sum(volume: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Exact 'same'-size sum of ``volume`` over a centred symmetric ``kernel`` (zero outside the volume).

    Args:
        volume: (N, X, Y, Z) float tensor.
        kernel: (kx, ky, kz) boolean or float kernel with odd sizes, symmetric under point reflection
            (so convolution and correlation coincide).

    Returns:
        (N, X, Y, Z) float32 tensor: ``out[n, c] = sum_o kernel[o] * volume[n, c + o]``.
    """
    if volume.dim() != 4:
        raise ValueError(f"volume must be (N, X, Y, Z), got shape {tuple(volume.shape)}")
    spatial = volume.shape[1:]
    ksize = kernel.shape
    full = [s + k - 1 for s, k in zip(spatial, ksize)]
    fft_shape = [_fast_length(n) for n in full]
    dims = (-3, -2, -1)
    vol_f = torch.fft.rfftn(volume.float(), s=fft_shape, dim=dims)
    ker_f = torch.fft.rfftn(kernel.to(device=volume.device, dtype=torch.float32), s=fft_shape, dim=(0, 1, 2))
    out = torch.fft.irfftn(vol_f * ker_f, s=fft_shape, dim=dims)
    hx, hy, hz = (k // 2 for k in ksize)
    return out[:, hx : hx + spatial[0], hy : hy + spatial[1], hz : hz + spatial[2]]


def bounding_box(mask: torch.Tensor, pad: Sequence[int] = (0, 0, 0)) -> tuple[slice, slice, slice] | None:
    """Slices of the bounding box of the non-zero voxels of a 3-D ``mask``, grown by ``pad`` voxels per
    axis and clipped to the array; ``None`` when the mask is empty."""
    if mask.dim() != 3:
        raise ValueError(f"mask must be 3-D (X, Y, Z), got shape {tuple(mask.shape)}")
    slices = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = torch.nonzero(mask.amax(dim=other) > 0).flatten()
        if hit.numel() == 0:
            return None
        lo = max(int(hit[0]) - pad[axis], 0)
        hi = min(int(hit[-1]) + pad[axis] + 1, mask.shape[axis])
        slices.append(slice(lo, hi))
    return slices[0], slices[1], slices[2]


@torch.no_grad()
def dilate_mm(mask: torch.Tensor, radius_mm: float, spacing_mm: Spacing) -> torch.Tensor:
    """Exact binary dilation of ``mask`` by a ball of radius ``radius_mm`` (diameter 2r) in mm.

    Args:
        mask: (..., X, Y, Z) tensor; voxels > 0.5 are foreground. Any leading dims (e.g. B, C).
        radius_mm: dilation radius in mm; 0 returns the binarised mask.
        spacing_mm: voxel spacing in mm, array axis order.

    Returns:
        Boolean tensor of the same shape. Equals ``scipy.ndimage.binary_dilation`` with the
        :func:`ellipsoid_kernel` of diameter ``2 * radius_mm`` as structuring element.
        Empty and full volumes are returned without any convolution; the others are dilated
        inside their bounding box grown by the kernel's reach.
    """
    binary = mask > 0.5
    if radius_mm <= 0:
        return binary
    kernel = ellipsoid_kernel(2.0 * radius_mm, spacing_mm, device=mask.device)
    if kernel.numel() == 1:
        return binary
    half = [k // 2 for k in kernel.shape]
    spatial = binary.shape[-3:]
    flat = binary.reshape(-1, *spatial)
    out = flat.clone()
    counts = flat.flatten(1).sum(dim=1)
    total = spatial[0] * spatial[1] * spatial[2]
    for index in torch.nonzero((counts > 0) & (counts < total)).flatten().tolist():
        box = bounding_box(flat[index], pad=half)
        assert box is not None  # counts > 0
        crop = flat[index][box].unsqueeze(0)
        out[index][box] = fft_ball_sum(crop, kernel)[0] > 0.5
    return out.reshape(binary.shape)
