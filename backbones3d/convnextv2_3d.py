"""ConvNeXt V2 in 3D: timm's ``convnextv2_*`` layer for layer, with one more spatial axis.

ConvNeXt V2 (Woo et al., 2023) is ConvNeXt with a Global Response Normalisation (GRN) layer in
every block's MLP and no layer scale. This file follows timm's ``convnext.py`` with the V2
settings (``use_grn=True``, ``ls_init_value=None``); the paper compares against it as
"ConvNeXtV2" (DESIGN.md §9). Per block, on ``x`` of shape ``(N, C, D, H, W)``:

    y = x + DropPath(fc2(GRN(GELU(fc1(LN(DWConv_7x7x7(x)))))))

    GRN(z) = weight * (z * ||z||_DHW / (mean_C ||z||_DHW + 1e-6)) + bias + z     (spectral3d GRN3d)

Shapes through the network (input ``(N, C_in, D, H, W)``, every axis a multiple of 32)::

    stem      Conv 4x4x4 stride 4 + LN     -> (N, dims[0], D/4,  H/4,  W/4)
    stage 0   depths[0] blocks             -> (N, dims[0], D/4,  H/4,  W/4)
    stage i   LN + Conv 2x2x2 stride 2,    -> (N, dims[i], D/2^(i+2), ...)      i = 1, 2, 3
              then depths[i] blocks
    head      global pool -> LN -> dropout -> Linear  -> (N, num_classes)

Parameter names are timm's (``stem.0``, ``stages.i.downsample.{0,1}``,
``stages.i.blocks.j.{conv_dw, norm, mlp.fc1, mlp.grn, mlp.fc2}``, ``head.norm``, ``head.fc``) and
so are the per-variant layouts: the small variants (atto, femto, pico, nano) use timm's
``conv_mlp=True`` layout (channels-first LayerNorm, 1x1x1 convolutions for ``fc1``/``fc2``, GRN over
channels-first maps), tiny and base the channels-last one (``nn.LayerNorm`` and ``nn.Linear``
after a permute). The two are the same function; keeping timm's per-variant choice gives every
weight the shape of its 2-D counterpart plus a unit depth axis, so ``inflate_2d`` matches a timm
checkpoint key for key. The stem and the downsampling convolutions are unpadded and strided: an
input axis that is not a positive multiple of ``patch_size * 2**(len(depths) - 1)`` (32 for the
registered models) is rejected with a ``ValueError`` naming the axis, instead of being truncated
(DESIGN.md §2).

Choices that are ours:

- *(ours)* ``global_pool=""`` keeps the map: the head's norm and classifier then act at every
  voxel and ``forward_head`` returns ``(N, num_classes, d, h, w)`` (timm's 2-D head does the same
  with a 1x1 convolution).
- *(ours)* the class defaults are ``convnextv2_tiny_3d`` with ``in_chans=3``, ``num_classes=2`` and
  input ``(3, 64, 96, 96)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from backbones3d._builder import build_model_with_cfg
from backbones3d._registry import register_model
from spectral3d._checks import check_channels, check_divisible, check_ndim, to_3tuple_int
from spectral3d.layers.norm import GRN3d, LayerNorm3d

__all__ = ["ConvNeXtBlock3d", "ConvNeXtStage3d", "ConvNeXtV2_3d", "GlobalResponseNormMlp3d", "NormClassifierHead3d"]

_POOL_TYPES = ("avg", "max", "")


def _check_pool_type(pool_type: str) -> None:
    if pool_type not in _POOL_TYPES:
        raise ValueError(f"global_pool: expected one of {_POOL_TYPES}, got {pool_type!r}")


class GlobalResponseNormMlp3d(nn.Module):
    """The ConvNeXt V2 MLP: ``fc1 -> GELU -> GRN -> fc2``.

    Args:
        dim: input and output channels C.
        hidden_dim: hidden channels (``4 * dim`` in ConvNeXt).
        conv_mlp: ``True``: 1x1x1 convolutions on channels-first ``(N, C, D, H, W)`` maps;
            ``False``: ``nn.Linear`` on channels-last ``(N, D, H, W, C)`` tensors.

    Example::

        >>> import torch
        >>> from backbones3d.convnextv2_3d import GlobalResponseNormMlp3d
        >>> GlobalResponseNormMlp3d(8, 32)(torch.randn(2, 3, 4, 5, 8)).shape
        torch.Size([2, 3, 4, 5, 8])
    """

    def __init__(self, dim: int, hidden_dim: int, conv_mlp: bool = False) -> None:
        super().__init__()
        self.conv_mlp = conv_mlp
        if conv_mlp:
            self.fc1: nn.Module = nn.Conv3d(dim, hidden_dim, kernel_size=1)
            self.fc2: nn.Module = nn.Conv3d(hidden_dim, dim, kernel_size=1)
        else:
            self.fc1 = nn.Linear(dim, hidden_dim)
            self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()
        self.grn = GRN3d(hidden_dim, channels_last=not conv_mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.grn(self.act(self.fc1(x))))


class ConvNeXtBlock3d(nn.Module):
    """A ConvNeXt V2 block: depthwise conv, LayerNorm, GRN MLP, stochastic depth, residual.

    Args:
        dim: channels C (in = out).
        kernel_size: depthwise kernel, an int or ``(D, H, W)`` (default 7, padded to keep the size).
        mlp_ratio: MLP hidden width as a multiple of C.
        conv_mlp: use timm's channels-first layout (LayerNorm3d + 1x1x1 convs) instead of
            permute + ``nn.LayerNorm`` + ``nn.Linear`` (same function, different weight shapes).
        drop_path: stochastic-depth probability.

    Shapes: ``(N, C, D, H, W) -> (N, C, D, H, W)``, any spatial size ≥ 1.

    Example::

        >>> import torch
        >>> from backbones3d.convnextv2_3d import ConvNeXtBlock3d
        >>> ConvNeXtBlock3d(16)(torch.randn(1, 16, 5, 6, 7)).shape
        torch.Size([1, 16, 5, 6, 7])
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int | Sequence[int] = 7,
        mlp_ratio: float = 4.0,
        conv_mlp: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        ks = to_3tuple_int(kernel_size, "kernel_size")
        self.conv_mlp = conv_mlp
        self.conv_dw = nn.Conv3d(dim, dim, ks, padding=tuple(k // 2 for k in ks), groups=dim)
        self.norm: nn.Module = LayerNorm3d(dim) if conv_mlp else nn.LayerNorm(dim, eps=1e-6)
        self.mlp = GlobalResponseNormMlp3d(dim, int(mlp_ratio * dim), conv_mlp=conv_mlp)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_dw(x)
        if self.conv_mlp:
            y = self.mlp(self.norm(y))
        else:
            y = self.mlp(self.norm(y.permute(0, 2, 3, 4, 1))).permute(0, 4, 1, 2, 3)
        return self.drop_path(y) + x


class ConvNeXtStage3d(nn.Module):
    """Optional downsampling (LayerNorm + 2x2x2 stride-2 conv) followed by ConvNeXt V2 blocks.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        depth: number of blocks.
        stride: 2 to downsample (unpadded, so each axis must be even), 1 otherwise.
        kernel_size: depthwise kernel of the blocks.
        mlp_ratio: MLP width multiple.
        conv_mlp: channels-first block layout (see :class:`ConvNeXtBlock3d`).
        drop_path_rates: one stochastic-depth rate per block (zeros if ``None``).

    Example::

        >>> import torch
        >>> from backbones3d.convnextv2_3d import ConvNeXtStage3d
        >>> ConvNeXtStage3d(8, 16, depth=2, stride=2)(torch.randn(1, 8, 4, 6, 8)).shape
        torch.Size([1, 16, 2, 3, 4])
    """

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
            *[ConvNeXtBlock3d(out_chs, kernel_size, mlp_ratio, conv_mlp, drop_path=rates[i]) for i in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class NormClassifierHead3d(nn.Module):
    """ConvNeXt's head: global pool, LayerNorm, dropout, Linear (timm's ``NormMlpClassifierHead``).

    Args:
        in_features: channels C of the incoming map.
        num_classes: outputs; 0 makes ``fc`` an identity.
        pool_type: ``"avg"``, ``"max"`` or ``""`` (no pooling: norm and ``fc`` act at every voxel).
        drop_rate: dropout before ``fc``.

    Shapes: ``(N, C, d, h, w) -> (N, num_classes)`` (``(N, num_classes, d, h, w)`` without pooling).

    Example::

        >>> import torch
        >>> from backbones3d.convnextv2_3d import NormClassifierHead3d
        >>> NormClassifierHead3d(16, 3)(torch.randn(2, 16, 2, 3, 3)).shape
        torch.Size([2, 3])
    """

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "avg", drop_rate: float = 0.0) -> None:
        super().__init__()
        _check_pool_type(pool_type)
        self.in_features = in_features
        self.pool_type = pool_type
        self.norm = nn.LayerNorm(in_features, eps=1e-6)
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        """Replace the classifier (fresh weights) and optionally the pooling."""
        if pool_type is not None:
            _check_pool_type(pool_type)
            self.pool_type = pool_type
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool_type == "avg":
            x = x.mean(dim=(2, 3, 4))
        elif self.pool_type == "max":
            x = x.amax(dim=(2, 3, 4))
        else:
            x = x.permute(0, 2, 3, 4, 1)
        x = self.drop(self.norm(x))
        if not pre_logits:
            x = self.fc(x)
        return x if self.pool_type else x.permute(0, 4, 1, 2, 3)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"


class ConvNeXtV2_3d(nn.Module):
    """ConvNeXt V2 for volumes (timm's ``ConvNeXt`` with ``use_grn=True``, no layer scale).

    Args:
        in_chans: input channels (the MRI sequences, early fusion).
        num_classes: classifier outputs; 0 for a feature extractor.
        global_pool: ``"avg"``, ``"max"`` or ``""``.
        depths: blocks per stage.
        dims: channels per stage.
        kernel_size: depthwise kernel, an int or ``(D, H, W)``.
        patch_size: stem kernel and stride (unpadded).
        mlp_ratio: MLP width multiple.
        conv_mlp: timm's channels-first block layout (the small timm variants use it).
        head_init_scale: multiplies the classifier's initial weights and bias.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value.

    Shapes: ``(N, in_chans, D, H, W) -> (N, num_classes)``; every axis a positive multiple of
    ``patch_size * 2**(len(depths) - 1)``.

    Example::

        >>> import torch
        >>> from backbones3d.convnextv2_3d import ConvNeXtV2_3d
        >>> model = ConvNeXtV2_3d(in_chans=2, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
        >>> model(torch.randn(1, 2, 32, 32, 64)).shape
        torch.Size([1, 2])
        >>> model.forward_features(torch.randn(1, 2, 32, 32, 64)).shape
        torch.Size([1, 32, 1, 1, 2])
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
        _check_pool_type(global_pool)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.patch_size = patch_size
        self.size_multiple = patch_size * 2 ** (len(depths) - 1)
        self.grad_checkpointing = False

        self.stem = nn.Sequential(
            nn.Conv3d(in_chans, dims[0], kernel_size=patch_size, stride=patch_size), LayerNorm3d(dims[0])
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").split(list(depths))
        stages = []
        prev = dims[0]
        self.feature_info: list[dict[str, Any]] = []
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            stride = 1 if i == 0 else 2
            stages.append(
                ConvNeXtStage3d(
                    prev, dim, depth, stride, kernel_size, mlp_ratio, conv_mlp, drop_path_rates=rates[i].tolist()
                )
            )
            prev = dim
            self.feature_info.append(dict(num_chs=dim, reduction=patch_size * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = dims[-1]
        self.head = NormClassifierHead3d(self.num_features, num_classes, global_pool, drop_rate)
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

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass (same outputs, less activation memory)."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The final classifier (``head.fc``)."""
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0: identity)."""
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_chans, D, H, W) -> (N, num_features, D/32, H/32, W/32)`` (unpooled, before the head norm)."""
        check_ndim(x, 5)
        check_channels(x, self.in_chans)
        m = self.size_multiple
        check_divisible(x.shape[2:], (m, m, m), what=f"the stride-{self.patch_size} stem and stride-2 downsampling")
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, norm and classify; ``pre_logits=True`` returns the normalised ``(N, num_features)``."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


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
