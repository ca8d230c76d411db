"""MambaOut3d: MambaOut ("Do We Really Need Mamba for Vision?", Yu & Wang 2024) over volumes.

DeSamba's MambaOut encoder (paper Fig. 1; DESIGN.md §5) and the ``mambaout_*_3d`` baselines: timm's
``mambaout.py`` layer for layer with 3-D convolutions and timm's parameter names (``inflate_2d`` key for key)::

    stem:        Conv3d k3 s2 p1 (in → C0/2) → LN → GELU → Conv3d k3 s2 p1 (→ C0) → LN      stride 4
    stage i:     [i > 0: Conv3d k3 s2 p1 (C(i−1) → Ci) → LN]  →  depths[i] × GatedCNNBlock3d(Ci)
    head:        global average pool → LN → Linear Ci → 4Ci → GELU → LN → Linear 4Ci → K   (MlpHead)

Shapes: ``(N, in_chans, D, H, W) → (N, num_classes)``; ``forward_stages``: ``(N, dims[i], ⌈D/(4·2^i)⌉, ...)``, any size.

- *(ours)* activations stay channels-first between stages (timm: NHWC); the blocks' permutes are views.
- *(ours)* ``global_pool="max"`` is offered; defaults ``num_classes=2``, input ``(3, 64, 96, 96)`` (DESIGN.md §9).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

from backbones3d._builder import build_model_with_cfg
from backbones3d._contract import StagedContract, check_int, check_rate, linear_drop_path_rates, run_blocks
from backbones3d._registry import register_model
from spectral3d.checks import check_channels, check_finite, check_floating, check_ndim
from spectral3d.layers.gated_cnn import GatedCNNBlock3d
from spectral3d.layers.heads import MlpHead, check_global_pool
from spectral3d.layers.norm import LayerNorm3d

__all__ = ["MambaOut3d"]


class MambaOutStem3d(nn.Module):
    """Two stride-2 3×3×3 convs, LayerNorms between: ``(N, in, D, H, W) → (N, C, ⌈D/4⌉, ⌈H/4⌉, ⌈W/4⌉)``."""

    def __init__(
        self, in_chans: int, out_chans: int, mid_norm: bool = True, act_layer: Callable[[], nn.Module] = nn.GELU
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_chans, out_chans // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = LayerNorm3d(out_chans // 2) if mid_norm else nn.Identity()
        self.act = act_layer()
        self.conv2 = nn.Conv3d(out_chans // 2, out_chans, kernel_size=3, stride=2, padding=1)
        self.norm2 = LayerNorm3d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class MambaOutDownsample3d(nn.Module):
    """Stride-2 3×3×3 conv then LayerNorm: ``(N, C_in, D, H, W) → (N, C_out, ⌈D/2⌉, ⌈H/2⌉, ⌈W/2⌉)``."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_chans, out_chans, kernel_size=3, stride=2, padding=1)
        self.norm = LayerNorm3d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class MambaOutStage3d(nn.Module):
    """An optional downsampling layer followed by ``depth`` Gated CNN blocks (channels-first)."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        depth: int,
        downsample: bool,
        drop_path: Sequence[float] | float = 0.0,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        if not downsample and dim != dim_out:
            raise ValueError(f"dim_out: a stage without downsampling keeps its width {dim}, got {dim_out}")
        rates = list(drop_path) if isinstance(drop_path, Sequence) else [drop_path] * depth
        self.grad_checkpointing = False
        self.downsample = MambaOutDownsample3d(dim, dim_out) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *[GatedCNNBlock3d(dim_out, drop_path=rates[j], **block_kwargs) for j in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        return run_blocks(self.blocks, x, self.grad_checkpointing)


class MambaOut3d(StagedContract):
    """MambaOut over volumes, with timm's model contract and DeSamba's ``forward_stages``.

    Args:
        num_classes: classes K; 0 makes the head return pre-logits ``(N, head_hidden_size)``.
        expansion_ratio: Gated CNN hidden width as a multiple of the stage width.
        conv_ratio: fraction of channels the blocks convolve.
        stem_mid_norm, ls_init_value: LayerNorm after the stem's first conv; blocks' LayerScale init (timm's: none).
        act_layer: activation class of stem, blocks and head.
        in_chans, global_pool, depths, dims, kernel_size (odd), features_only, drop_rate, drop_path_rate:
            see :class:`~backbones3d._contract.HeadContract`.

    Attributes:
        num_features: ``dims[-1]``, the channels of ``forward_features``.
        head_hidden_size: width of ``forward_head(x, pre_logits=True)`` (``4 · dims[-1]``; ``dims[-1]`` headless).
        feature_info: per stage ``dict(num_chs, reduction, module)``.

    Example::

        >>> model = MambaOut3d(in_chans=2, num_classes=3, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
        >>> model(torch.randn(1, 2, 9, 16, 1)).shape, model.forward_stages(torch.randn(1, 2, 32, 32, 32))[-1].shape
        (torch.Size([1, 3]), torch.Size([1, 32, 1, 1, 1]))
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 2,
        global_pool: str = "avg",
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 576),
        expansion_ratio: float = 8 / 3,
        kernel_size: int | Sequence[int] = 7,
        conv_ratio: float = 1.0,
        stem_mid_norm: bool = True,
        ls_init_value: float | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        features_only: bool = False,
    ) -> None:
        super().__init__()
        depths, dims = tuple(depths), tuple(dims)
        check_int(in_chans, "in_chans")
        if len(depths) != len(dims) or not depths:
            raise ValueError(f"depths, dims: expected one depth per stage width, got depths={depths}, dims={dims}")
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            check_int(depth, f"depths[{i}]")
            check_int(dim, f"dims[{i}]", minimum=2)
        check_rate(drop_path_rate, "drop_path_rate")
        check_global_pool(global_pool)
        self.in_chans = in_chans
        self.num_classes = 0 if features_only else num_classes
        self.features_only = features_only
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = MambaOutStem3d(in_chans, dims[0], mid_norm=stem_mid_norm, act_layer=act_layer)
        rates = linear_drop_path_rates(drop_path_rate, depths)
        self.stages = nn.Sequential()
        self.feature_info: list[dict[str, Any]] = []
        prev = dims[0]
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            self.stages.append(
                MambaOutStage3d(
                    prev,
                    dim,
                    depth,
                    downsample=i > 0,
                    drop_path=rates[i],
                    expansion_ratio=expansion_ratio,
                    kernel_size=kernel_size,
                    conv_ratio=conv_ratio,
                    ls_init_value=ls_init_value,
                    act_layer=act_layer,
                )
            )
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"stages.{i}"))
            prev = dim
        self.num_features = dims[-1]
        self.head: MlpHead | None = (
            None
            if features_only
            else MlpHead(
                self.num_features, num_classes, pool_type=global_pool, act_layer=act_layer, drop_rate=drop_rate
            )
        )
        self.head_hidden_size = self.num_features if self.head is None else self.head.num_features
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv3d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        check_ndim(x, 5)
        check_channels(x, self.in_chans)
        check_floating(x)
        check_finite(x)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "input_size": (3, 64, 96, 96),
        "num_classes": 2,
        "first_conv": "stem.conv1",
        "classifier": "head.fc",
        **kwargs,
    }


