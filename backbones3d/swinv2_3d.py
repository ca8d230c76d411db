"""Swin Transformer V2 for volumes: shifted 3-D windows, cosine attention, continuous position bias.

The paper's "Swin-TransformerV2" baseline (DESIGN.md §9): timm's ``swin_transformer_v2.py`` with cuboid windows,
keeping its parameter names. Per block, on channels-last tokens ``x`` of shape ``(N, D, H, W, C)``::

    x = x + DropPath(LN_1(W-MSA(x)))          (res-post-norm: the norm follows the branch)
    x = x + DropPath(LN_2(MLP(x)))

    W-MSA, per window of n = w_D w_H w_W tokens and per head:
    Attn = softmax( tau * cos(q_i, k_j) + B(i - j) + M_ij ) V
    tau  = exp(min(logit_scale, log 100))                         (learned per head, clamped)
    B(Δ) = 16 * sigmoid(MLP_cpb(Δ̂)),  Δ̂ = sign(Δ') * log2(1 + |Δ'|) / log2(8),
           Δ' = 8 * Δ / max(w - 1, 1)  per axis                    (log-spaced continuous bias)

Every other block shifts its windows by ``w // 2`` (cyclic roll; the mask ``M`` keeps attention inside regions that
were contiguous before the roll). Shapes (input ``(N, C_in, D, H, W)``, each axis a multiple of ``patch_size``)::

    patch_embed  Conv 4x4x4 stride 4 + LN          -> (N, D/4, H/4, W/4, C)       C = embed_dim
    layers.0     depths[0] blocks                  -> (N, D/4, H/4, W/4, C)
    layers.i     patch merging (2x2x2 -> 2C), then -> (N, ~D/2^(i+2), ..., 2^i C)   i = 1, 2, 3
                 depths[i] blocks
    norm, (N, d, h, w, 8C) -> channels-first        -> forward_features: (N, 8C, d, h, w)
    head         global pool -> dropout -> Linear  -> (N, num_classes)

Per forward pass, an axis no longer than the window gets a window of its extent and no shift; otherwise the map is
zero-padded to a window multiple and cropped after the attention. Reasons: benchmarks/results/model_notes.md#swinv2_3d

- *(ours)* padded tokens are masked out as keys (timm lets them attend as zero tokens).
- *(ours)* masked logits get ``-1e4`` (timm's ``-100`` does not mask when ``tau`` reaches 100).
- *(ours)* a shrunk window keeps the configured window's offset normalisation ``max(w - 1, 1)``.
- *(ours)* attention runs through ``scaled_dot_product_attention`` (``scale=1``, bias + mask additive).
- *(ours)* default window ``(4, 6, 6)`` for the default input ``(64, 96, 96)``.
- *(ours)* ``drop_path_rate`` defaults to 0 (timm: 0.1); ``forward_features`` is channels-first (timm: NHWC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn

from backbones3d._builder import build_model_with_cfg
from backbones3d._contract import HeadContract, linear_drop_path_rates, run_blocks
from backbones3d._registry import register_model
from spectral3d.checks import check_channels, check_ndim, to_3tuple_int
from spectral3d.layers.heads import ClassifierHead3d, check_global_pool
from spectral3d.layers.patch_embed import PatchEmbed3d

__all__ = [
    "PatchEmbed3d",
    "PatchMerging3d",
    "SwinTransformerV2Block3d",
    "SwinTransformerV2Stage3d",
    "SwinTransformerV2_3d",
    "WindowAttention3d",
    "relative_coords_table_3d",
]

_MASK_VALUE = -1.0e4
Size3 = tuple[int, int, int]


def relative_coords_table_3d(window_size: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """Offsets ``Δ̂`` (module docstring) of a window: ``((2w_D-1)(2w_H-1)(2w_W-1), 3)`` float32, 0 where ``w = 1``."""
    axes = []
    for w in window_size:
        offsets = torch.arange(-(w - 1), w, device=device, dtype=torch.float32) * (8.0 / max(w - 1, 1))
        axes.append(torch.sign(offsets) * torch.log2(offsets.abs() + 1.0) / math.log2(8))
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def _relative_position_index(window: Size3, table_window: Size3, device: torch.device | None = None) -> torch.Tensor:
    """``(n, n)`` index into the offset table of ``table_window`` for every token pair of ``window``."""
    coords = torch.stack(
        torch.meshgrid(*[torch.arange(w, device=device) for w in window], indexing="ij"), dim=0
    ).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # (3, n, n), offsets in (-(w-1), w-1)
    t = [2 * w - 1 for w in table_window]
    rel = rel + torch.tensor([w - 1 for w in table_window], device=device).view(3, 1, 1)
    return rel[0] * (t[1] * t[2]) + rel[1] * t[2] + rel[2]


def _window_partition(x: torch.Tensor, window: Size3) -> torch.Tensor:
    """``(B, D, H, W, C) -> (B, num_windows, w_D * w_H * w_W, C)``; sizes must be window multiples."""
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, -1, wd * wh * ww, c)


def _window_reverse(windows: torch.Tensor, window: Size3, size: Size3) -> torch.Tensor:
    """Inverse of :func:`_window_partition`: ``(B, num_windows, n, C) -> (B, D, H, W, C)``."""
    b, c = windows.shape[0], windows.shape[-1]
    (wd, wh, ww), (d, h, w) = window, size
    x = windows.view(b, d // wd, h // wh, w // ww, wd, wh, ww, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, d, h, w, c)


def _window_mask(size: Size3, padded: Size3, window: Size3, shift: Size3, device: torch.device) -> torch.Tensor:
    """Additive ``(num_windows, n, n)`` mask on the padded, rolled grid: same pre-roll region and a real key."""
    labels, valid = [], []
    for s, p, w, sh in zip(size, padded, window, shift):
        idx = torch.arange(p, device=device)
        region = (idx >= p - w).long() + (idx >= p - sh).long() if sh > 0 else torch.zeros_like(idx)
        labels.append(region)
        valid.append((idx + sh) % p < s)
    label = labels[0].view(-1, 1, 1) * 9 + labels[1].view(1, -1, 1) * 3 + labels[2].view(1, 1, -1)
    real = valid[0].view(-1, 1, 1) & valid[1].view(1, -1, 1) & valid[2].view(1, 1, -1)
    label = _window_partition(label[None, ..., None], window)[0, ..., 0]  # (num_windows, n)
    real = _window_partition(real[None, ..., None], window)[0, ..., 0]
    allowed = (label[:, :, None] == label[:, None, :]) & real[:, None, :]
    return torch.zeros(allowed.shape, device=device).masked_fill_(~allowed, _MASK_VALUE)


class WindowAttention3d(nn.Module):
    """SwinV2 W-MSA (module docstring), ``(B, num_windows, n, C)``; ``qkv_bias``: q, v only (k bias 0, as SwinV2)."""

    def __init__(
        self,
        dim: int,
        window_size: int | Sequence[int],
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        cpb_hidden: int = 512,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim: expected a multiple of num_heads={num_heads}, got {dim}")
        self.dim = dim
        self.window_size = to_3tuple_int(window_size, "window_size")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(3, cpb_hidden), nn.ReLU(inplace=True), nn.Linear(cpb_hidden, num_heads, bias=False)
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qkv_bias:
            self.q_bias: nn.Parameter | None = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
            self.v_bias: nn.Parameter | None = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer("relative_coords_table", relative_coords_table_3d(self.window_size), persistent=False)
        self.register_buffer(
            "relative_position_index",
            _relative_position_index(self.window_size, self.window_size),
            persistent=False,
        )

    def position_bias(self, window: Size3 | None = None) -> torch.Tensor:
        """The ``(num_heads, n, n)`` bias ``16 * sigmoid(MLP_cpb(Δ̂))`` for ``window`` (default: configured)."""
        window = self.window_size if window is None else tuple(window)
        table = 16.0 * torch.sigmoid(self.cpb_mlp(self.relative_coords_table))  # (T, num_heads)
        if window == self.window_size:
            index = self.relative_position_index
        else:
            index = _relative_position_index(window, self.window_size, device=table.device)
        n = index.shape[0]
        return table[index.reshape(-1)].view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, window: Size3 | None = None) -> torch.Tensor:
        """``x: (B, num_windows, n, C)``, additive ``mask: (num_windows, n, n)``, ``window`` (default: configured)."""
        b, nw, n, c = x.shape
        h = self.num_heads
        bias = None if self.q_bias is None else torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).view(b, nw, n, 3, h, c // h).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # each (B, num_windows, heads, n, c/h)
        tau = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        q = F.normalize(q, dim=-1) * tau.to(q.dtype)
        k = F.normalize(k, dim=-1)
        attn_mask = self.position_bias(window)  # (heads, n, n)
        if mask is None:
            q, k, v = (t.reshape(b * nw, h, n, c // h) for t in (q, k, v))
        else:
            attn_mask = (attn_mask.unsqueeze(0) + mask.unsqueeze(1)).reshape(nw * h, n, n)
            q, k, v = (t.reshape(b, nw * h, n, c // h) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask.to(q.dtype), dropout_p=self.attn_drop if self.training else 0.0, scale=1.0
        )
        out = out.view(b, nw, h, n, c // h).transpose(2, 3).reshape(b, nw, n, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerV2Block3d(nn.Module):
    """SwinV2 block (module docstring), windows shifted by ``w // 2`` if ``shifted``; ``(N, D, H, W, C)``, any size."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int | Sequence[int] = (4, 6, 6),
        shifted: bool = False,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = to_3tuple_int(window_size, "window_size")
        self.shift_size: Size3 = tuple(w // 2 for w in self.window_size) if shifted else (0, 0, 0)  # type: ignore[assignment]
        self.attn = WindowAttention3d(dim, self.window_size, num_heads, qkv_bias, attn_drop, proj_drop)
        self.norm1 = nn.LayerNorm(dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.norm2 = nn.LayerNorm(dim)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def window_and_shift(self, size: Sequence[int]) -> tuple[Size3, Size3]:
        """Window and shift for extent ``size``: an axis no longer than the window gets its extent and no shift."""
        window = tuple(min(w, s) for w, s in zip(self.window_size, size))
        shift = tuple(0 if s <= w else sh for s, w, sh in zip(size, self.window_size, self.shift_size))
        return window, shift  # type: ignore[return-value]

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        size: Size3 = tuple(x.shape[1:4])  # type: ignore[assignment]
        window, shift = self.window_and_shift(size)
        pads = [(w - s % w) % w for s, w in zip(size, window)]
        padded: Size3 = tuple(s + p for s, p in zip(size, pads))  # type: ignore[assignment]
        if any(pads):
            x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        if any(shift):
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        mask = _window_mask(size, padded, window, shift, x.device) if any(shift) or any(pads) else None
        x = _window_reverse(self.attn(_window_partition(x, window), mask, window), window, padded)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        return x[:, : size[0], : size[1], : size[2]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.norm1(self._attention(x)))
        return x + self.drop_path2(self.norm2(self.mlp(x)))

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, shift_size={self.shift_size}"


class PatchMerging3d(nn.Module):
    """2x2x2 concat (8C) → Linear (no bias) → LN: ``(N, D, H, W, C) -> (N, ⌈D/2⌉, ⌈H/2⌉, ⌈W/2⌉, out_dim or 2C)``."""

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.out_dim = out_dim or 2 * dim
        self.reduction = nn.Linear(8 * dim, self.out_dim, bias=False)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, c = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
            d, h, w = d + d % 2, h + h % 2, w + w % 2
        x = x.view(b, d // 2, 2, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4, 6, 7).flatten(4)
        return self.norm(self.reduction(x))


class SwinTransformerV2Stage3d(nn.Module):
    """``downsample``: :class:`PatchMerging3d`; then ``depth`` blocks, plain/shifted: ``(N, D', H', W', out_dim)``."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        depth: int,
        num_heads: int,
        window_size: int | Sequence[int] = (4, 6, 6),
        downsample: bool = False,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if not downsample and dim != out_dim:
            raise ValueError(f"out_dim: expected {dim} (= dim) without downsampling, got {out_dim}")
        self.downsample: nn.Module = PatchMerging3d(dim, out_dim) if downsample else nn.Identity()
        rates = [drop_path] * depth if isinstance(drop_path, (int, float)) else list(drop_path)
        self.blocks = nn.Sequential(
            *[
                SwinTransformerV2Block3d(
                    out_dim, num_heads, window_size, i % 2 == 1, mlp_ratio, qkv_bias, proj_drop, attn_drop, rates[i]
                )
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        return run_blocks(self.blocks, x, self.grad_checkpointing)


class SwinTransformerV2_3d(HeadContract):
    """Swin Transformer V2 for volumes (timm's ``SwinTransformerV2`` with cuboid windows).

    Args:
        embed_dim: channels of the first stage (doubled at each merging).
        num_heads: attention heads per stage.
        window_size: the window, an int or ``(D, H, W)``, shared by all stages.
        qkv_bias: query/value biases.
        in_chans, num_classes, global_pool, patch_size, depths, mlp_ratio, drop_rate, proj_drop_rate, attn_drop_rate,
            drop_path_rate: see :class:`~backbones3d._contract.HeadContract`.

    Example::

        >>> model = SwinTransformerV2_3d(embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=2)
        >>> x = torch.randn(1, 3, 16, 20, 24); model(x).shape, model.forward_features(x).shape
        (torch.Size([1, 2]), torch.Size([1, 32, 2, 3, 3]))
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 2,
        global_pool: str = "avg",
        patch_size: int | Sequence[int] = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = (4, 6, 6),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_global_pool(global_pool)
        if len(depths) != len(num_heads) or not depths:
            raise ValueError(
                f"depths, num_heads: expected sequences of one equal length, got {depths!r} and {num_heads!r}"
            )
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.patch_size = to_3tuple_int(patch_size, "patch_size")
        self.window_size = to_3tuple_int(window_size, "window_size")
        self.grad_checkpointing = False
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.num_features = self.head_hidden_size = dims[-1]

        self.patch_embed = PatchEmbed3d(self.patch_size, in_chans, embed_dim, nn.LayerNorm, output_fmt="NDHWC")
        rates = linear_drop_path_rates(drop_path_rate, depths)
        self.feature_info: list[dict[str, Any]] = []
        layers = []
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            layers.append(
                SwinTransformerV2Stage3d(
                    dims[max(i - 1, 0)],
                    dims[i],
                    depth,
                    heads,
                    self.window_size,
                    downsample=i > 0,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=rates[i],
                )
            )
            self.feature_info.append(dict(num_chs=dims[i], reduction=max(self.patch_size) * 2**i, module=f"layers.{i}"))
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ClassifierHead3d(self.num_features, num_classes, global_pool, drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for stage in self.layers:
            for block in stage.blocks:  # res-post-norm starts at zero: every block starts as the identity
                for norm in (block.norm1, block.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters timm's optimiser factory keeps out of weight decay: the position-bias MLPs and logit scales."""
        return {n for n, _ in self.named_parameters() if ".cpb_mlp." in n or n.endswith("logit_scale")}

    def gradcam_target_layers(self) -> dict[str, list[list[nn.Module]]]:
        """Grad-CAM candidate layers (``spectral3d.gradcam``): the stages, deepest first."""
        return {"input": [[m] for m in reversed(self.layers)]}

    def gradcam_reshape(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """A stage's channels-last output ``(N, d, h, w, C)`` -> ``(N, C, d, h, w)`` (``size`` unused)."""
        return x.permute(0, 4, 1, 2, 3) if x.ndim == 5 else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_chans, D, H, W) -> (N, num_features, d, h, w)``, after the final norm."""
        check_ndim(x, 5)
        check_channels(x, self.in_chans)
        x = self.norm(self.layers(self.patch_embed(x)))
        return x.permute(0, 4, 1, 2, 3)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "input_size": (3, 64, 96, 96),
        "num_classes": 2,
        "first_conv": "patch_embed.proj",
        "classifier": "head.fc",
        **kwargs,
    }


default_cfgs = {
    "swinv2_tiny_3d": _cfg(),
    "swinv2_small_3d": _cfg(),
    "test_swinv2_3d": _cfg(input_size=(3, 32, 32, 32)),
}


def _create_swinv2_3d(variant: str, pretrained: bool = False, **kwargs: Any) -> SwinTransformerV2_3d:
    return build_model_with_cfg(SwinTransformerV2_3d, variant, pretrained, **kwargs)


@register_model
def swinv2_tiny_3d(pretrained: bool = False, **kwargs: Any) -> SwinTransformerV2_3d:
    """SwinV2-T 3D: embed 96, depths 2-2-6-2, heads 3-6-12-24, window 4x6x6 (timm's ``swinv2_tiny_*``)."""
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=(4, 6, 6))
    return _create_swinv2_3d("swinv2_tiny_3d", pretrained, **dict(args, **kwargs))


@register_model
def swinv2_small_3d(pretrained: bool = False, **kwargs: Any) -> SwinTransformerV2_3d:
    """SwinV2-S 3D: embed 96, depths 2-2-18-2, heads 3-6-12-24, window 4x6x6 (timm's ``swinv2_small_*``)."""
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=(4, 6, 6))
    return _create_swinv2_3d("swinv2_small_3d", pretrained, **dict(args, **kwargs))


@register_model
def test_swinv2_3d(pretrained: bool = False, **kwargs: Any) -> SwinTransformerV2_3d:
    """A tiny SwinV2 3D for tests: embed 16, depths 1-2-1, heads 1-2-4, window 2x3x3, patch 2."""
    args = dict(patch_size=2, embed_dim=16, depths=(1, 2, 1), num_heads=(1, 2, 4), window_size=(2, 3, 3))
    return _create_swinv2_3d("test_swinv2_3d", pretrained, **dict(args, **kwargs))
