"""``LayerNorm3d`` and ``GRN3d`` (ConvNeXtV2's Global Response Normalisation, DESIGN.md §4) for 5-D volumes::

    Gx = ||x||_2 over (D, H, W),   Nx = Gx / (mean_c Gx + eps),   y = weight * (x * Nx) + bias + x

``weight``/``bias`` zero (identity at init); half precision computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spectral3d.checks import check_channels, check_ndim

__all__ = ["LayerNorm3d", "GRN3d"]


class LayerNorm3d(nn.LayerNorm):
    """LayerNorm over C at every voxel of ``(N, C, D, H, W)`` (timm's ``LayerNorm2d``); ``affine``: learn weight, bias.

    Example::

        >>> LayerNorm3d(8)(torch.randn(2, 8, 5, 6, 7)).shape
        torch.Size([2, 8, 5, 6, 7])
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_ndim(x, 5)
        check_channels(x, self.normalized_shape[0])
        x = x.permute(0, 2, 3, 4, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 4, 1, 2, 3)


class GRN3d(nn.Module):
    """GRN over (D, H, W); ``channels_last``: inputs ``(N, D, H, W, C)`` (default), else ``(N, C, D, H, W)``.

    Example::

        >>> GRN3d(16)(torch.randn(2, 4, 4, 4, 16)).shape
        torch.Size([2, 4, 4, 4, 16])
    """

    def __init__(self, dim: int, eps: float = 1e-6, channels_last: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.channels_last = channels_last
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_ndim(x, 5, layout="(N, D, H, W, C)" if self.channels_last else "(N, C, D, H, W)")
        cdim = -1 if self.channels_last else 1
        check_channels(x, self.dim, dim=cdim)
        spatial = (1, 2, 3) if self.channels_last else (2, 3, 4)
        shape = (1, 1, 1, 1, -1) if self.channels_last else (1, -1, 1, 1, 1)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        gx = torch.linalg.vector_norm(xf, ord=2, dim=spatial, keepdim=True)
        nx = gx / (gx.mean(dim=cdim, keepdim=True) + self.eps)
        w = self.weight.to(xf.dtype).view(shape)
        b = self.bias.to(xf.dtype).view(shape)
        return (xf + torch.addcmul(b, w, xf * nx)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, channels_last={self.channels_last}"