default_cfgs = {
    "mambaout_femto_3d": _cfg(),
    "mambaout_kobe_3d": _cfg(),
    "mambaout_tiny_3d": _cfg(),
    "mambaout_small_3d": _cfg(),
    "mambaout_base_3d": _cfg(),
    "test_mambaout_3d": _cfg(input_size=(3, 32, 32, 32)),
}


def _create_mambaout3d(variant: str, pretrained: bool = False, **kwargs: Any) -> MambaOut3d:
    return build_model_with_cfg(MambaOut3d, variant, pretrained, **kwargs)


@register_model
def mambaout_femto_3d(pretrained: bool = False, **kwargs: Any) -> MambaOut3d:
    """MambaOut-Femto 3D (timm ``mambaout_femto``: depths 3-3-9-3, widths 48-96-192-288)."""
    return _create_mambaout3d(
        "mambaout_femto_3d", pretrained, **dict(dict(depths=(3, 3, 9, 3), dims=(48, 96, 192, 288)), **kwargs)
    )


@register_model
def mambaout_kobe_3d(pretrained: bool = False, **kwargs: Any) -> MambaOut3d:
    """MambaOut-Kobe 3D (timm ``mambaout_kobe``: depths 3-3-15-3, widths 48-96-192-288)."""
    return _create_mambaout3d(
        "mambaout_kobe_3d", pretrained, **dict(dict(depths=(3, 3, 15, 3), dims=(48, 96, 192, 288)), **kwargs)
    )


@register_model
def mambaout_tiny_3d(pretrained: bool = False, **kwargs: Any) -> MambaOut3d:
    """MambaOut-Tiny 3D (timm ``mambaout_tiny``: depths 3-3-9-3, widths 96-192-384-576)."""
    return _create_mambaout3d(
        "mambaout_tiny_3d", pretrained, **dict(dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 576)), **kwargs)
    )


@register_model
def mambaout_small_3d(pretrained: bool = False, **kwargs: Any) -> MambaOut3d:
    """MambaOut-Small 3D (timm ``mambaout_small``: depths 3-4-27-3, widths 96-192-384-576)."""
    return _create_mambaout3d(
        "mambaout_small_3d", pretrained, **dict(dict(depths=(3, 4, 27, 3), dims=(96, 192, 384, 576)), **kwargs)
    )


@register_model
def mambaout_base_3d(pretrained: bool = False, **kwargs: Any) -> MambaOut3d:
    """MambaOut-Base 3D (timm ``mambaout_base``: depths 3-4-27-3, widths 128-256-512-768)."""
    return _create_mambaout3d(
        "mambaout_base_3d", pretrained, **dict(dict(depths=(3, 4, 27, 3), dims=(128, 256, 512, 768)), **kwargs)
    )


@register_model
def test_mambaout_3d(pretrained: bool = False, **kwargs: Any) -> MambaOut3d:
    """A tiny MambaOut3d for the test-suite (one block per stage, widths 16-32-48-64)."""
    return _create_mambaout3d(
        "test_mambaout_3d", pretrained, **dict(dict(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64)), **kwargs)
    )
