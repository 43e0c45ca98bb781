"""MONAI DynUNet (nnU-Net-like) with one deep-supervision output, returned in train AND eval mode.

MONAI's DynUNet returns a stacked tensor only in training mode and only the final output in eval mode;
:class:`DeepSupervisedDynUNet` always returns ``(final_logits, aux_logits)``, both at input size. The aux
logits come from the supervision head one level below full resolution (1/2), upsampled trilinearly.
Subclassing (not wrapping) keeps MONAI's own state_dict key names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DynUNet

from rsuper.models.medformer_blocks import upsample_to

# nnU-Net 3d_fullres-like plan for ~128^3 patches: 3x3x3 kernels, 5 down-samplings, widths 32..320.
DYNUNET_FILTERS = (32, 64, 128, 256, 320, 320)
DYNUNET_SMALL_FILTERS = (8, 16, 32, 64, 128)


class DeepSupervisedDynUNet(DynUNet):
    """DynUNet whose forward returns ``(final, aux)``: (B, C, X, Y, Z) each, in both modes.

    Args:
        in_channels, num_classes: input and output channels.
        filters: width per level; the number of levels sets the depth (strides 1, 2, 2, ...).
        res_block: residual blocks instead of plain conv-norm-act pairs.
    """

    def __init__(
        self, in_channels: int, num_classes: int, filters: Sequence[int] = DYNUNET_FILTERS, res_block: bool = False
    ) -> None:
        levels = len(filters)
        strides = [(1, 1, 1)] + [(2, 2, 2)] * (levels - 1)
        super().__init__(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=num_classes,
            kernel_size=[(3, 3, 3)] * levels,
            strides=strides,
            upsample_kernel_size=strides[1:],
            filters=list(filters),
            norm_name=("INSTANCE", {"affine": True}),
            deep_supervision=True,
            deep_supr_num=1,
            res_block=res_block,
        )
        self.size_divisor = 2 ** (levels - 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in_channels, X, Y, Z) -> (final, aux) logits at input size."""
        final = self.output_block(self.skip_layers(x))
        head = self.heads[0]
        self.heads[0] = torch.empty(0)  # do not keep the last batch's graph alive between calls
        return final, upsample_to(head, final.shape[2:])
