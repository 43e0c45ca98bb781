"""Building blocks of MedFormer 3D (convolutions, attention, semantic maps), as in ARCHITECTURE.md §2.

Every module keeps the attribute names that give the R-Super state_dict key names; norms and
activations carry no parameters. Tensors are (B, C, X, Y, Z); the semantic map is (B, C, 3, 3, 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CONV_EPS = 1e-4  # instance-norm eps inside every pre-activation conv unit
BLOCK_EPS = 1e-5  # instance-norm eps in PatchMerging and the attention blocks' norm1/norm2


def instance_norm(channels: int, eps: float) -> nn.InstanceNorm3d:
    """Instance norm without affine parameters or running statistics (same in train and eval)."""
    return nn.InstanceNorm3d(channels, eps=eps, affine=False, track_running_stats=False)


class PreActConv(nn.Module):
    """``conv(act(IN(x)))``: pre-activation unit; the conv weight is the only parameter (no bias)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.norm = instance_norm(in_ch, CONV_EPS)
        self.act = nn.ReLU() if act else nn.Identity()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.norm(x)))


class BasicBlock(nn.Module):
    """Pre-activation residual block; width changes use a pre-activated 3x3x3 shortcut."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = PreActConv(in_ch, out_ch, 3)
        self.conv2 = PreActConv(out_ch, out_ch, 3)
        self.shortcut = PreActConv(in_ch, out_ch, 3) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + self.shortcut(x)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3x3x3 conv then pointwise 1x1x1 conv, no bias, nothing in between."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv3d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False)
        self.pointwise = nn.Conv3d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class PatchMerging(nn.Module):
    """2x down-sampling: 8 strided sub-volumes (X offset outermost) -> IN -> depthwise-separable conv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm = instance_norm(8 * in_ch, BLOCK_EPS)
        self.reduction = DepthwiseSeparableConv(8 * in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x[:, :, i::2, j::2, k::2] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
        return self.reduction(self.norm(torch.cat(parts, dim=1)))


class SqueezeExcitation(nn.Module):
    """Channel gating ``t * sigmoid(W2 relu(W1 mean(t)))`` with biases."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.excitation = nn.Sequential(
            nn.Conv3d(channels, hidden, 1),
            nn.ReLU(),
            nn.Conv3d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excitation(x.mean(dim=(2, 3, 4), keepdim=True))


class MBConv(nn.Module):
    """Inverted residual feed-forward: expand 1x1 -> depthwise 3x3x3 -> SE -> project 1x1, plus x."""

    def __init__(self, channels: int, expansion: int = 4, se_ratio: int = 4) -> None:
        super().__init__()
        wide = channels * expansion
        self.expand_proj = PreActConv(channels, wide, 1)
        self.depthwise = PreActConv(wide, wide, 3, groups=wide)
        self.se = SqueezeExcitation(wide, wide // se_ratio)
        self.pointwise = PreActConv(wide, channels, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pointwise(self.se(self.depthwise(self.expand_proj(x))))


class SemanticMapGeneration(nn.Module):
    """Pools features into a (B, C, m, m, m) semantic map with a softmax over voxels per map code."""

    def __init__(self, channels: int, map_size: int = 3) -> None:
        super().__init__()
        self.map_size = map_size
        self.base_proj = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.semantic_proj = nn.Conv3d(channels, map_size**3, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.base_proj(x).flatten(2)  # (B, C, N)
        attn = self.semantic_proj(x).flatten(2).softmax(dim=-1)  # (B, M, N), softmax over voxels
        sem = torch.einsum("bcn,bmn->bcm", feat, attn)
        return sem.reshape(*sem.shape[:2], self.map_size, self.map_size, self.map_size)


def _split_heads_interleaved(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, heads*d, *spatial) -> (B, heads, N, d) with channel = j*heads + h."""
    b, c = t.shape[:2]
    return t.reshape(b, c // heads, heads, -1).permute(0, 2, 3, 1)


def _merge_heads_interleaved(t: torch.Tensor, spatial: torch.Size) -> torch.Tensor:
    """(B, heads, N, d) -> (B, d*heads, *spatial), inverse of :func:`_split_heads_interleaved`."""
    b, h, _, d = t.shape
    return t.permute(0, 3, 1, 2).reshape(b, d * h, *spatial)


class BidirectionAttention(nn.Module):
    """Voxels attend to map tokens and map tokens gather from voxels through one shared logit matrix."""

    def __init__(
        self, feat_dim: int, map_dim: int, out_dim: int, heads: int, dim_head: int, map_out: bool = True
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.feat_qv = DepthwiseSeparableConv(feat_dim, 2 * inner)
        self.feat_out = DepthwiseSeparableConv(inner, out_dim)
        self.map_qv = nn.Conv3d(map_dim, 2 * inner, 1, bias=False)
        self.map_out = nn.Conv3d(inner, map_dim, 1, bias=False) if map_out else nn.Identity()

    def forward(self, feat: torch.Tensor, sem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fq, fv = (_split_heads_interleaved(t, self.heads) for t in self.feat_qv(feat).chunk(2, dim=1))
        mq, mv = (_split_heads_interleaved(t, self.heads) for t in self.map_qv(sem).chunk(2, dim=1))
        logits = fq @ mq.transpose(-1, -2) * self.scale  # (B, heads, N_voxels, N_map)
        feat_o = logits.softmax(dim=-1) @ mv
        map_o = logits.softmax(dim=-2).transpose(-1, -2) @ fv
        feat_o = _merge_heads_interleaved(feat_o, feat.shape[2:])
        map_o = _merge_heads_interleaved(map_o, sem.shape[2:])
        return self.feat_out(feat_o), self.map_out(map_o)


class BidirectionAttentionBlock(nn.Module):
    """Attention on normalised (features, map), shortcut of raw x, MBConv; map residual on raw map."""

    def __init__(
        self,
        feat_dim: int,
        map_dim: int,
        out_dim: int,
        heads: int,
        dim_head: int,
        expansion: int = 4,
        map_out: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = instance_norm(feat_dim, BLOCK_EPS)
        self.norm2 = instance_norm(map_dim, BLOCK_EPS)
        self.attn = BidirectionAttention(feat_dim, map_dim, out_dim, heads, dim_head, map_out=map_out)
        self.shortcut = PreActConv(feat_dim, out_dim, 1) if feat_dim != out_dim else nn.Identity()
        self.feedforward = MBConv(out_dim, expansion)

    def forward(self, x: torch.Tensor, sem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat_o, map_o = self.attn(self.norm1(x), self.norm2(sem))
        return self.feedforward(feat_o + self.shortcut(x)), map_o + sem


class AttentionBlocks(nn.Module):
    """A stage's list of attention blocks (key ``blocks``); block 0 maps feat_dim -> out_dim."""

    def __init__(
        self,
        num_blocks: int,
        feat_dim: int,
        map_dim: int,
        out_dim: int,
        heads: int,
        dim_head: int,
        expansion: int = 4,
        last_map_out: bool = True,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            BidirectionAttentionBlock(
                feat_dim if i == 0 else out_dim,
                map_dim,
                out_dim,
                heads,
                dim_head,
                expansion,
                map_out=last_map_out or i < num_blocks - 1,
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor, sem: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        for block in self.blocks:
            x, sem = block(x, sem)
        return x, sem


class PreNorm(nn.Module):
    """``fn(LayerNorm(x))`` (keys ``norm.*`` and ``fn.*``)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class TokenSelfAttention(nn.Module):
    """Multi-head self-attention over tokens (B, T, dim); contiguous head split (channel = h*d + j)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (u.reshape(b, t, self.heads, -1).transpose(1, 2) for u in self.to_qkv(x).chunk(3, dim=-1))
        out = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1) @ v
        return self.to_out(out.transpose(1, 2).reshape(b, t, -1))


class TokenMLP(nn.Module):
    """``fc2(GELU(fc1(x)))`` with exact (erf) GELU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Transformer(nn.Module):
    """Pre-norm transformer (residual attention then residual MLP per layer), no final norm."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [PreNorm(dim, TokenSelfAttention(dim, heads, dim_head)), PreNorm(dim, TokenMLP(dim, mlp_dim))]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, mlp in self.layers:
            x = x + attn(x)
            x = x + mlp(x)
        return x


class SemanticMapFusion(nn.Module):
    """Fuses the encoder's semantic maps with a transformer over their concatenated tokens."""

    def __init__(
        self, in_dims: list[int], dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int
    ) -> None:
        super().__init__()
        self.in_proj = nn.ModuleList(nn.Conv3d(c, dim, 1, bias=False) for c in in_dims)
        self.fusion = Transformer(dim, depth, heads, dim_head, mlp_dim)
        self.out_proj = nn.ModuleList(nn.Conv3d(dim, c, 1, bias=False) for c in in_dims)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        shape = maps[0].shape[2:]
        tokens = [proj(m).flatten(2).transpose(1, 2) for proj, m in zip(self.in_proj, maps)]
        fused = self.fusion(torch.cat(tokens, dim=1)).split([t.shape[1] for t in tokens], dim=1)
        return [
            proj(t.transpose(1, 2).reshape(t.shape[0], -1, *shape)) for proj, t in zip(self.out_proj, fused)
        ]


def upsample_to(x: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Trilinear interpolation with ``align_corners=True`` to a spatial ``size``."""
    return F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=True)
