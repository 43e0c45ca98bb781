"""Learning-rate schedule of docs/method.md §6: linear warm-up, then polynomial decay (power 0.9) to 0.

Example:
    >>> scheduler = warmup_poly_scheduler(optimizer, warmup_steps=50, total_steps=1000)
    >>> scheduler.step()  # once per optimiser step
"""

from __future__ import annotations

import functools

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_poly_factor(step: int, warmup_steps: int, total_steps: int, power: float = 0.9) -> float:
    """Multiplier of the peak lr at optimiser step ``step`` (0-based).

    Warm-up: ``(step + 1) / (warmup_steps + 1)``; then ``(1 - (step - warmup) / (total - warmup)) ** power``.

    Example:
        >>> warmup_poly_factor(0, 0, 100), round(warmup_poly_factor(50, 0, 100), 4)
        (1.0, 0.5359)
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return (1.0 - progress) ** power


def warmup_poly_scheduler(optimizer: Optimizer, warmup_steps: int, total_steps: int, power: float = 0.9) -> LambdaLR:
    """A ``LambdaLR`` following ``warmup_poly_factor``; its state_dict is plain data (checkpointable)."""
    factor = functools.partial(warmup_poly_factor, warmup_steps=warmup_steps, total_steps=total_steps, power=power)
    return LambdaLR(optimizer, factor)
