"""Exponential moving average of the weights (docs/method.md §6, decay 0.99), via torch's AveragedModel.

Example:
    >>> ema = create_ema(model, decay=0.99)
    >>> ema.update_parameters(model)  # after each optimiser step
    >>> weights = ema.module.state_dict()  # loadable into the plain model
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def create_ema(model: nn.Module, decay: float = 0.99) -> AveragedModel:
    """EMA copy of ``model`` (parameters and buffers); the first update copies the weights."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
