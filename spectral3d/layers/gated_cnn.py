"""MambaOut's Gated CNN block over a volume (DESIGN.md §5): timm's ``mambaout.GatedConvBlock`` and parameter names
with a 3-D depthwise conv; ``hidden = int(expansion_ratio · C)``, ``c = int(conv_ratio · C)``::

    z         = fc1(LN(x))                                     (N, D, H, W, 2·hidden)   channels-last
    g, i, c_  = split(z, [hidden, hidden − c, c]);   c_ = DWConv3d_k(c_)    (zero padding k // 2)
    y         = x + DropPath(LayerScale(fc2(GELU(g) ⊙ concat(i, c_))))     (N, C, D, H, W), channels-last memory

*(ours)*: the kernel may differ per axis but is odd on each (size-preserving); LayerNorm eps 1e-6.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from timm.layers import DropPath, LayerScale
from torch import nn

from spectral3d.checks import (
    AXES,
    check_channels,
    check_finite,
    check_floating,
    check_int,
    check_ndim,
    check_rate,
    to_3tuple_int,
)
from spectral3d.layers.depthwise import DepthwiseConv3d

_layer_norm_eps6 = partial(nn.LayerNorm, eps=1e-6)  # channels-last LayerNorm, eps as timm's

__all__ = ["GatedCNNBlock3d"]


class GatedCNNBlock3d(nn.Module):
    """``expansion_ratio``/``conv_ratio``: ``hidden``/``c`` (module docstring);
    ``ls_init_value``: LayerScale or ``None``; ``act_layer``: the gate's GELU; ``norm_layer``: channels-last LN.

    Example::

        >>> GatedCNNBlock3d(16)(torch.randn(2, 16, 5, 6, 7)).shape
        torch.Size([2, 16, 5, 6, 7])
    """

    def __init__(
        self,
        dim: int,
        expansion_ratio: float = 8 / 3,
        kernel_size: int | Sequence[int] = 7,
        conv_ratio: float = 1.0,
        ls_init_value: float | None = None,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = _layer_norm_eps6,
    ) -> None:
        super().__init__()
        check_int(dim, "dim")
        hidden = int(expansion_ratio * dim)
        conv_channels = int(conv_ratio * dim)
        if not 1 <= conv_channels <= hidden:
            raise ValueError(
                f"conv_ratio: int(conv_ratio * dim) = {conv_channels} convolved channels must be in [1, hidden = "
                f"int(expansion_ratio * dim) = {hidden}] (dim={dim}, conv_ratio={conv_ratio}, "
                f"expansion_ratio={expansion_ratio})"
            )
        kernel = to_3tuple_int(kernel_size, "kernel_size")
        for axis, k in zip(AXES, kernel):
            if k % 2 == 0:
                raise ValueError(f"kernel_size: expected an odd size on axis {axis} (size-preserving), got {k}")
        check_rate(drop_path, "drop_path")
        self.dim = dim
        self.hidden = hidden
        self.split_indices = (hidden, hidden - conv_channels, conv_channels)

        self.norm = norm_layer(dim)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.act = act_layer()
        self.conv = DepthwiseConv3d(conv_channels, kernel)
        self.fc2 = nn.Linear(hidden, dim)
        self.ls = LayerScale(dim, init_values=ls_init_value) if ls_init_value is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_ndim(x, 5)
        check_channels(x, self.dim)
        check_floating(x)
        check_finite(x)
        shortcut = x
        x = self.fc1(self.norm(x.permute(0, 2, 3, 4, 1)))
        g, i, c = torch.split(x, self.split_indices, dim=-1)
        c = self.conv(c.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)
        x = self.fc2(self.act(g) * torch.cat((i, c), dim=-1))
        x = self.drop_path(self.ls(x))
        return shortcut + x.permute(0, 4, 1, 2, 3)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, conv_channels={self.split_indices[2]}"
