"""Intensity augmentation of a training patch: MONAI scale, shift and Gaussian noise, each with probability 0.15.

The parameter of one patch is a seed: MONAI's draws are a deterministic function of it
(``Compose.set_random_state``). Factors and offsets are in normalised CT units (docs/method.md §1: 1 = 745.5 HU).

Example:
    >>> intensity = RandomIntensity(prob=0.15)
    >>> image = intensity.apply(intensity.sample(rng), image)
"""

from __future__ import annotations

import numpy as np
import torch


class RandomIntensity:
    """Scale (±10 %), shift (±0.1) and Gaussian noise (SD 0.02), each on ``prob`` of the patches."""

    def __init__(self, prob: float = 0.15) -> None:
        from monai.transforms import Compose, RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd

        self.prob = prob
        self.transform = Compose(
            [
                RandScaleIntensityd(keys="image", factors=0.1, prob=prob),
                RandShiftIntensityd(keys="image", offsets=0.1, prob=prob),
                RandGaussianNoised(keys="image", std=0.02, prob=prob),
            ]
        )

    def sample(self, rng: np.random.Generator) -> int:
        """The seed of MONAI's intensity draws for this patch (one draw from ``rng``)."""
        return int(rng.integers(2**32))

    def apply(self, seed: int, image: torch.Tensor) -> torch.Tensor:
        """``image`` (1, X, Y, Z) with the intensity transforms of ``seed``, float32."""
        from monai.utils import convert_to_tensor

        self.transform.set_random_state(seed=seed)
        return convert_to_tensor(self.transform({"image": image})["image"], track_meta=False).float()
