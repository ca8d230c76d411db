"""3D EfficientNet-B0 … B3: the paper's EfficientNet baseline (DESIGN.md §9).

EfficientNet (Tan & Le 2019) with 3D operators, on ``x`` of shape ``(N, in_chans, D, H, W)``::

    stem:   conv_stem 3³ (stride 2) → bn1 → SiLU
    stages: seven stages of MBConv blocks (table below), the first of each possibly strided
    MBConv: conv_pw 1³ (C → e·C) → bn1 → SiLU → conv_dw k³ depthwise (stride s) → bn2 → SiLU
            → SE → conv_pwl 1³ (→ C') → bn3, plus x (through stochastic depth) when s = 1, C = C'
            (stage 1, e = 1: conv_dw → bn1 → SiLU → SE → conv_pw → bn2, timm's DepthwiseSeparableConv)
    SE:     x · σ(conv_expand(SiLU(conv_reduce(mean_{D,H,W}(x))))), squeezing to C_in/4 channels
    head:   conv_head 1³ (→ 1280) → bn2 → SiLU → global pool → dropout(``drop_rate``) → classifier

    stage   1    2    3    4    5    6    7
    block   ds   ir   ir   ir   ir   ir   ir     e = 1 for ds, 6 for ir
    k       3    3    5    3    5    5    3
    s       1    2    2    2    1    2    1
    C'      16   24   40   80   112  192  320
    repeats 1    2    2    3    3    4    1

B1–B3 scale widths and repeats with timm's rounding. Every conv pads ``k // 2``: any size ≥ 1, ``forward_features``
``(N, num_features, ⌈D/32⌉, ⌈H/32⌉, ⌈W/32⌉)``. timm's ``efficientnet_b*`` module tree, names and initialisation
(``inflate_2d`` matches every key; benchmarks/results/model_notes.md#efficientnet3d).

- *(ours)* ``drop_rate`` defaults to 0, like timm's constructor (EfficientNet trains B0 with 0.2).
"""

from __future__ import annotations

import math

import torch
from timm.layers import DropPath, make_divisible
from torch import nn

from backbones3d._builder import build_model_with_cfg
from backbones3d._contract import FlatHeadContract, check_int, check_rate, run_blocks
from backbones3d._registry import register_model
from spectral3d.checks import check_channels, check_finite, check_floating, check_ndim
from spectral3d.layers.depthwise import DepthwiseConv3d
from spectral3d.layers.heads import check_global_pool

__all__ = ["DepthwiseSeparable3d", "EfficientNet3d", "InvertedResidual3d", "SqueezeExcite3d"]

# (block type, repeats, kernel, stride, expansion, output channels) per stage; SE ratio 0.25 throughout.
EFFICIENTNET_STAGES: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)


def _depthwise(chs: int, kernel_size: int, stride: int) -> nn.Conv3d:
    """The depthwise k³ conv, padded ``k // 2``: :class:`DepthwiseConv3d` (the fast op) at stride 1."""
    if stride == 1:
        return DepthwiseConv3d(chs, kernel_size, bias=False)
    return nn.Conv3d(chs, chs, kernel_size, stride, kernel_size // 2, groups=chs, bias=False)


class SqueezeExcite3d(nn.Module):
    """Squeeze-and-excitation (module docstring's ``SE``): ``chs → rd_chs → chs`` gates on the global mean."""

    def __init__(self, chs: int, rd_chs: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv3d(chs, rd_chs, 1, bias=True)
        self.act1 = nn.SiLU(inplace=True)
        self.conv_expand = nn.Conv3d(rd_chs, chs, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3, 4), keepdim=True)
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(s))))


