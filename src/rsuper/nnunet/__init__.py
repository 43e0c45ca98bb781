"""rsuper inside nnU-Net v2: the raw-dataset export, its report sidecar and the report-supervised trainers.

- ``rsuper.nnunet.export`` writes an nnU-Net raw dataset (``imagesTr``, ``labelsTr``, ``dataset.json``) plus the
  sidecar ``rsuper_reports.json`` holding each report CT's facts; it needs no nnunetv2 (docs/nnunet.md).
- ``rsuper.nnunet.sidecar`` reads the sidecar and turns an (augmented) label patch into the tensors the report
  losses take; no nnunetv2 either.
- ``rsuper.nnunet.trainer`` holds ``nnUNetTrainerRSuper`` and ``nnUNetTrainerRSuperMasksOnly``; it imports nnunetv2
  (``pip install rsuper[nnunet]``). nnU-Net finds them through ``nnUNet_extTrainer`` = :data:`EXT_TRAINER_DIR`.

Nothing outside this package imports it; this ``__init__`` imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

EXT_TRAINER_DIR = Path(__file__).resolve().parent / "ext"
"""Folder to put in ``nnUNet_extTrainer``: it holds one module that re-exports the rsuper trainers."""

TRAINER_NAMES = ("nnUNetTrainerRSuper", "nnUNetTrainerRSuperMasksOnly")
