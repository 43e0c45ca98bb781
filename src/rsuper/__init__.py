"""rsuper: train 3D CT tumor segmentation from a few voxel masks plus many radiology reports."""

__version__ = "0.1.0"
