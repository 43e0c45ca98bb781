"""Networks (MedFormer, MONAI DynUNet, plug-ins) and checkpoints; see docs/models.md.

Every network built by :func:`build_model` returns ``(final_logits, aux_logits)`` at input size.
"""

from rsuper.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    make_payload,
    model_from_checkpoint,
    save_checkpoint,
)
from rsuper.models.medformer import MedFormer
from rsuper.models.registry import available_models, build_model, register_model

__all__ = [
    "CheckpointError",
    "MedFormer",
    "available_models",
    "build_model",
    "load_checkpoint",
    "make_payload",
    "model_from_checkpoint",
    "register_model",
    "save_checkpoint",
]
