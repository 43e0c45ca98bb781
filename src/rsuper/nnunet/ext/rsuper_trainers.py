"""The module nnU-Net imports from ``nnUNet_extTrainer`` (= this folder): it re-exports the rsuper trainers.

    export nnUNet_extTrainer=$(python -c "import rsuper.nnunet as n; print(n.EXT_TRAINER_DIR)")
    nnUNetv2_train 501 3d_fullres 0 -tr nnUNetTrainerRSuper
"""

from rsuper.nnunet.trainer import nnUNetTrainerRSuper, nnUNetTrainerRSuperMasksOnly

__all__ = ["nnUNetTrainerRSuper", "nnUNetTrainerRSuperMasksOnly"]
