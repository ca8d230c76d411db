"""3D DenseNet-121: the paper's DenseNet121 baseline (DESIGN.md §9).

A densely connected network (Huang et al. 2017) with 3D operators, on ``x`` of shape ``(N, in_chans, D, H, W)``::

    stem:        conv0 7³ (stride 2, pad 3) → norm0 → ReLU → pool0 max 3³ (stride 2, pad 1)
    dense block: x ← [x, H_l(x)] for l = 1 … L (channel concatenation); each layer adds k channels
                 H_l = conv2 3³(ReLU(norm2(conv1 1³(ReLU(norm1(x))))))   (C → bn_size·k → k)
    transition:  norm → ReLU → conv 1³ (C → C/2) → avg-pool 2³ (stride 2)
    end:         norm5 → ReLU → global pool → dropout(``drop_rate``) → classifier

DenseNet-121 is ``k = 32`` (``growth_rate``), blocks 6-12-24-16, ``bn_size = 4`` and 64 stem features, as MONAI's
``DenseNet121`` (same parameter count); timm's ``densenet121`` names and initialisation
(benchmarks/results/model_notes.md#densenet3d). ``forward_features``: ``(N, 1024, ⌈D/4⌉/8, ⌈H/4⌉/8, ⌈W/4⌉/8)``.

- *(ours)* ``⌈n / 4⌉`` must be a multiple of ``2^transitions`` (unpadded 2³ pools), else ``ValueError`` (DESIGN.md §2).
- *(ours)* ``drop_path_rate`` drops a dense layer's new features per sample (rescaled, linear from 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import DropPath
from torch import nn

from backbones3d._builder import build_model_with_cfg
from backbones3d._contract import FlatHeadContract, check_int, check_rate, run_blocks
from backbones3d._registry import register_model
from spectral3d.checks import AXES, check_channels, check_finite, check_floating, check_ndim
from spectral3d.layers.heads import check_global_pool

__all__ = ["DenseBlock3d", "DenseLayer3d", "DenseNet3d", "DenseTransition3d"]


class DenseLayer3d(nn.Module):
    """Dense layer ``H_l`` (module docstring), its ``k = growth_rate`` new channels concatenated: ``C → C + k``."""

    def __init__(
        self, in_chs: int, growth_rate: int, bn_size: int, proj_drop_rate: float = 0.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        mid_chs = bn_size * growth_rate
        self.norm1 = nn.BatchNorm3d(in_chs)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv3d(in_chs, mid_chs, 1, bias=False)
        self.norm2 = nn.BatchNorm3d(mid_chs)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(mid_chs, growth_rate, 3, padding=1, bias=False)
        self.proj_drop = nn.Dropout(proj_drop_rate) if proj_drop_rate > 0 else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv1(self.relu1(self.norm1(x)))
        new = self.conv2(self.relu2(self.norm2(new)))
        return torch.cat([x, self.drop_path(self.proj_drop(new))], dim=1)


class DenseBlock3d(nn.Sequential):
    """``num_layers`` dense layers ``denselayer1`` …; ``C`` input channels become ``C + num_layers·k``."""

    def __init__(
        self,
        num_layers: int,
        in_chs: int,
        growth_rate: int,
        bn_size: int,
        proj_drop_rate: float = 0.0,
        drop_path: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        drop_path = list(drop_path) if drop_path is not None else [0.0] * num_layers
        for i in range(num_layers):
            layer = DenseLayer3d(in_chs + i * growth_rate, growth_rate, bn_size, proj_drop_rate, drop_path[i])
            self.add_module(f"denselayer{i + 1}", layer)


class DenseTransition3d(nn.Sequential):
    """BN-ReLU-conv 1³ then a 2³ average pool of stride 2 (halves channels and every extent)."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm3d(in_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv3d(in_chs, out_chs, 1, bias=False)
        self.pool = nn.AvgPool3d(kernel_size=2, stride=2)


