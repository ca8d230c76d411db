"""ConvNeXt V2 in 3D: timm's ``convnextv2_*`` layer for layer, with one more spatial axis.

The paper's "ConvNeXtV2" baseline (Woo et al., 2023; DESIGN.md §9): timm's ``convnext.py`` with ``use_grn=True``
and no layer scale. Per block, on ``x`` of shape ``(N, C, D, H, W)``::

    y = x + DropPath(fc2(GRN(GELU(fc1(LN(DWConv_7x7x7(x)))))))

    GRN(z) = weight * (z * ||z||_DHW / (mean_C ||z||_DHW + 1e-6)) + bias + z     (spectral3d GRN3d)

Shapes through the network (input ``(N, C_in, D, H, W)``, every axis a multiple of 32)::

    stem      Conv 4x4x4 stride 4 + LN     -> (N, dims[0], D/4,  H/4,  W/4)
    stage 0   depths[0] blocks             -> (N, dims[0], D/4,  H/4,  W/4)
    stage i   LN + Conv 2x2x2 stride 2,    -> (N, dims[i], D/2^(i+2), ...)      i = 1, 2, 3
              then depths[i] blocks
    head      global pool -> LN -> dropout -> Linear  -> (N, num_classes)

timm's names and per-variant layouts (``inflate_2d`` key for key: benchmarks/results/model_notes.md#convnextv2_3d);
an axis not a positive multiple of ``patch_size * 2**(len(depths) - 1)`` raises ``ValueError`` (DESIGN.md §2).

- *(ours)* class defaults are ``convnextv2_tiny_3d`` with ``in_chans=3``, ``num_classes=2``, input ``(3, 64, 96, 96)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

from backbones3d._builder import build_model_with_cfg
from backbones3d._contract import StagedContract, linear_drop_path_rates, run_blocks
from backbones3d._registry import register_model
from spectral3d.checks import check_channels, check_divisible, check_ndim
from spectral3d.layers.convnextv2_block import ConvNeXtV2Block3d
from spectral3d.layers.heads import ClassifierHead3d, check_global_pool
from spectral3d.layers.norm import LayerNorm3d

__all__ = ["ConvNeXtStage3d", "ConvNeXtV2_3d"]


class ConvNeXtStage3d(nn.Module):
    """``stride=2``: LayerNorm + 2x2x2 stride-2 conv (unpadded: even axes); then ``depth`` ConvNeXt V2 blocks."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        stride: int = 2,
        kernel_size: int | Sequence[int] = 7,
        mlp_ratio: float = 4.0,
        conv_mlp: bool = False,
        drop_path_rates: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if stride > 1 or in_chs != out_chs:
            k = 2 if stride > 1 else 1
            self.downsample: nn.Module = nn.Sequential(
                LayerNorm3d(in_chs), nn.Conv3d(in_chs, out_chs, kernel_size=k, stride=stride)
            )
        else:
            self.downsample = nn.Identity()
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.0] * depth
        self.blocks = nn.Sequential(
            *[
                ConvNeXtV2Block3d(out_chs, rates[i], kernel_size=kernel_size, mlp_ratio=mlp_ratio, conv_mlp=conv_mlp)
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        return run_blocks(self.blocks, x, self.grad_checkpointing)


class ConvNeXtV2_3d(StagedContract):
    """ConvNeXt V2 for volumes (timm's ``ConvNeXt`` with ``use_grn=True``, no layer scale).

    Args:
        conv_mlp: timm's channels-first block layout (atto–nano); tiny/base are channels-last.
        in_chans, num_classes, global_pool, depths, dims, kernel_size, patch_size, mlp_ratio, head_init_scale,
            drop_rate, drop_path_rate: see :class:`~backbones3d._contract.HeadContract`.

    Example::

        >>> model, x = ConvNeXtV2_3d(in_chans=2, depths=(1,) * 4, dims=(8, 16, 24, 32)), torch.randn(1, 2, 32, 32, 64)
        >>> model(x).shape, model.forward_features(x).shape
        (torch.Size([1, 2]), torch.Size([1, 32, 1, 1, 2]))
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 2,
        global_pool: str = "avg",
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        kernel_size: int | Sequence[int] = 7,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        conv_mlp: bool = False,
        head_init_scale: float = 1.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(depths) != len(dims) or not depths:
            raise ValueError(f"depths, dims: expected sequences of one equal length, got {depths!r} and {dims!r}")
        check_global_pool(global_pool)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.patch_size = patch_size
        self.size_multiple = patch_size * 2 ** (len(depths) - 1)
        self.grad_checkpointing = False

        self.stem = nn.Sequential(
            nn.Conv3d(in_chans, dims[0], kernel_size=patch_size, stride=patch_size), LayerNorm3d(dims[0])
        )
        rates = linear_drop_path_rates(drop_path_rate, depths)
        stages = []
        prev = dims[0]
        self.feature_info: list[dict[str, Any]] = []
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            stride = 1 if i == 0 else 2
            stages.append(
                ConvNeXtStage3d(prev, dim, depth, stride, kernel_size, mlp_ratio, conv_mlp, drop_path_rates=rates[i])
            )
            prev = dim
            self.feature_info.append(dict(num_chs=dim, reduction=patch_size * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = dims[-1]
        self.head = ClassifierHead3d(
            self.num_features, num_classes, global_pool, drop_rate, norm_layer=partial(nn.LayerNorm, eps=1e-6)
        )
        self._init_weights(head_init_scale)

    def _init_weights(self, head_init_scale: float) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if isinstance(self.head.fc, nn.Linear):
            with torch.no_grad():
                self.head.fc.weight.mul_(head_init_scale)
                self.head.fc.bias.mul_(head_init_scale)

    def _check_input(self, x: torch.Tensor) -> None:
        check_ndim(x, 5)
        check_channels(x, self.in_chans)
        m = self.size_multiple
        check_divisible(x.shape[2:], (m, m, m), what=f"the stride-{self.patch_size} stem and stride-2 downsampling")


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "input_size": (3, 64, 96, 96),
        "num_classes": 2,
        "first_conv": "stem.0",
        "classifier": "head.fc",
        **kwargs,
    }


default_cfgs = {
    "convnextv2_atto_3d": _cfg(),
    "convnextv2_femto_3d": _cfg(),
    "convnextv2_pico_3d": _cfg(),
    "convnextv2_nano_3d": _cfg(),
    "convnextv2_tiny_3d": _cfg(),
    "convnextv2_base_3d": _cfg(),
    "test_convnextv2_3d": _cfg(input_size=(3, 32, 32, 32)),
}


def _create_convnextv2_3d(variant: str, pretrained: bool = False, **kwargs: Any) -> ConvNeXtV2_3d:
    return build_model_with_cfg(ConvNeXtV2_3d, variant, pretrained, **kwargs)


@register_model
def convnextv2_atto_3d(pretrained: bool = False, **kwargs: Any) -> ConvNeXtV2_3d:
    """ConvNeXt V2 Atto 3D: depths 2-2-6-2, dims 40-80-160-320 (timm's ``convnextv2_atto``)."""
    args = dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), conv_mlp=True)
    return _create_convnextv2_3d("convnextv2_atto_3d", pretrained, **dict(args, **kwargs))


@register_model
def convnextv2_femto_3d(pretrained: bool = False, **kwargs: Any) -> ConvNeXtV2_3d:
    """ConvNeXt V2 Femto 3D: depths 2-2-6-2, dims 48-96-192-384 (timm's ``convnextv2_femto``)."""
    args = dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384), conv_mlp=True)
    return _create_convnextv2_3d("convnextv2_femto_3d", pretrained, **dict(args, **kwargs))


