"""3D ResNet-50 and ResNeXt-50 (32x4d): the paper's ResNet50 and ResNeXt baselines (DESIGN.md §9).

A bottleneck residual network (He et al. 2016; ResNeXt: Xie et al. 2017) in 3D, on ``x: (N, in_chans, D, H, W)``::

    stem:    conv1 7³ (stride ``stem_stride``, pad 3) → bn1 → ReLU → maxpool 3³ (stride 2, pad 1)
    stage i: layer_i = [Bottleneck3d] × layers[i], the first one strided (2 for i ≥ 2) with a
             1³ conv + BN shortcut (``downsample``)
    block:   y = ReLU(x' + bn3(conv3(ReLU(bn2(conv2(ReLU(bn1(conv1(x)))))))))
             conv1 1³ (C → w), conv2 3³ (w → w, ``cardinality`` groups), conv3 1³ (w → 4·planes),
             w = ⌊planes · base_width / 64⌋ · cardinality, x' = x or downsample(x)
    head:    global pool → dropout(``drop_rate``) → fc

``forward_features`` returns ``(N, 2048, ⌈D / (16·s)⌉, ...)`` (``s = stem_stride``); every layer is padded, so any
size ≥ 1 works. timm's names, MONAI's parameter count (``downsample_bias``); benchmarks/results/model_notes.md#resnet3d

- *(ours)* ``stem_stride`` defaults to 2 (He et al., timm, torchvision); 1 is MONAI's ``resnet50`` default (8× MACs).
- *(ours)* the last BN of a block is not zero-initialised (as MONAI, unlike timm's ``zero_init_last``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import DropPath
from torch import nn

from backbones3d._builder import build_model_with_cfg
from backbones3d._contract import FlatHeadContract, check_int, check_rate, run_blocks
from backbones3d._registry import register_model
from spectral3d.checks import check_channels, check_finite, check_floating, check_ndim, to_3tuple_int
from spectral3d.layers.heads import check_global_pool

__all__ = ["Bottleneck3d", "ResNet3d"]


class Bottleneck3d(nn.Module):
    """Bottleneck block (module docstring's ``block``): ``C → 4 · planes``, stride on the 3³ conv and ``downsample``."""

    expansion = 4

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        base_width: int = 64,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        width = int(planes * base_width / 64) * cardinality
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv3d(in_chs, width, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(width, width, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv3d(width, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_chs)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(self.drop_path(x) + shortcut)


class ResNet3d(FlatHeadContract):
    """3D bottleneck ResNet / ResNeXt with the timm model contract and timm's parameter names.

    Args:
        layers: Blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        cardinality, base_width: groups of every 3³ conv and width per group (ResNeXt-50 32x4d: 32, 4; ResNet: 1, 64).
        stem_width: Channels of the stem and width of the first stage's ``planes``.
        stem_stride: Stride of the 7³ stem convolution, an int or ``(D, H, W)``; 1 is MONAI's default stem.
        downsample_bias: Give each 1³ shortcut conv a bias (MONAI's default, zero-initialised).
        in_chans, num_classes, global_pool, drop_rate, drop_path_rate: see :class:`~backbones3d._contract.HeadContract`.

    Example::

        >>> model = ResNet3d(layers=(1, 1, 1, 1), stem_width=8, in_chans=2, num_classes=3)
        >>> x = torch.randn(2, 2, 16, 20, 40); model(x).shape, model.forward_features(x).shape
        (torch.Size([2, 3]), torch.Size([2, 256, 1, 1, 2]))
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        in_chans: int = 3,
        num_classes: int = 2,
        cardinality: int = 1,
        base_width: int = 64,
        stem_width: int = 64,
        stem_stride: int | Sequence[int] = 2,
        downsample_bias: bool = True,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        layers = tuple(layers)
        if len(layers) != 4:
            raise ValueError(f"layers: expected 4 stage depths, got {len(layers)} ({layers!r})")
        for i, depth in enumerate(layers):
            check_int(depth, f"layers[{i}]")
        self.in_chans = check_int(in_chans, "in_chans", expected="an int >= 1")
        self.num_classes = check_int(num_classes, "num_classes", minimum=0)
        check_int(cardinality, "cardinality")
        check_int(base_width, "base_width")
        check_int(stem_width, "stem_width")
        if int(stem_width * base_width / 64) < 1:
            raise ValueError(f"base_width: stem_width * base_width / 64 must be >= 1, got {stem_width}*{base_width}/64")
        self.stem_stride = to_3tuple_int(stem_stride, "stem_stride")
        self.global_pool = check_global_pool(global_pool)
        self.drop_rate = check_rate(drop_rate, "drop_rate")
        drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        self.grad_checkpointing = False

        self.conv1 = nn.Conv3d(in_chans, stem_width, 7, stride=self.stem_stride, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(stem_width)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)

        total_blocks = sum(layers)
        block_idx = 0
        in_chs = stem_width
        for stage, depth in enumerate(layers):
            planes = stem_width * 2**stage
            out_chs = planes * Bottleneck3d.expansion
            stride = 1 if stage == 0 else 2
            blocks = []
            for i in range(depth):
                block_stride = stride if i == 0 else 1
                downsample = None
                if block_stride != 1 or in_chs != out_chs:
                    downsample = nn.Sequential(
                        nn.Conv3d(in_chs, out_chs, 1, stride=block_stride, bias=downsample_bias),
                        nn.BatchNorm3d(out_chs),
                    )
                dpr = drop_path_rate * block_idx / max(total_blocks - 1, 1)
                blocks.append(
                    Bottleneck3d(in_chs, planes, block_stride, downsample, cardinality, base_width, drop_path=dpr)
                )
                in_chs = out_chs
                block_idx += 1
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))

        self.num_features = in_chs
        self.head_drop = nn.Dropout(self.drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @property
    def stages(self) -> list[nn.Sequential]:
        """The four residual stages ``layer1`` … ``layer4``."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def extra_repr(self) -> str:
        return f"stem_stride={self.stem_stride}, global_pool={self.global_pool!r}, drop_rate={self.drop_rate}"

    def gradcam_target_layers(self) -> dict[str, list[list[nn.Module]]]:
        """Grad-CAM candidate layers (``spectral3d.gradcam``): the stages ``layer4`` … ``layer1``, deepest first."""
        return {"input": [[m] for m in reversed(self.stages)]}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_chans, D, H, W)`` → the unpooled last map ``(N, num_features, d, h, w)``."""
        check_ndim(x, 5)
        check_channels(x, self.in_chans)
        check_floating(x)
        check_finite(x)
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return run_blocks(self.stages, x, self.grad_checkpointing)


def _cfg(**kwargs) -> dict:
    return {
        "input_size": (3, 64, 96, 96),
        "num_classes": 2,
        "first_conv": "conv1",
        "classifier": "fc",
        **kwargs,
    }


default_cfgs = {
    "resnet50_3d": _cfg(),
    "resnext50_32x4d_3d": _cfg(),
    "test_resnet_3d": _cfg(input_size=(3, 32, 32, 32)),
}


def _create_resnet3d(variant: str, pretrained: bool = False, **kwargs) -> ResNet3d:
    return build_model_with_cfg(ResNet3d, variant, pretrained, **kwargs)


@register_model
def resnet50_3d(pretrained: bool = False, **kwargs) -> ResNet3d:
    """3D ResNet-50 (stages 3-4-6-3); timm's ``resnet50`` names, MONAI's ``resnet50`` parameter count."""
    return _create_resnet3d("resnet50_3d", pretrained, **dict(dict(layers=(3, 4, 6, 3)), **kwargs))


@register_model
def resnext50_32x4d_3d(pretrained: bool = False, **kwargs) -> ResNet3d:
    """3D ResNeXt-50 32x4d (32 groups of width 4 in the first stage); timm's ``resnext50_32x4d`` names."""
    model_args = dict(layers=(3, 4, 6, 3), cardinality=32, base_width=4)
    return _create_resnet3d("resnext50_32x4d_3d", pretrained, **dict(model_args, **kwargs))


@register_model
def test_resnet_3d(pretrained: bool = False, **kwargs) -> ResNet3d:
    """Tiny ResNeXt (stages 1-1-1-1, stem width 8, 2 groups) for the test-suite."""
    model_args = dict(layers=(1, 1, 1, 1), stem_width=8, cardinality=2, base_width=32)
    return _create_resnet3d("test_resnet_3d", pretrained, **dict(model_args, **kwargs))
