"""Vision Transformer (ViT) for volumes: cubic patches, a class token and a resizable position embedding.

The paper's "ViT" baseline (Dosovitskiy et al., 2021; DESIGN.md §9) with ``p_D x p_H x p_W`` patches (16³ default)::

    z_0 = [cls; E x_1; ...; E x_L] + P,     L = (D/p_D)(H/p_H)(W/p_W)
    z_l = z_{l-1}' + MLP(LN(z_{l-1}')),  z_{l-1}' = z_{l-1} + MSA(LN(z_{l-1}))     l = 1..depth
    y   = head(pool(LN(z_depth)))

Shapes: ``(N, C, D, H, W) -> tokens (N, 1 + L, embed_dim) -> (N, num_classes)``; each axis a positive multiple of
its patch (``ValueError`` otherwise). The blocks are timm's ``Block``; parameter names are timm's.

- *(ours)* a grid other than ``img_size``'s resamples the position embedding trilinearly (no 3-D bicubic); class kept.
- *(ours)* ``global_pool``: ``"token"`` (timm's default), ``"avg"`` / ``"max"`` over patch tokens, or ``""``
  (``(N, 1 + L, num_classes)``); the final ``norm`` precedes every pooling (timm: ``fc_norm`` for ``"avg"``).
- *(ours)* ``forward`` returns a tensor, never a tuple (MONAI's 3-D ViT returns one).
- *(ours)* class defaults are ``vit_base_patch16_3d`` at ``img_size=(64, 96, 96)`` (4 x 6 x 6 = 144 patch tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from backbones3d._builder import build_model_with_cfg
from backbones3d._contract import FlatHeadContract, check_rate, linear_drop_path_rates, run_blocks
from backbones3d._registry import register_model
from spectral3d.checks import check_channels, check_ndim, to_3tuple_int
from spectral3d.layers.heads import POOL_TYPES, check_global_pool
from spectral3d.layers.patch_embed import PatchEmbed3d

__all__ = ["PatchEmbed3d", "VisionTransformer3d"]


class VisionTransformer3d(FlatHeadContract):
    """ViT over 3-D patches with a class token and a position embedding resampled to the input grid.

    Args:
        img_size: the ``(D, H, W)`` (or int) the position embedding is stored for; other tiled sizes resample it.
        num_heads: attention heads.
        qkv_bias: bias in the query/key/value projection.
        in_chans, num_classes, global_pool, patch_size, embed_dim, depth, mlp_ratio, drop_rate, pos_drop_rate,
            proj_drop_rate, attn_drop_rate, drop_path_rate: see :class:`~backbones3d._contract.HeadContract`.

    Example::

        >>> model = VisionTransformer3d(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
        >>> model(torch.randn(1, 3, 32, 32, 32)).shape, model.forward_features(torch.randn(1, 3, 16, 24, 40)).shape
        (torch.Size([1, 2]), torch.Size([1, 31, 32]))
    """

    classifier_name = "head"
    global_pools = ("token", *POOL_TYPES)

    def __init__(
        self,
        img_size: int | Sequence[int] = (64, 96, 96),
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        num_classes: int = 2,
        global_pool: str = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_global_pool(global_pool, allowed=self.global_pools)
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim: expected a multiple of num_heads={num_heads}, got {embed_dim}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.grad_checkpointing = False
        self.img_size = to_3tuple_int(img_size, "img_size")

        self.patch_embed = PatchEmbed3d(patch_size, in_chans, embed_dim)
        self.grid_size = self.patch_embed.grid_size(self.img_size, name="img_size")
        num_patches = self.grid_size[0] * self.grid_size[1] * self.grid_size[2]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, embed_dim))
        self.pos_drop = nn.Dropout(check_rate(pos_drop_rate, "pos_drop_rate"))
        rates = linear_drop_path_rates(drop_path_rate, (depth,))[0]
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(
            *[
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=rates[i],
                    norm_layer=norm_layer,
                )
                for i in range(depth)
            ]
        )
        self.norm = norm_layer(embed_dim)
        self.head_drop = nn.Dropout(check_rate(drop_rate, "drop_rate"))
        self.head: nn.Module = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters timm's optimiser factory keeps out of weight decay."""
        return {"pos_embed", "cls_token"}

    def position_embedding(self, grid: Sequence[int]) -> torch.Tensor:
        """``(1, 1 + prod(grid), embed_dim)`` for a patch grid ``(d, h, w)`` (trilinear), class-token part kept."""
        if tuple(grid) == self.grid_size:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, *self.grid_size, self.embed_dim).permute(0, 4, 1, 2, 3)
        patch_pos = F.interpolate(patch_pos, size=tuple(grid), mode="trilinear", align_corners=False)
        return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_chans, D, H, W) -> (N, 1 + L, embed_dim)``: normalised tokens, class token first."""
        check_ndim(x, 5)
        check_channels(x, self.in_chans)
        grid = self.patch_embed.grid_size(x.shape[2:])
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = self.pos_drop(x + self.position_embedding(grid).to(x.dtype))
        return self.norm(run_blocks(self.blocks, x, self.grad_checkpointing))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens and classify; ``pre_logits=True`` returns the pooled ``(N, embed_dim)``."""
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens :].mean(dim=1)
        elif self.global_pool == "max":
            x = x[:, self.num_prefix_tokens :].amax(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def gradcam_target_layers(self) -> dict[str, list[list[nn.Module]]]:
        """Grad-CAM candidate layers (``spectral3d.gradcam``): the blocks, deepest first."""
        return {"input": [[block] for block in reversed(self.blocks)]}

    def gradcam_reshape(self, tokens: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """A block's tokens ``(N, 1 + L, C)`` for an input of ``size`` ``(D, H, W)`` -> ``(N, C, d, h, w)``
        on the patch grid, class token dropped."""
        grid = self.patch_embed.grid_size(size)
        n_patch = grid[0] * grid[1] * grid[2]
        if tokens.ndim != 3 or tokens.shape[1] != self.num_prefix_tokens + n_patch:
            raise ValueError(
                f"tokens: expected (N, {self.num_prefix_tokens} + {n_patch}, C) for the patch grid {tuple(grid)}, "
                f"got {tuple(tokens.shape)}"
            )
        return tokens[:, self.num_prefix_tokens :].transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "input_size": (3, 64, 96, 96),
        "num_classes": 2,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        **kwargs,
    }


default_cfgs = {
    "vit_tiny_patch16_3d": _cfg(),
    "vit_small_patch16_3d": _cfg(),
    "vit_base_patch16_3d": _cfg(),
    "test_vit_3d": _cfg(input_size=(3, 32, 32, 32)),
}


def _create_vit3d(variant: str, pretrained: bool = False, **kwargs: Any) -> VisionTransformer3d:
    return build_model_with_cfg(VisionTransformer3d, variant, pretrained, **kwargs)


@register_model
def vit_tiny_patch16_3d(pretrained: bool = False, **kwargs: Any) -> VisionTransformer3d:
    """ViT-Ti/16 3D: width 192, depth 12, 3 heads (timm's ``vit_tiny_patch16_224``)."""
    args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _create_vit3d("vit_tiny_patch16_3d", pretrained, **dict(args, **kwargs))


@register_model
def vit_small_patch16_3d(pretrained: bool = False, **kwargs: Any) -> VisionTransformer3d:
    """ViT-S/16 3D: width 384, depth 12, 6 heads (timm's ``vit_small_patch16_224``)."""
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_vit3d("vit_small_patch16_3d", pretrained, **dict(args, **kwargs))


@register_model
def vit_base_patch16_3d(pretrained: bool = False, **kwargs: Any) -> VisionTransformer3d:
    """ViT-B/16 3D: width 768, depth 12, 12 heads (timm's ``vit_base_patch16_224``)."""
    args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _create_vit3d("vit_base_patch16_3d", pretrained, **dict(args, **kwargs))


@register_model
def test_vit_3d(pretrained: bool = False, **kwargs: Any) -> VisionTransformer3d:
    """A tiny ViT 3D for tests: patch 8, width 64, depth 2, 2 heads, stored grid for 32³."""
    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)
    return _create_vit3d("test_vit_3d", pretrained, **dict(args, **kwargs))
