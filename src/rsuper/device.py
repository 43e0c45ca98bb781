"""Torch device names as given on the command line (``--device auto|cpu|cuda|cuda:N``), for training and
prediction alike.

Example:
    >>> resolve_device("auto")      # on a machine without CUDA
    device(type='cpu')
"""

from __future__ import annotations

import torch

from rsuper.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; other names as given."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device
