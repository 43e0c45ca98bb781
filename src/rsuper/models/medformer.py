"""MedFormer 3D as configured in R-Super (ARCHITECTURE.md), loadable from R-Super checkpoints by key name.

``MedFormer(in_channels, num_classes)`` with the defaults is the paper network: 37,889,140 parameters
for 42 classes, state_dict keys/shapes/order identical to R-Super's. ``forward(x)`` returns the tuple
``(final_logits, aux_logits)``, both (B, num_classes, X, Y, Z) raw logits at input size (apply a
sigmoid per channel). Inputs must be multiples of 16 per axis and at least 32.

Example:
    >>> net = MedFormer(in_channels=1, num_classes=26)
    >>> final, aux = net(torch.zeros(1, 1, 64, 64, 64))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rsuper.models.medformer_blocks import (
    AttentionBlocks,
    BasicBlock,
    PatchMerging,
    SemanticMapFusion,
    SemanticMapGeneration,
    upsample_to,
)

PAPER_CONFIG: dict[str, object] = {
    "base_chan": 32,
    "chan_num": (64, 128, 256, 320, 256, 128, 64, 32),
    "conv_num": (2, 0, 0, 0, 0, 0, 2, 2),
    "trans_num": (0, 2, 4, 6, 4, 2, 0, 0),
    "num_heads": (1, 4, 8, 10, 8, 4, 1, 1),
    "dim_head": 32,
    "map_size": 3,
    "expansion": 4,
    "fusion_depth": 2,
}
# CPU-sized variant: same topology, widths /4 (base 8 ... bottleneck 80), one attention block per stage.
SMALL_CONFIG: dict[str, object] = {
    "base_chan": 8,
    "chan_num": (16, 32, 64, 80, 64, 32, 16, 8),
    "conv_num": (1, 0, 0, 0, 0, 0, 1, 1),
    "trans_num": (0, 1, 1, 1, 1, 1, 0, 0),
    "num_heads": (1, 2, 4, 5, 4, 2, 1, 1),
    "dim_head": 16,
    "map_size": 3,
    "expansion": 4,
    "fusion_depth": 1,
}


class Stem(nn.Module):
    """``inc``: a plain 3x3x3 conv (no norm/act) then a BasicBlock."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, out_ch, 3, padding=1, bias=False)
        self.conv2 = BasicBlock(out_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class DownStage(nn.Module):
    """Encoder stage: PatchMerging, BasicBlocks, semantic map from the merged features, attention blocks."""

    def __init__(
        self, in_ch: int, out_ch: int, conv_num: int, trans_num: int, heads: int, dim_head: int,
        map_size: int, expansion: int, with_map: bool,
    ) -> None:
        super().__init__()
        # Registration order = state_dict order: map_gen is listed before patch_merging.
        self.map_gen = SemanticMapGeneration(out_ch, map_size) if with_map else None
        self.patch_merging = PatchMerging(in_ch, out_ch)
        self.conv_blocks = nn.Sequential(*(BasicBlock(out_ch, out_ch) for _ in range(conv_num)))
        self.trans_blocks = AttentionBlocks(trans_num, out_ch, out_ch, out_ch, heads, dim_head, expansion)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.conv_blocks(self.patch_merging(x))
        sem = self.map_gen(x) if self.map_gen is not None else None
        return self.trans_blocks(x, sem)


class UpStage(nn.Module):
    """Decoder stage: trilinear up-sampling, concat [up, skip], optional map reduction, attention, BasicBlocks."""

    def __init__(
        self, in_ch: int, out_ch: int, conv_num: int, trans_num: int, heads: int, dim_head: int,
        expansion: int, reduce_map: bool, last_map_out: bool = True,
    ) -> None:
        super().__init__()
        cat_ch = in_ch + out_ch
        self.map_reduction = nn.Conv3d(cat_ch, out_ch, 1, bias=False) if reduce_map else None
        self.trans_blocks = AttentionBlocks(
            trans_num, cat_ch, out_ch, out_ch, heads, dim_head, expansion, last_map_out=last_map_out
        )
        conv_in = out_ch if trans_num > 0 else cat_ch
        self.conv_blocks = nn.Sequential(
            *(BasicBlock(conv_in if i == 0 else out_ch, out_ch) for i in range(conv_num))
        )

    def forward(
        self, x_low: torch.Tensor, x_skip: torch.Tensor, map_prev: torch.Tensor | None, map_enc: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        feat = torch.cat([upsample_to(x_low, x_skip.shape[2:]), x_skip], dim=1)
        sem = self.map_reduction(torch.cat([map_prev, map_enc], dim=1)) if self.map_reduction is not None else map_prev
        out, sem = self.trans_blocks(feat, sem)
        return self.conv_blocks(out), sem


def _check_config(
    base_chan: int, chan_num: Sequence[int], conv_num: Sequence[int], trans_num: Sequence[int], num_heads: Sequence[int]
) -> None:
    """Raises ``ValueError`` for stage lists that are not 8 long, non-mirrored widths or misplaced attention."""
    if any(len(v) != 8 for v in (chan_num, conv_num, trans_num, num_heads)):
        raise ValueError("chan_num, conv_num, trans_num and num_heads need 8 entries (down1..down4, up1..up4)")
    encoder = [base_chan, *chan_num[:3]]
    if list(chan_num[4:]) != encoder[::-1]:
        raise ValueError(
            f"decoder widths {list(chan_num[4:])} must mirror the encoder widths {encoder[::-1]} (skip connections)"
        )
    if trans_num[0] or trans_num[6] or trans_num[7]:
        raise ValueError(f"attention blocks are only supported in down2..down4 and up1..up2, got trans_num={trans_num}")


class MedFormer(nn.Module):
    """MedFormer 3D (R-Super's configuration by default); ``forward(x) -> (final_logits, aux_logits)``.

    Args:
        in_channels: image channels (1 for CT).
        num_classes: output channels (one sigmoid per class).
        base_chan, chan_num, conv_num, trans_num, num_heads: widths, BasicBlocks, attention blocks and
            heads per stage (chan_num/conv_num/trans_num/num_heads ordered down1..down4, up1..up4).
        dim_head: width of one attention head; map_size: semantic map side (map_size^3 tokens);
        expansion: MBConv expansion; fusion_depth: layers of the map-fusion transformer (its width and
            heads are those of down4, its MLP hidden width equals its width).
    """

    size_divisor = 16

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 42,
        base_chan: int = 32,
        chan_num: Sequence[int] = (64, 128, 256, 320, 256, 128, 64, 32),
        conv_num: Sequence[int] = (2, 0, 0, 0, 0, 0, 2, 2),
        trans_num: Sequence[int] = (0, 2, 4, 6, 4, 2, 0, 0),
        num_heads: Sequence[int] = (1, 4, 8, 10, 8, 4, 1, 1),
        dim_head: int = 32,
        map_size: int = 3,
        expansion: int = 4,
        fusion_depth: int = 2,
    ) -> None:
        super().__init__()
        _check_config(base_chan, chan_num, conv_num, trans_num, num_heads)
        c = list(chan_num)
        enc_in = [base_chan, c[0], c[1], c[2]]
        self.inc = Stem(in_channels, base_chan)
        for i in range(4):
            stage = DownStage(
                enc_in[i], c[i], conv_num[i], trans_num[i], num_heads[i], dim_head, map_size, expansion,
                with_map=i > 0,
            )
            self.add_module(f"down{i + 1}", stage)
        self.map_fusion = SemanticMapFusion(
            [c[1], c[2], c[3]], c[3], fusion_depth, num_heads[3], dim_head, mlp_dim=c[3]
        )
        dec_in = [c[3], c[4], c[5], c[6]]
        for i in range(4):
            stage = UpStage(
                dec_in[i], c[4 + i], conv_num[4 + i], trans_num[4 + i], num_heads[4 + i], dim_head, expansion,
                reduce_map=i < 2, last_map_out=i != 1,  # up2's last map output is never used: no map_out conv
            )
            self.add_module(f"up{i + 1}", stage)
        self.aux_out = nn.Conv3d(c[5], num_classes, 1)
        self.outc = nn.Conv3d(c[7], num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in_channels, X, Y, Z) -> (final, aux) logits, each (B, num_classes, X, Y, Z)."""
        bad = [s for s in x.shape[2:] if s % self.size_divisor or s < 2 * self.size_divisor]
        if x.ndim != 5 or bad:
            raise ValueError(
                f"MedFormer needs a (B, C, X, Y, Z) input with every spatial size a multiple of "
                f"{self.size_divisor} and >= {2 * self.size_divisor}, got shape {tuple(x.shape)}"
            )
        x0 = self.inc(x)
        x1, _ = self.down1(x0)
        x2, map2 = self.down2(x1)
        x3, map3 = self.down3(x2)
        x4, map4 = self.down4(x3)
        fused2, fused3, fused4 = self.map_fusion([map2, map3, map4])
        u1, map_a = self.up1(x4, x3, fused4, fused3)
        u2, map_b = self.up2(u1, x2, map_a, fused2)
        aux = upsample_to(self.aux_out(u2), x.shape[2:])
        u3, _ = self.up3(u2, x1, map_b, None)
        u4, _ = self.up4(u3, x0, map_b, None)
        return self.outc(u4), aux
