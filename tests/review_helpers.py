"""Hand-made CTs, probability maps and reports with known answers for tests/review and tests/refine.

Grid: 60 x 40 x 24 voxels of 1 x 1 x 2.5 mm (anisotropic) with a shifted origin; a box pancreas split along x
into head (x < 15), body (15..30) and tail (30..60), a box liver and two box kidneys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsuper.io import Volume, save_nifti
from rsuper.reports.schema import CaseFindings, Lesion
from rsuper.reports.tables import write_tumors_csv

SHAPE = (60, 40, 24)
SPACING_MM = (1.0, 1.0, 2.5)
AFFINE = np.array([[1.0, 0, 0, -30.0], [0, 1.0, 0, 12.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])


def box(lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return mask


def ball(centre_vox: tuple[int, int, int], diameter_mm: float, spacing_mm=SPACING_MM, shape=SHAPE) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    d2 = sum(((grid[i] - centre_vox[i]) * spacing_mm[i]) ** 2 for i in range(3))
    return d2 <= (diameter_mm / 2) ** 2 + 1e-6


def organ_masks() -> dict[str, np.ndarray]:
    masks = {
        "pancreas_head": box((0, 5, 2), (15, 35, 22)),
        "pancreas_body": box((15, 5, 2), (30, 35, 22)),
        "pancreas_tail": box((30, 5, 2), (60, 35, 22)),
        "kidney_left": box((40, 36, 0), (58, 40, 6)),
        "kidney_right": box((2, 36, 0), (20, 40, 6)),
        "liver": box((0, 0, 22), (30, 5, 24)),
    }
    masks["pancreas"] = masks["pancreas_head"] | masks["pancreas_body"] | masks["pancreas_tail"]
    return masks


TAIL_TUMORS = (((40, 20, 5), 20.0), ((53, 20, 16), 10.0))  # (centre voxel, diameter mm): 20 and 10 mm, in the tail


def tail_probability(peak: float = 0.9) -> np.ndarray:
    """Low background in the pancreas, two tail tumors of 20 and 10 mm at ``peak``."""
    prob = np.where(organ_masks()["pancreas"], 0.05, 0.0).astype(np.float32)
    for centre, diameter in TAIL_TUMORS:
        prob[ball(centre, diameter)] = peak
    return prob


def write_volume(array: np.ndarray, path: Path, dtype=np.uint8) -> None:
    save_nifti(Volume(array, AFFINE), path, dtype=dtype)


def write_dataset_case(root: Path, case_id: str, classes=("pancreas", "pancreas_head", "pancreas_body",
                                                          "pancreas_tail", "kidney_left", "kidney_right", "liver")
                       ) -> None:
    """DATASET/<case>/ct.nii.gz (HU) + segmentations/ of the given organ classes."""
    rng = np.random.default_rng(0)
    write_volume(rng.normal(40, 10, SHAPE), root / case_id / "ct.nii.gz", dtype=np.int16)
    masks = organ_masks()
    for name in classes:
        write_volume(masks[name], root / case_id / "segmentations" / f"{name}.nii.gz")


def write_prediction_case(root: Path, case_id: str, probabilities: dict[str, np.ndarray],
                          organs: bool = True) -> None:
    """PRED/<case>/probabilities/<lesion>.nii.gz (uint8, p = v/255), segmentations/ (thresholded + organs)."""
    for name, prob in probabilities.items():
        write_volume(np.rint(prob * 255), root / case_id / "probabilities" / f"{name}.nii.gz")
        write_volume(prob >= 0.5, root / case_id / "segmentations" / f"{name}.nii.gz")
    if organs:
        for name, mask in organ_masks().items():
            write_volume(mask, root / case_id / "segmentations" / f"{name}.nii.gz")


def write_reports(path: Path, findings: list[CaseFindings]) -> Path:
    return write_tumors_csv(findings, path)


def tail_report(case_id: str) -> CaseFindings:
    return CaseFindings(case_id=case_id, lesions=[
        Lesion(organ="pancreas", location=["tail"], size_mm=[20], evidence="A 2.0 cm mass in the pancreatic tail."),
        Lesion(organ="pancreas", location=["tail"], size_mm=[10], evidence="A 1.0 cm nodule in the tail.")])
