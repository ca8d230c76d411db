"""SAMBlock, the two-branch block of SAMNet (paper Fig. 2b, Eq. 1; DESIGN.md §4), ``(N, C, D, H, W)`` → same::

    F1, F2 = Body_7(x), Body_7(DWConv_3(SAMB(x)))           spatial, frequency branch (Body_k: convnextv2_block)
    theta  = sigmoid(Conv_1x1x1(concat[F1, F2]))            2C -> C, per voxel and channel
    F_out  = theta * (w1 * F1 + w2 * F2)                    Eq. 1
    y      = 0.5 * x + 0.5 * DropPath(F_out)  (residual="paper", default)  or  x + DropPath(F_out)  ("identity")

*(ours)*: depthwise 3×3 conv after SAMB; 1×1×1 gate; learnable ``branch_weights = (w1, w2)`` (0.5); timm's ConvNeXt
init, SAMB's identity init. ``"paper"`` vs ``"identity"``: benchmarks/results/fusion_ablation.md.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

from spectral3d.checks import check_channels, check_int, check_ndim, check_rate
from spectral3d.layers.convnextv2_block import ConvNeXtV2Block3d, ConvNeXtV2Body3d, GRNMlp3d, init_conv_linear
from spectral3d.layers.depthwise import DepthwiseConv3d
from spectral3d.layers.samb import SAMB

__all__ = ["ConvNeXtV2Body3d", "ConvNeXtV2Block3d", "GRNMlp3d", "SAMBlock"]  # the ConvNeXtV2 names re-exported
RESIDUALS = ("paper", "identity")


class SAMBlock(nn.Module):
    """``kernel_size``/``freq_kernel_size``: DWConv of ``spatial``, ``frequency`` (7) / ``conv_freq`` (3); ``fm_mode``,
    ``num_bands``, ``enh_kernel_size``, ``band_embedding``: :class:`SAMB`'s; ``residual``: ``"paper"``/``"identity"``.

    Example::

        >>> SAMBlock(16, drop_path=0.1)(torch.randn(2, 16, 7, 8, 9)).shape
        torch.Size([2, 16, 7, 8, 9])
    """

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        kernel_size: int = 7,
        freq_kernel_size: int = 3,
        mlp_ratio: float = 4.0,
        fm_mode: str = "band",
        num_bands: int = 8,
        enh_kernel_size: int = 1,
        residual: str = "paper",
        band_embedding: bool = True,
    ) -> None:
        super().__init__()
        check_int(dim, "dim")
        if residual not in RESIDUALS:
            raise ValueError(f"residual: expected one of {RESIDUALS}, got {residual!r}")
        self.residual = residual
        self.skip_scale = 0.5 if residual == "paper" else 1.0
        check_int(freq_kernel_size, "freq_kernel_size", odd=True)
        self.dim = dim
        self.spatial = ConvNeXtV2Body3d(dim, kernel_size=kernel_size, mlp_ratio=mlp_ratio)
        self.samb = SAMB(
            dim, fm_mode=fm_mode, num_bands=num_bands, enh_kernel_size=enh_kernel_size, band_embedding=band_embedding
        )
        self.conv_freq = DepthwiseConv3d(dim, freq_kernel_size)
        self.frequency = ConvNeXtV2Body3d(dim, kernel_size=kernel_size, mlp_ratio=mlp_ratio)
        self.gate = nn.Conv3d(2 * dim, dim, 1)
        self.branch_weights = nn.Parameter(torch.full((2,), 0.5))
        self.drop_path = DropPath(drop_path) if check_rate(drop_path, "drop_path") > 0 else nn.Identity()
        init_conv_linear(self.conv_freq)
        init_conv_linear(self.gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_ndim(x, 5)
        check_channels(x, self.dim)
        f1 = self.spatial(x)
        f2 = self.frequency(self.conv_freq(self.samb(x)))
        theta = torch.sigmoid(self.gate(torch.cat([f1, f2], dim=1)))
        w = self.branch_weights.to(f1.dtype)
        f_out = theta * (w[0] * f1 + w[1] * f2)
        return self.skip_scale * (x + self.drop_path(f_out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, residual={self.residual!r}"