@register_model
def convnextv2_pico_3d(pretrained: bool = False, **kwargs: Any) -> ConvNeXtV2_3d:
    """ConvNeXt V2 Pico 3D: depths 2-2-6-2, dims 64-128-256-512 (timm's ``convnextv2_pico``)."""
    args = dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512), conv_mlp=True)
    return _create_convnextv2_3d("convnextv2_pico_3d", pretrained, **dict(args, **kwargs))


@register_model
def convnextv2_nano_3d(pretrained: bool = False, **kwargs: Any) -> ConvNeXtV2_3d:
    """ConvNeXt V2 Nano 3D: depths 2-2-8-2, dims 80-160-320-640 (timm's ``convnextv2_nano``)."""
    args = dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), conv_mlp=True)
    return _create_convnextv2_3d("convnextv2_nano_3d", pretrained, **dict(args, **kwargs))


@register_model
def convnextv2_tiny_3d(pretrained: bool = False, **kwargs: Any) -> ConvNeXtV2_3d:
    """ConvNeXt V2 Tiny 3D: depths 3-3-9-3, dims 96-192-384-768 (timm's ``convnextv2_tiny``)."""
    args = dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
    return _create_convnextv2_3d("convnextv2_tiny_3d", pretrained, **dict(args, **kwargs))


@register_model
def convnextv2_base_3d(pretrained: bool = False, **kwargs: Any) -> ConvNeXtV2_3d:
    """ConvNeXt V2 Base 3D: depths 3-3-27-3, dims 128-256-512-1024 (timm's ``convnextv2_base``)."""
    args = dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))
    return _create_convnextv2_3d("convnextv2_base_3d", pretrained, **dict(args, **kwargs))


@register_model
def test_convnextv2_3d(pretrained: bool = False, **kwargs: Any) -> ConvNeXtV2_3d:
    """A tiny ConvNeXt V2 3D for tests: depths 1-1-2-1, dims 16-24-32-48, input 32³."""
    args = dict(depths=(1, 1, 2, 1), dims=(16, 24, 32, 48))
    return _create_convnextv2_3d("test_convnextv2_3d", pretrained, **dict(args, **kwargs))
