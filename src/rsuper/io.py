"""NIfTI input/output that never loses geometry, canonical orientation, resampling and CT intensity.

Arrays keep nibabel's (x, y, z) axis order. The canonical orientation is nibabel's RAS+
(``nibabel.as_closest_canonical``): axis 0 increases toward the patient's Right, axis 1 toward Anterior,
axis 2 toward Superior. Spacings are 3 floats in mm in the array's axis order.

Example (to the training grid and back onto the input grid):
    >>> ct = load_nifti("case/ct.nii.gz")
    >>> work = resample_to_spacing(to_canonical(ct), (1.5, 1.5, 1.5), order=1)
    >>> back = resample_to_grid(work, ct.shape, ct.affine, order=1)   # same shape and affine as ct
    >>> save_nifti(back, "out/ct.nii.gz", dtype=np.int16)
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

from rsuper.atomic import atomic_path

CANONICAL_AXCODES = ("R", "A", "S")

HU_CLIP = (-991.0, 500.0)
_HU_CENTER = (HU_CLIP[0] + HU_CLIP[1]) / 2.0  # -245.5
_HU_HALF_RANGE = (HU_CLIP[1] - HU_CLIP[0]) / 2.0  # 745.5

CT_NORMALISATION: dict = {
    "method": "clip_linear",
    "clip_hu": list(HU_CLIP),
    "center_hu": _HU_CENTER,
    "half_range_hu": _HU_HALF_RANGE,
    "formula": "(clip(hu, -991, 500) - (-245.5)) / 745.5",
    "output_range": [-1.0, 1.0],
}


class NiftiReadError(OSError):
    """A NIfTI file that cannot be read (missing, truncated, corrupt or not a NIfTI)."""


@dataclass
class Volume:
    """A 3D array with its voxel-to-world (RAS mm) affine.

    Attributes:
        array: (X, Y, Z) array in nibabel axis order.
        affine: 4x4 float64 voxel-index -> world (mm) matrix.
        header: NIfTI header of the source file, reused when saving (optional).
    """

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {self.affine.shape}")
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3D (X, Y, Z), got shape {self.array.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape in voxels (X, Y, Z)."""
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (norms of the affine's columns)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Axis codes of the array axes, e.g. ``"RAS"`` or ``"LPS"``."""
        return "".join(nib.aff2axcodes(self.affine))

    def with_array(self, array: np.ndarray) -> Volume:
        """The same grid (affine, header) carrying another array of the same shape."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(array, self.affine.copy(), self.header)


def load_nifti(path: str | os.PathLike[str]) -> Volume:
    """Reads a 3D NIfTI (.nii or .nii.gz) fully into memory, keeping its on-disk dtype when unscaled.

    A 4D file with one volume is squeezed to 3D. Raises ``NiftiReadError`` naming the file when it is
    missing, truncated, corrupt or not 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise NiftiReadError(f"NIfTI file not found: {path}")
    try:
        image = nib.load(str(path))
        array = np.asanyarray(image.dataobj)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise NiftiReadError(
            f"cannot read {path}: the gzip stream is truncated or corrupt ({exc}); re-export or re-copy the file"
        ) from exc
    except (ImageFileError, ValueError, OSError) as exc:
        raise NiftiReadError(f"cannot read {path} as NIfTI: {_diagnose(path, exc)}") from exc
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise NiftiReadError(f"{path} has shape {array.shape}; rsuper expects a 3D volume")
    header = image.header.copy() if isinstance(image.header, nib.Nifti1Header) else None
    return Volume(np.asarray(array), np.asarray(image.affine, dtype=np.float64), header)


def _diagnose(path: Path, exc: Exception) -> str:
    """Why nibabel could not open ``path``: a short header (truncated file) or the original error."""
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as stream:
            n_header = len(stream.read(348))
    except (EOFError, zlib.error, OSError):
        n_header = 0
    if n_header < 348:
        return f"the file is truncated or empty (NIfTI header incomplete: {n_header} of 348 bytes)"
    return f"{type(exc).__name__}: {exc}"


def save_nifti(volume: Volume, path: str | os.PathLike[str], dtype: np.dtype | type | str | None = None) -> None:
    """Writes ``volume`` atomically as NIfTI (gzip when the name ends in .gz).

    ``dtype`` converts the array first (float -> integer rounds to nearest); default keeps its dtype.
    The qform and sform both hold the volume's affine; no intensity scaling is applied.
    """
    array = np.asarray(volume.array)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if np.issubdtype(dtype, np.integer) and not np.issubdtype(array.dtype, np.integer):
            info = np.iinfo(dtype)
            array = np.clip(np.rint(array), info.min, info.max)
        array = array.astype(dtype, copy=False)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    header = volume.header.copy() if volume.header is not None else nib.Nifti1Header()
    header.set_data_dtype(array.dtype)
    image = nib.Nifti1Image(array, volume.affine, header)
    qcode = int(header["qform_code"]) or 1
    scode = int(header["sform_code"]) or 1
    image.set_qform(volume.affine, code=qcode)
    image.set_sform(volume.affine, code=scode)
    image.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def _reorient(volume: Volume, transform: np.ndarray) -> Volume:
    array = apply_orientation(volume.array, transform)
    affine = volume.affine @ inv_ornt_aff(transform, volume.shape)
    return Volume(np.ascontiguousarray(array), affine, volume.header)


def to_canonical(volume: Volume) -> Volume:
    """Reorders/flips the array axes to the closest RAS+ orientation (no interpolation)."""
    transform = ornt_transform(io_orientation(volume.affine), axcodes2ornt(CANONICAL_AXCODES))
    return _reorient(volume, transform)


def from_canonical(volume: Volume, reference: Volume) -> Volume:
    """Reorders a canonical (RAS+) volume back to ``reference``'s axis orientation (no interpolation).

    When the result lies on the reference grid (same shape, affine within 1e-4 mm) the reference's affine
    and header are returned exactly. For a canonical volume at another spacing, first call
    ``resample_to_grid`` with ``to_canonical(reference)``'s grid, or resample straight onto
    ``reference.shape``/``reference.affine``.
    """
    transform = ornt_transform(axcodes2ornt(CANONICAL_AXCODES), io_orientation(reference.affine))
    out = _reorient(volume, transform)
    if out.shape == reference.shape and np.allclose(out.affine, reference.affine, atol=1e-4):
        return Volume(out.array, reference.affine.copy(), reference.header)
    return out


def _check_order(order: int) -> None:
    if order not in (0, 1, 2, 3):
        raise ValueError(f"interpolation order must be 0 (masks), 1 or 3 (images), got {order!r}")


def resample_to_grid(
    volume: Volume, shape: tuple[int, int, int] | list[int], affine: np.ndarray, order: int
) -> Volume:
    """Resamples ``volume`` onto the grid (``shape``, ``affine``) through both affines.

    Any orientation change is handled by the affines. Voxels outside the source take the nearest edge
    value. ``order`` 0 (nearest, masks) keeps the dtype; orders 1-3 give float32 (or float64 input stays
    float64). The result carries ``affine`` exactly.
    """
    _check_order(order)
    shape = tuple(int(n) for n in shape)
    target = np.asarray(affine, dtype=np.float64)
    source_from_target = np.linalg.inv(volume.affine) @ target
    matrix, offset = source_from_target[:3, :3], source_from_target[:3, 3]
    if order == 0:
        out_dtype = volume.array.dtype
    else:
        out_dtype = np.float64 if volume.array.dtype == np.float64 else np.float32
    source = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    if shape == volume.shape and np.allclose(source_from_target, np.eye(4), atol=1e-6):
        out = source.astype(out_dtype if order > 0 else source.dtype, copy=True)
    else:
        out = ndimage.affine_transform(
            source, matrix, offset=offset, output_shape=shape, order=order, mode="nearest",
            output=np.dtype(out_dtype) if order > 0 else source.dtype,
        )
    if volume.array.dtype == bool:
        out = out.astype(bool)
    return Volume(out, target.copy(), volume.header)


def spacing_grid(
    volume: Volume, spacing_mm: tuple[float, float, float] | list[float] | float
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the grid at ``spacing_mm`` covering ``volume``'s extent, same origin and axes.

    Returns ``(shape, affine)``; shape_i = max(1, round(n_i * old_spacing_i / new_spacing_i)).
    """
    new = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
    if np.any(new <= 0) or not np.all(np.isfinite(new)):
        raise ValueError(f"spacing_mm must be 3 positive finite numbers, got {spacing_mm!r}")
    old = np.asarray(volume.spacing_mm)
    shape = tuple(max(1, int(round(n * o / s))) for n, o, s in zip(volume.shape, old, new))
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, :3] / old * new
    return shape, affine


def resample_to_spacing(
    volume: Volume, spacing_mm: tuple[float, float, float] | list[float] | float, order: int
) -> Volume:
    """Resamples to ``spacing_mm`` (mm, array axis order) keeping axes, origin (voxel 0) and extent.

    ``order`` 1 or 3 for images, 0 (nearest) for masks. See ``spacing_grid`` for the new shape.
    """
    shape, affine = spacing_grid(volume, spacing_mm)
    return resample_to_grid(volume, shape, affine, order)


def normalize_ct(hu: np.ndarray) -> np.ndarray:
    """Clips Hounsfield units to [-991, 500] and maps them linearly to [-1, 1] (float32)."""
    hu = np.asarray(hu, dtype=np.float32)
    return ((np.clip(hu, *HU_CLIP) - np.float32(_HU_CENTER)) / np.float32(_HU_HALF_RANGE)).astype(np.float32)
