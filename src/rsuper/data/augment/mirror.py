"""Left-right mirror of a training patch and its channel bookkeeping (docs/method.md §4).

The mirror is meant to stop a network trained on few masks from learning "tumors are on the side they were on
in the training CTs" (seen on the demo: a kidney-tumor channel that fired only in right kidneys). It does not
always suffice: a lesion channel can still lock onto one side of a left/right pair (BENCHMARKS.md, known
weaknesses; ``benchmarks/bench_mirror.py`` measures it).

Mirroring flips array axis 0 (patient left-right in the RAS cache), swaps the channels of left/right pairs
(``kidney_left`` <-> ``kidney_right``) in the label, unknown and region blocks, and makes the channels defined
by the patient's side (pancreas head/body/tail, liver segments) unknown: their mirrored masks are not valid.

Example:
    >>> mirror = LeftRightMirror(["kidney_left", "kidney_right", "pancreas_head"], prob=0.5)
    >>> if mirror.sample(rng):
    ...     image, targets = mirror.apply(image, targets)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rsuper.labels import mirror_channel_map


class LeftRightMirror:
    """Mirrors ``prob`` of the patches left-right (never without ``class_names``).

    Args:
        class_names: output channels (C), the order of each target block.
        prob: share of mirrored patches.
    """

    def __init__(self, class_names: Sequence[str] | None, prob: float = 0.5) -> None:
        self.prob = prob if class_names else 0.0
        self.source, self.side_defined = mirror_channel_map(list(class_names or []))

    def sample(self, rng: np.random.Generator) -> bool:
        """Whether to mirror this patch (one draw from ``rng``, whatever ``prob``)."""
        return bool(rng.random() < self.prob)

    def apply(self, image: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mirrored copies of ``image`` (1, X, Y, Z) and ``targets`` ((label, unknown, region) x C + extra
        channels such as valid, X, Y, Z): pairs swapped in each block, side-defined channels unknown."""
        c = len(self.source)
        image, targets = torch.flip(image, dims=[1]), torch.flip(targets, dims=[1])
        order = [block * c + s for block in range(3) for s in self.source] + list(range(3 * c, targets.shape[0]))
        targets = targets[order]
        for i in self.side_defined:
            targets[c + i] = 1
        return image, targets
