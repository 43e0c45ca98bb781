"""Hypoattenuation prior of the Ball Loss search (not in the paper; rsuper's option, off by default).

The Ball Loss places each reported tumor where the network's probability is highest. When the network
does not yet see a tumor type at all (a stage 1 trained on few masks), that argmax falls on healthy
tissue and the pseudo-labels teach the wrong voxels. Reports often say how the tumor looks: a
"hypodense"/"hypoattenuating" tumor is darker than its organ. The prior turns that statement into a
search field: inside the reported group's voxels, each voxel's darkness rank among them (1 for the
darkest voxel, 0 for the brightest, 0 outside the group). Ranks make it independent of the CT
window, the normalisation and the intensity augmentation.

Example:
    >>> prior = darkness_rank(image[:, 0], group_mask)   # (B, X, Y, Z) in [0, 1]
"""

from __future__ import annotations

import torch


@torch.no_grad()
def darkness_rank(image: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Per sample, 1 - (intensity rank among the group's voxels) / (count - 1); 0 outside the group.

    Args:
        image: (B, X, Y, Z) CT patch in any monotonic intensity scale (HU or normalised).
        group: (B, X, Y, Z) bool or {0, 1}, the voxels of the reported group (not dilated).

    Returns:
        (B, X, Y, Z) float32: 1 at the darkest group voxel, 0 at the brightest (ties ranked by position);
        a group of one voxel gets 1; samples without a group are all 0.
    """
    if image.shape != group.shape or image.dim() != 4:
        raise ValueError(f"image and group must both be (B, X, Y, Z), got {tuple(image.shape)} and {tuple(group.shape)}")
    prior = torch.zeros(image.shape, dtype=torch.float32, device=image.device)
    inside = group > 0.5
    for b in range(image.shape[0]):
        index = torch.nonzero(inside[b].flatten()).flatten()
        n = index.numel()
        if n == 0:
            continue
        values = image[b].flatten()[index].float()
        order = torch.argsort(values, stable=True)  # brightest last
        darkness = torch.empty(n, dtype=torch.float32, device=image.device)
        darkness[order] = 1.0 - torch.arange(n, device=image.device, dtype=torch.float32) / max(n - 1, 1)
        prior[b].view(-1)[index] = darkness
    return prior