class DenseNet3d(FlatHeadContract):
    """3D DenseNet-BC with the timm model contract and timm's parameter names.

    Args:
        block_config: Dense layers per block (DenseNet-121: ``(6, 12, 24, 16)``).
        growth_rate, bn_size: channels ``k`` each dense layer adds; its bottleneck width factor (``bn_size · k``).
        num_init_features: Stem channels.
        proj_drop_rate: the paper's element-wise dropout on each dense layer's new features (MONAI's ``dropout_prob``).
        in_chans, num_classes, global_pool, drop_rate, drop_path_rate: see :class:`~backbones3d._contract.HeadContract`.

    Example::

        >>> model = DenseNet3d(block_config=(1, 1), growth_rate=8, num_init_features=16, in_chans=2, num_classes=3)
        >>> x = torch.randn(2, 2, 8, 16, 24); model(x).shape, model.forward_features(x).shape
        (torch.Size([2, 3]), torch.Size([2, 20, 1, 2, 3]))
    """

    classifier_name = "classifier"

    def __init__(
        self,
        block_config: Sequence[int] = (6, 12, 24, 16),
        growth_rate: int = 32,
        bn_size: int = 4,
        num_init_features: int = 64,
        in_chans: int = 3,
        num_classes: int = 2,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        block_config = tuple(block_config)
        if not block_config:
            raise ValueError("block_config: expected at least one dense block, got ()")
        for i, depth in enumerate(block_config):
            check_int(depth, f"block_config[{i}]")
        check_int(growth_rate, "growth_rate")
        check_int(bn_size, "bn_size")
        check_int(num_init_features, "num_init_features")
        self.in_chans = check_int(in_chans, "in_chans", expected="an int >= 1")
        self.num_classes = check_int(num_classes, "num_classes", minimum=0)
        self.global_pool = check_global_pool(global_pool)
        self.drop_rate = check_rate(drop_rate, "drop_rate")
        proj_drop_rate = check_rate(proj_drop_rate, "proj_drop_rate")
        drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        self.num_transitions = len(block_config) - 1
        self.grad_checkpointing = False

        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv3d(in_chans, num_init_features, 7, stride=2, padding=3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm3d(num_init_features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool3d(kernel_size=3, stride=2, padding=1))

        total_layers = sum(block_config)
        dpr = [drop_path_rate * i / max(total_layers - 1, 1) for i in range(total_layers)]
        chs = num_init_features
        for i, num_layers in enumerate(block_config):
            block_dpr, dpr = dpr[:num_layers], dpr[num_layers:]
            block = DenseBlock3d(num_layers, chs, growth_rate, bn_size, proj_drop_rate, block_dpr)
            self.features.add_module(f"denseblock{i + 1}", block)
            chs += num_layers * growth_rate
            if i < self.num_transitions:
                self.features.add_module(f"transition{i + 1}", DenseTransition3d(chs, chs // 2))
                chs //= 2
        self.features.add_module(f"norm{len(block_config) + 1}", nn.BatchNorm3d(chs))
        self.features.add_module(f"relu{len(block_config) + 1}", nn.ReLU(inplace=True))

        self.num_features = chs
        self.head_drop = nn.Dropout(self.drop_rate)
        self.classifier = nn.Linear(chs, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def extra_repr(self) -> str:
        return f"global_pool={self.global_pool!r}, drop_rate={self.drop_rate}"

    def gradcam_target_layers(self) -> dict[str, list[list[nn.Module]]]:
        """Grad-CAM candidate layers (``spectral3d.gradcam``): the children of ``features``, deepest first."""
        return {"input": [[m] for m in reversed(list(self.features))]}

    def check_input_size(self, size: Sequence[int]) -> None:
        """Raise ``ValueError`` if a transition's unpadded 2³ pool would drop voxels of ``(D, H, W)``.

        Example::

            >>> DenseNet3d().check_input_size((64, 96, 80))
            Traceback (most recent call last):
            ValueError: input size (64, 96, 80): size 80 on axis W would be truncated by transition3...
        """
        for axis, n in zip(AXES, size):
            reached = -(-n // 4)  # the padded stride-2 conv and max pool map n → ⌈n / 2⌉ each
            for t in range(1, self.num_transitions + 1):
                if reached % 2:
                    need = 2**self.num_transitions
                    raise ValueError(
                        f"input size {tuple(size)}: size {n} on axis {axis} would be truncated by transition{t} "
                        f"(its unpadded 2x2x2 average pool receives {reached} voxels on axis {axis}); "
                        f"{type(self).__name__} needs ceil(size / 4) to be a multiple of {need} on every axis, "
                        f"e.g. a multiple of {4 * need}"
                    )
                reached //= 2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_chans, D, H, W)`` → the unpooled last map ``(N, num_features, d, h, w)`` (after norm5-ReLU)."""
        check_ndim(x, 5)
        check_channels(x, self.in_chans)
        check_floating(x)
        self.check_input_size(x.shape[2:])
        check_finite(x)
        x = self.features[:4](x)  # conv0, norm0, relu0, pool0
        x = run_blocks(self.features[4:-2], x, self.grad_checkpointing)  # dense blocks and transitions
        return self.features[-2:](x)  # final norm, relu


def _cfg(**kwargs) -> dict:
    return {
        "input_size": (3, 64, 96, 96),
        "num_classes": 2,
        "first_conv": "features.conv0",
        "classifier": "classifier",
        **kwargs,
    }


default_cfgs = {
    "densenet121_3d": _cfg(),
    "test_densenet_3d": _cfg(input_size=(3, 32, 32, 32)),
}


def _create_densenet3d(variant: str, pretrained: bool = False, **kwargs) -> DenseNet3d:
    return build_model_with_cfg(DenseNet3d, variant, pretrained, **kwargs)


@register_model
def densenet121_3d(pretrained: bool = False, **kwargs) -> DenseNet3d:
    """3D DenseNet-121 (k = 32, blocks 6-12-24-16); MONAI's ``DenseNet121`` parameter count, timm's names."""
    model_args = dict(block_config=(6, 12, 24, 16), growth_rate=32, bn_size=4, num_init_features=64)
    return _create_densenet3d("densenet121_3d", pretrained, **dict(model_args, **kwargs))


@register_model
def test_densenet_3d(pretrained: bool = False, **kwargs) -> DenseNet3d:
    """Tiny DenseNet (k = 8, blocks 2-2-2-2, 16 stem features) for the test-suite."""
    model_args = dict(block_config=(2, 2, 2, 2), growth_rate=8, bn_size=2, num_init_features=16)
    return _create_densenet3d("test_densenet_3d", pretrained, **dict(model_args, **kwargs))
