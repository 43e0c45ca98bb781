"""Blind start of the Ball Loss search (not in the paper; rsuper's option ``loss.ball.blind_floor``, off by default).

The Ball Loss places each reported tumor where the network's probability is highest. A lesion channel that
stage 1 left blind (few mask CTs showed that organ's tumors) has no such place: the ball lands on healthy tissue
and stage 2 teaches the wrong voxels, so the channel stays blind (BENCHMARKS.md, gain section). The blind start
only acts where the network sees nothing: per report sample, if the lesion channel's highest probability inside
R is below ``floor``, then

- when the report calls every tumor of the group hypoattenuating, the search ranks the group's voxels by
  darkness (1 at the darkest group voxel, 0 at the brightest, 0 outside the group) instead of by probability;
- otherwise the sample gets no Ball Loss (nothing tells where to put the ball).

The Ball Loss of a sample placed by darkness can be weighted up (``blind_weight``): at the paper's λ = 0.1 even
right pseudo-labels barely move a blind channel (BENCHMARKS.md).

Where the channel sees something (max p >= floor) the search is the paper's. Darkness ranks do not depend on
the CT window, the normalisation or the intensity augmentation.

Example:
    >>> start = blind_start(prob, region_dilated, group, image[:, 0], hypoattenuating, floor=0.5)
    >>> labels = ball_pseudo_labels(prob, region_dilated, ..., search=start.search)   # skip start.skip samples
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlindStart:
    """Per-sample outcome of :func:`blind_start` (no gradient).

    Attributes:
        blind: (B,) bool, the channel's max probability inside R is below the floor (samples with a region only).
        search: (B, X, Y, Z) float32, the field the ball search ranks: darkness for blind hypoattenuating
            samples, the probability elsewhere.
        skip: (B,) bool, blind samples whose report does not call every tumor hypoattenuating (no Ball Loss).
    """

    blind: torch.Tensor
    search: torch.Tensor
    skip: torch.Tensor

    @property
    def dark(self) -> torch.Tensor:
        """(B,) bool, blind samples whose balls darkness places."""
        return self.blind & ~self.skip


@torch.no_grad()
def darkness_rank(image: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Per sample, 1 - (intensity rank among the group's voxels) / (count - 1); 0 outside the group.

    Args:
        image: (B, X, Y, Z) CT patch in any monotonic intensity scale (HU or normalised).
        group: (B, X, Y, Z) bool or {0, 1}, the voxels of the reported group (not dilated).

    Returns:
        (B, X, Y, Z) float32 in [0, 1]: 1 at the darkest group voxel, 0 at the brightest; tied intensities (integer
        HU) share their mean rank, so a flat organ has no preferred place; a one-voxel group gets 1; a sample
        without group voxels is all 0.
    """
    if image.shape != group.shape or image.dim() != 4:
        raise ValueError(f"image and group must both be (B, X, Y, Z), got {tuple(image.shape)} and {tuple(group.shape)}")
    rank = torch.zeros(image.shape, dtype=torch.float32, device=image.device)
    inside = group > 0.5
    for b in range(image.shape[0]):
        index = torch.nonzero(inside[b].flatten()).flatten()
        n = index.numel()
        if n == 0:
            continue
        _, inverse, counts = torch.unique(image[b].flatten()[index].float(), return_inverse=True, return_counts=True)
        first = torch.cumsum(counts, 0) - counts  # rank of each distinct value's first voxel, darkest value first
        mean_rank = first.float() + (counts.float() - 1.0) / 2.0  # tied voxels share their mean rank
        rank[b].view(-1)[index] = 1.0 - mean_rank[inverse] / max(n - 1, 1)
    return rank


@torch.no_grad()
def blind_start(
    prob: torch.Tensor,
    region_dilated: torch.Tensor,
    group: torch.Tensor,
    image: torch.Tensor,
    hypoattenuating: torch.Tensor,
    floor: float,
) -> BlindStart:
    """Decide, per sample, the Ball Loss search field (see the module docstring).

    Args:
        prob: (B, X, Y, Z) probability of each sample's region channel.
        region_dilated: (B, X, Y, Z) R (zeros for samples without a region).
        group: (B, X, Y, Z) the undilated group in its lesion channel.
        image: (B, X, Y, Z) the CT patch.
        hypoattenuating: (B,) bool, the report calls every tumor of the sample's group hypoattenuating.
        floor: probability below which the channel counts as blind inside R (in (0, 1]).
    """
    if not 0 < floor <= 1:
        raise ValueError(f"the blind-start floor must be in (0, 1], got {floor}")
    inside = region_dilated > 0.5
    has_region = inside.flatten(1).any(dim=1)
    max_p = torch.where(inside, prob.float(), torch.zeros_like(prob, dtype=torch.float32)).flatten(1).amax(dim=1)
    blind = has_region & (max_p < floor)
    hypo = hypoattenuating.to(device=prob.device, dtype=torch.bool).view(-1)
    dark = blind & hypo
    search = prob.float().clone()
    if bool(dark.any()):
        search[dark] = darkness_rank(image[dark], group[dark])
    return BlindStart(blind=blind, search=search, skip=blind & ~hypo)