class DepthwiseSeparable3d(nn.Module):
    """Depthwise k³ conv → BN → SiLU → SE (``se_ratio · in_chs``) → pointwise 1³ conv → BN (stage 1)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        se_ratio: float = 0.25,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_dw = _depthwise(in_chs, kernel_size, stride)
        self.bn1 = nn.BatchNorm3d(in_chs)
        self.act1 = nn.SiLU(inplace=True)
        self.se = SqueezeExcite3d(in_chs, round(in_chs * se_ratio))
        self.conv_pw = nn.Conv3d(in_chs, out_chs, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_chs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.act1(self.bn1(self.conv_dw(x))))
        y = self.bn2(self.conv_pw(y))
        return self.drop_path(y) + x if self.has_skip else y


class InvertedResidual3d(nn.Module):
    """MBConv (module docstring); hidden width ``make_divisible(in_chs · exp_ratio, 8)``, residual when shapes agree."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        exp_ratio: float = 6.0,
        se_ratio: float = 0.25,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        mid_chs = make_divisible(in_chs * exp_ratio)
        self.conv_pw = nn.Conv3d(in_chs, mid_chs, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid_chs)
        self.act1 = nn.SiLU(inplace=True)
        self.conv_dw = _depthwise(mid_chs, kernel_size, stride)
        self.bn2 = nn.BatchNorm3d(mid_chs)
        self.act2 = nn.SiLU(inplace=True)
        self.se = SqueezeExcite3d(mid_chs, round(mid_chs * se_ratio / exp_ratio))
        self.conv_pwl = nn.Conv3d(mid_chs, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_chs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.se(self.act2(self.bn2(self.conv_dw(y))))
        y = self.bn3(self.conv_pwl(y))
        return self.drop_path(y) + x if self.has_skip else y


class EfficientNet3d(FlatHeadContract):
    """3D EfficientNet with the timm model contract and timm's parameter names.

    Args:
        channel_multiplier, depth_multiplier: width, depth scales (B0 1.0, 1.0; B1 1.0, 1.1; B2 1.1, 1.2; B3 1.2, 1.4).
        stem_size, head_size: stem and ``conv_head`` (``num_features``) channels before width scaling.
        se_ratio: Squeeze-excitation ratio relative to each block's input channels.
        drop_path_rate: Stochastic depth ``drop_path_rate · i / n_blocks`` of block ``i`` (timm's rule).
        in_chans, num_classes, global_pool, drop_rate: see :class:`~backbones3d._contract.HeadContract`.

    Example::

        >>> model = EfficientNet3d(channel_multiplier=0.25, depth_multiplier=0.25, in_chans=2, num_classes=3)
        >>> x = torch.randn(2, 2, 16, 20, 40); model(x).shape, model.forward_features(x).shape
        (torch.Size([2, 3]), torch.Size([2, 320, 1, 1, 2]))
    """

    classifier_name = "classifier"

    def __init__(
        self,
        channel_multiplier: float = 1.0,
        depth_multiplier: float = 1.0,
        in_chans: int = 3,
        num_classes: int = 2,
        stem_size: int = 32,
        head_size: int = 1280,
        se_ratio: float = 0.25,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not channel_multiplier > 0 or not depth_multiplier > 0:
            raise ValueError(
                f"channel_multiplier, depth_multiplier: expected positive scales, got "
                f"{channel_multiplier!r}, {depth_multiplier!r}"
            )
        if not 0 < se_ratio <= 1:
            raise ValueError(f"se_ratio: expected a fraction in (0, 1], got {se_ratio!r}")
        self.in_chans = check_int(in_chans, "in_chans", expected="an int >= 1")
        self.num_classes = check_int(num_classes, "num_classes", minimum=0)
        check_int(stem_size, "stem_size")
        check_int(head_size, "head_size")
        self.global_pool = check_global_pool(global_pool)
        self.drop_rate = check_rate(drop_rate, "drop_rate")
        drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        self.grad_checkpointing = False

        def width(chs: int) -> int:
            return make_divisible(chs * channel_multiplier, 8)

        stages = [
            (kind, math.ceil(repeats * depth_multiplier), k, s, e, width(c))
            for kind, repeats, k, s, e, c in EFFICIENTNET_STAGES
        ]
        total_blocks = sum(stage[1] for stage in stages)

        stem_chs = width(stem_size)
        self.conv_stem = nn.Conv3d(in_chans, stem_chs, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(stem_chs)
        self.act1 = nn.SiLU(inplace=True)

        in_chs, block_idx, blocks = stem_chs, 0, []
        for kind, repeats, kernel, stride, exp, out_chs in stages:
            stage = []
            for i in range(repeats):
                dpr = drop_path_rate * block_idx / total_blocks
                s = stride if i == 0 else 1
                if kind == "ds":
                    stage.append(DepthwiseSeparable3d(in_chs, out_chs, kernel, s, se_ratio, dpr))
                else:
                    stage.append(InvertedResidual3d(in_chs, out_chs, kernel, s, exp, se_ratio, dpr))
                in_chs = out_chs
                block_idx += 1
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*blocks)

        self.num_features = width(head_size)
        self.conv_head = nn.Conv3d(in_chs, self.num_features, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(self.num_features)
        self.act2 = nn.SiLU(inplace=True)
        self.head_drop = nn.Dropout(self.drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Conv3d):
            fan_out = math.prod(m.kernel_size) * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)

    def extra_repr(self) -> str:
        return f"global_pool={self.global_pool!r}, drop_rate={self.drop_rate}"

    def _init_classifier(self, fc: nn.Linear) -> None:
        self._init_weights(fc)

    def gradcam_target_layers(self) -> dict[str, list[list[nn.Module]]]:
        """Grad-CAM candidate layers (``spectral3d.gradcam``): the stages of ``blocks``, deepest first."""
        return {"input": [[m] for m in reversed(self.blocks)]}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_chans, D, H, W)`` → the unpooled map after ``conv_head``-BN-SiLU, ``(N, num_features, d, h, w)``."""
        check_ndim(x, 5)
        check_channels(x, self.in_chans)
        check_floating(x)
        check_finite(x)
        x = self.act1(self.bn1(self.conv_stem(x)))
        x = run_blocks(self.blocks, x, self.grad_checkpointing)
        return self.act2(self.bn2(self.conv_head(x)))


def _cfg(**kwargs) -> dict:
    return {
        "input_size": (3, 64, 96, 96),
        "num_classes": 2,
        "first_conv": "conv_stem",
        "classifier": "classifier",
        **kwargs,
    }


default_cfgs = {
    "efficientnet_b0_3d": _cfg(),
    "efficientnet_b1_3d": _cfg(),
    "efficientnet_b2_3d": _cfg(),
    "efficientnet_b3_3d": _cfg(),
    "test_efficientnet_3d": _cfg(input_size=(3, 32, 32, 32)),
}


def _create_efficientnet3d(variant: str, pretrained: bool = False, **kwargs) -> EfficientNet3d:
    return build_model_with_cfg(EfficientNet3d, variant, pretrained, **kwargs)


@register_model
def efficientnet_b0_3d(pretrained: bool = False, **kwargs) -> EfficientNet3d:
    """3D EfficientNet-B0 (width 1.0, depth 1.0); timm's ``efficientnet_b0`` names."""
    model_args = dict(channel_multiplier=1.0, depth_multiplier=1.0)
    return _create_efficientnet3d("efficientnet_b0_3d", pretrained, **dict(model_args, **kwargs))


@register_model
def efficientnet_b1_3d(pretrained: bool = False, **kwargs) -> EfficientNet3d:
    """3D EfficientNet-B1 (width 1.0, depth 1.1); timm's ``efficientnet_b1`` names."""
    model_args = dict(channel_multiplier=1.0, depth_multiplier=1.1)
    return _create_efficientnet3d("efficientnet_b1_3d", pretrained, **dict(model_args, **kwargs))


@register_model
def efficientnet_b2_3d(pretrained: bool = False, **kwargs) -> EfficientNet3d:
    """3D EfficientNet-B2 (width 1.1, depth 1.2); timm's ``efficientnet_b2`` names."""
    model_args = dict(channel_multiplier=1.1, depth_multiplier=1.2)
    return _create_efficientnet3d("efficientnet_b2_3d", pretrained, **dict(model_args, **kwargs))


@register_model
def efficientnet_b3_3d(pretrained: bool = False, **kwargs) -> EfficientNet3d:
    """3D EfficientNet-B3 (width 1.2, depth 1.4); timm's ``efficientnet_b3`` names."""
    model_args = dict(channel_multiplier=1.2, depth_multiplier=1.4)
    return _create_efficientnet3d("efficientnet_b3_3d", pretrained, **dict(model_args, **kwargs))


@register_model
def test_efficientnet_3d(pretrained: bool = False, **kwargs) -> EfficientNet3d:
    """Tiny EfficientNet (width 0.25, depth 0.5: 10 blocks, 64 head features) for the test-suite."""
    model_args = dict(channel_multiplier=0.25, depth_multiplier=0.5, head_size=256)
    return _create_efficientnet3d("test_efficientnet_3d", pretrained, **dict(model_args, **kwargs))
