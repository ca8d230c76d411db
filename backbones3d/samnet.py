"""SAMNet: the spectral-adaptive CNN branch of DeSamba (paper Fig. 2a; DESIGN.md §5).

A ConvNeXtV2-shaped hierarchy whose blocks are SAMBlocks (paper Eq. 1, :mod:`spectral3d.layers.samblock`)::

    stem      Conv 4x4x4 stride 4 → LayerNorm                    → (N, dims[0], D/4,  H/4,  W/4)
    stage 0   depths[0] SAMBlocks                                → (N, dims[0], D/4,  H/4,  W/4)
    stage i   LayerNorm → Conv 2x2x2 stride 2, depths[i] blocks  → (N, dims[i], D/2^(i+2), ...)   i = 1, 2, 3
    head      global pool → LayerNorm → dropout → Linear         → (N, num_classes)

Every axis must be a positive multiple of ``4 * 2**(len(depths) - 1)`` (``ValueError`` otherwise). ``frequency=False``
replaces every SAMBlock by its spatial branch, a 3D ConvNeXtV2 block (ablation row ``cnv2``). timm's ConvNeXt
parameter names and head (benchmarks/results/model_notes.md#samnet); ``features_only=True`` is DeSamba's use.

- *(ours)* widths (paper: depths 3-4-6-3): ``samnet_tiny`` 48-96-192-384, ``samnet_small`` (default) 96-192-384-768.
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
from spectral3d.checks import check_channels, check_divisible, check_int, check_ndim
from spectral3d.layers.convnextv2_block import ConvNeXtV2Block3d
from spectral3d.layers.heads import ClassifierHead3d, check_global_pool
from spectral3d.layers.norm import LayerNorm3d
from spectral3d.layers.samblock import SAMBlock
from spectral3d.layers.spectral_stem import SpectralStem3d

__all__ = ["SAMNet", "SAMNetStage"]


class _SpectralPatchStem(nn.Sequential):
    """``LayerNorm(Conv_4(x)) + SpectralStem3d(x)``: the patch stem with the band energies added (``stem.spectral``)."""

    def __init__(self, patch: nn.Conv3d, norm: nn.Module, spectral: SpectralStem3d) -> None:
        super().__init__(patch, norm)
        self.spectral = spectral

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[1](self[0](x)) + self.spectral(x)


class SAMNetStage(nn.Module):
    """Optional LayerNorm → Conv 2x2x2 stride 2, then ``depth`` SAMBlocks (ConvNeXtV2 blocks without ``frequency``)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        downsample: bool = True,
        drop_path_rates: Sequence[float] | None = None,
        frequency: bool = True,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample: nn.Module = (
            nn.Sequential(LayerNorm3d(in_chs), nn.Conv3d(in_chs, out_chs, kernel_size=2, stride=2))
            if downsample
            else nn.Identity()
        )
        if not downsample and in_chs != out_chs:
            raise ValueError(f"in_chs, out_chs: a stage without downsampling keeps its width, got {in_chs} → {out_chs}")
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.0] * depth
        if frequency:
            blocks = [SAMBlock(out_chs, drop_path=rates[j], **block_kwargs) for j in range(depth)]
        else:
            kw = {k: v for k, v in block_kwargs.items() if k in ("kernel_size", "mlp_ratio")}
            blocks = [ConvNeXtV2Block3d(out_chs, drop_path=rates[j], **kw) for j in range(depth)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        return run_blocks(self.blocks, x, self.grad_checkpointing)


class SAMNet(StagedContract):
    """SAMNet (paper Fig. 2): a four-stage 3D CNN of SAMBlocks, spatial and spectral branches in every block.

    Args:
        frequency: SAMBlocks (the frequency pathway) or plain ConvNeXtV2 blocks.
        spectral_stem: add the input's band energies (``SpectralStem3d``) to the stem output; needs ``frequency``.
        fm_mode, num_bands, enh_kernel_size, band_embedding: SAMB's modulation form, radial bands, enhancement kernel,
            learned band embedding (``False``: the paper's form).
        residual: SAMBlock's skip, ``"paper"`` (``0.5·x + 0.5·F_out``) or ``"identity"`` (``x + F_out``).
        freq_kernel_size: depthwise kernel after SAMB (3).
        in_chans, num_classes, global_pool, depths, dims, kernel_size, mlp_ratio, head_init_scale, features_only,
            drop_rate, drop_path_rate: see :class:`~backbones3d._contract.HeadContract`.

    Example::

        >>> model = SAMNet(in_chans=2, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
        >>> x = torch.randn(1, 2, 32, 32, 64); model(x).shape, [f.shape[1] for f in model.forward_stages(x)]
        (torch.Size([1, 2]), [8, 16, 24, 32])
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 2,
        global_pool: str = "avg",
        depths: Sequence[int] = (3, 4, 6, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        frequency: bool = True,
        spectral_stem: bool = False,
        fm_mode: str = "band",
        num_bands: int = 8,
        enh_kernel_size: int = 1,
        residual: str = "paper",
        band_embedding: bool = True,
        kernel_size: int = 7,
        freq_kernel_size: int = 3,
        mlp_ratio: float = 4.0,
        head_init_scale: float = 1.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        features_only: bool = False,
    ) -> None:
        super().__init__()
        depths, dims = tuple(depths), tuple(dims)
        if not depths or len(depths) != len(dims):
            raise ValueError(f"depths, dims: expected non-empty sequences of one length, got {depths!r} and {dims!r}")
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            check_int(depth, f"depths[{i}]")
            check_int(dim, f"dims[{i}]")
        check_int(in_chans, "in_chans")
        check_global_pool(global_pool)
        if spectral_stem and not frequency:
            raise ValueError(
                "spectral_stem: the spectral stem is part of the frequency pathway; it needs frequency=True"
            )
        self.in_chans = in_chans
        self.num_classes = 0 if features_only else num_classes
        self.frequency = frequency
        self.features_only = features_only
        self.drop_rate = drop_rate
        self.size_multiple = 4 * 2 ** (len(depths) - 1)
        self.grad_checkpointing = False

        patch, norm = nn.Conv3d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm3d(dims[0])
        self.spectral_stem = spectral_stem
        self.stem = (
            _SpectralPatchStem(patch, norm, SpectralStem3d(in_chans, dims[0], stride=4))
            if spectral_stem
            else nn.Sequential(patch, norm)
        )
        rates = linear_drop_path_rates(drop_path_rate, depths)
        block_kwargs = dict(
            fm_mode=fm_mode,
            num_bands=num_bands,
            enh_kernel_size=enh_kernel_size,
            residual=residual,
            band_embedding=band_embedding,
            kernel_size=kernel_size,
            freq_kernel_size=freq_kernel_size,
            mlp_ratio=mlp_ratio,
        )
        stages = []
        self.feature_info: list[dict[str, Any]] = []
        prev = dims[0]
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            stages.append(SAMNetStage(prev, dim, depth, i > 0, rates[i], frequency=frequency, **block_kwargs))
            prev = dim
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = dims[-1]
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.head: ClassifierHead3d | None = (
            None
            if features_only
            else ClassifierHead3d(self.num_features, num_classes, global_pool, drop_rate, norm_layer)
        )
        self._init_weights(head_init_scale)

    def _init_weights(self, head_init_scale: float) -> None:
        for m in [self.stem[0], *(s.downsample[1] for s in self.stages[1:])]:
            trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        if self.head is not None and isinstance(self.head.fc, nn.Linear):
            trunc_normal_(self.head.fc.weight, std=0.02)
            nn.init.zeros_(self.head.fc.bias)
            with torch.no_grad():
                self.head.fc.weight.mul_(head_init_scale)

    def _check_input(self, x: torch.Tensor) -> None:
        check_ndim(x, 5)
        check_channels(x, self.in_chans)
        m = self.size_multiple
        n_down = len(self.stages) - 1
        check_divisible(
            tuple(x.shape[2:]),
            (m, m, m),
            name="x spatial size",
            what=f"SAMNet's stride-4 stem and {n_down} stride-2 downsamplings",
        )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "input_size": (3, 64, 96, 96),
        "num_classes": 2,
        "first_conv": "stem.0",
        "classifier": "head.fc",
        **kwargs,
    }


default_cfgs = {
    "samnet_tiny": _cfg(),
    "samnet_small": _cfg(),
    "test_samnet_3d": _cfg(input_size=(3, 32, 32, 32)),
}


def _create_samnet(variant: str, pretrained: bool = False, **kwargs: Any) -> SAMNet:
    return build_model_with_cfg(SAMNet, variant, pretrained, **kwargs)


@register_model
def samnet_tiny(pretrained: bool = False, **kwargs: Any) -> SAMNet:
    """SAMNet Tiny: depths 3-4-6-3 (paper), dims 48-96-192-384 *(ours)*."""
    args = dict(depths=(3, 4, 6, 3), dims=(48, 96, 192, 384))
    return _create_samnet("samnet_tiny", pretrained, **dict(args, **kwargs))


@register_model
def samnet_small(pretrained: bool = False, **kwargs: Any) -> SAMNet:
    """SAMNet Small: depths 3-4-6-3 (paper), dims 96-192-384-768 *(ours)*."""
    args = dict(depths=(3, 4, 6, 3), dims=(96, 192, 384, 768))
    return _create_samnet("samnet_small", pretrained, **dict(args, **kwargs))


@register_model
def test_samnet_3d(pretrained: bool = False, **kwargs: Any) -> SAMNet:
    """A tiny SAMNet for tests: depths 1-1-1-1, dims 8-16-24-32, input 32³."""
    args = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
    return _create_samnet("test_samnet_3d", pretrained, **dict(args, **kwargs))
