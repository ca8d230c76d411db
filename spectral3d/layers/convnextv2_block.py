"""The 3-D ConvNeXtV2 block of SAMBlock and ``backbones3d.convnextv2_3d``::

    Body_k(x) = fc2(GRN(GELU(fc1(LN(DWConv_k(x))))))     C → 4C → C, channels-last after the conv
    block(x)  = x + DropPath(Body_7(x))                  (N, C, D, H, W) → same

timm's ``ConvNeXtBlock(use_grn=True)`` and its parameter names, no layer scale; init: :func:`init_conv_linear`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn

from spectral3d.checks import check_channels, check_int, check_ndim, check_rate, to_3tuple_int
from spectral3d.layers.depthwise import DepthwiseConv3d
from spectral3d.layers.norm import GRN3d, LayerNorm3d

__all__ = ["ConvNeXtV2Block3d", "ConvNeXtV2Body3d", "GRNMlp3d", "init_conv_linear"]


def init_conv_linear(module: nn.Module) -> None:
    """timm's ConvNeXt init for a ``Conv3d`` or ``Linear``: truncated normal weights (std 0.02), zero bias."""
    if isinstance(module, (nn.Conv3d, nn.Linear)):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class GRNMlp3d(nn.Module):
    """``fc2(GRN3d(GELU(fc1(x))))``, C → ``hidden_dim`` → C (timm's ``GlobalResponseNormMlp``) on ``(N, D, H, W, C)``.

    Example::

        >>> GRNMlp3d(8, 32)(torch.randn(2, 3, 4, 5, 8)).shape, GRNMlp3d(8, 32, True)(torch.randn(2, 8, 3, 4, 5)).shape
        (torch.Size([2, 3, 4, 5, 8]), torch.Size([2, 8, 3, 4, 5]))
    """

    def __init__(self, dim: int, hidden_dim: int, conv_mlp: bool = False) -> None:
        super().__init__()
        self.conv_mlp = conv_mlp
        self.fc1: nn.Module = nn.Conv3d(dim, hidden_dim, 1) if conv_mlp else nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.grn = GRN3d(hidden_dim, channels_last=not conv_mlp)
        self.fc2: nn.Module = nn.Conv3d(hidden_dim, dim, 1) if conv_mlp else nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.grn(self.act(self.fc1(x))))


class ConvNeXtV2Body3d(nn.Module):
    """``Body_k(x)``, the residual-free ConvNeXtV2 block (arguments: see :mod:`spectral3d.layers`).

    Example::

        >>> ConvNeXtV2Body3d(8)(torch.randn(2, 8, 5, 6, 7)).shape
        torch.Size([2, 8, 5, 6, 7])
    """

    def __init__(
        self, dim: int, kernel_size: int | Sequence[int] = 7, mlp_ratio: float = 4.0, conv_mlp: bool = False
    ) -> None:
        super().__init__()
        check_int(dim, "dim")
        ks = to_3tuple_int(kernel_size, "kernel_size")
        if any(k % 2 != 1 for k in ks):
            raise ValueError(
                f"kernel_size: expected an odd positive int per axis (same-size output), got {kernel_size!r}"
            )
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio: expected a positive number, got {mlp_ratio!r}")
        self.dim = dim
        self.conv_mlp = conv_mlp
        self.conv_dw = DepthwiseConv3d(dim, ks)
        self.norm: nn.Module = LayerNorm3d(dim) if conv_mlp else nn.LayerNorm(dim, eps=1e-6)
        self.mlp = GRNMlp3d(dim, int(mlp_ratio * dim), conv_mlp=conv_mlp)
        self.apply(init_conv_linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_ndim(x, 5)
        check_channels(x, self.dim)
        x = self.conv_dw(x)
        if self.conv_mlp:
            return self.mlp(self.norm(x))
        return self.mlp(self.norm(x.permute(0, 2, 3, 4, 1))).permute(0, 4, 1, 2, 3)


class ConvNeXtV2Block3d(ConvNeXtV2Body3d):
    """``x + DropPath(Body_k(x))`` (arguments: see :mod:`spectral3d.layers`).

    Example::

        >>> ConvNeXtV2Block3d(8, drop_path=0.1)(torch.randn(2, 8, 5, 6, 7)).shape
        torch.Size([2, 8, 5, 6, 7])
    """

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        kernel_size: int | Sequence[int] = 7,
        mlp_ratio: float = 4.0,
        conv_mlp: bool = False,
    ) -> None:
        super().__init__(dim, kernel_size=kernel_size, mlp_ratio=mlp_ratio, conv_mlp=conv_mlp)
        self.drop_path = DropPath(drop_path) if check_rate(drop_path, "drop_path") > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(super().forward(x))
