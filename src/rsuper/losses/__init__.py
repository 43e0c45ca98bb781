"""rsuper.losses: the R-Super losses (docs/method.md §5) for any PyTorch network.

Tensors are (B, C, X, Y, Z); ``spacing_mm`` is a 3-tuple in mm in the array's axis order; report
volumes and diameters are (B, T) padded with 0. See docs/losses.md.
"""

from rsuper.losses.ball import BallLoss, BallPseudoLabels, ball_loss, ball_pseudo_labels, rank_weights
from rsuper.losses.combine import BallLossOptions, ReportSupervisedLoss, VolumeLossOptions
from rsuper.losses.geometry import (
    ball_voxel_count,
    dilate_mm,
    ellipsoid_kernel,
    fft_ball_sum,
    voxel_volume_mm3,
)
from rsuper.losses.region import ReportRegion, report_region
from rsuper.losses.segmentation import MaskedSegmentationLoss, known_mask, segmentation_loss
from rsuper.losses.volume import VolumeLoss, volume_loss, volume_loss_from_mm3

__all__ = [
    "BallLoss",
    "BallLossOptions",
    "BallPseudoLabels",
    "MaskedSegmentationLoss",
    "ReportRegion",
    "ReportSupervisedLoss",
    "VolumeLoss",
    "VolumeLossOptions",
    "ball_loss",
    "ball_pseudo_labels",
    "ball_voxel_count",
    "dilate_mm",
    "ellipsoid_kernel",
    "fft_ball_sum",
    "known_mask",
    "rank_weights",
    "report_region",
    "segmentation_loss",
    "volume_loss",
    "volume_loss_from_mm3",
    "voxel_volume_mm3",
]
