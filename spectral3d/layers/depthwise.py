"""``DepthwiseConv3d``: a drop-in ``nn.Conv3d(C, C, k, padding=k // 2, groups=C)`` running
:func:`spectral3d.ops.depthwise_conv3d` (same names, shapes, init; output in the input's dtype and memory format).
Stride 1, same-size output, odd sizes *(ours: above 7 per axis runs ``F.conv3d``)*.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from spectral3d.checks import AXES, check_bool, check_int, to_3tuple_int
from spectral3d.ops.depthwise_conv3d import depthwise_conv3d

__all__ = ["DepthwiseConv3d"]


def _kernel_size(kernel_size: int | Sequence[int]) -> tuple[int, int, int]:
    ks = to_3tuple_int(kernel_size, "kernel_size")
    for axis, k in zip(AXES, ks):
        if k % 2 != 1:
            raise ValueError(f"kernel_size: expected an odd size on axis {axis} (same-size output), got {k}")
    return ks


class DepthwiseConv3d(nn.Conv3d):
    """``y[n, c] = bias[c] + weight[c, 0] ⋆ x[n, c]``; ``weight (C, 1, kd, kh, kw)``, ``bias (C,)``.

    Example::

        >>> conv = DepthwiseConv3d(16, (1, 7, 7)); conv(torch.randn(2, 16, 5, 6, 7)).shape, conv.weight.shape
        (torch.Size([2, 16, 5, 6, 7]), torch.Size([16, 1, 1, 7, 7]))
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | Sequence[int],
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_int(channels, "channels")
        check_bool(bias, "bias")
        ks = _kernel_size(kernel_size)
        super().__init__(
            channels, channels, ks, padding=tuple(k // 2 for k in ks), groups=channels, bias=bias,
            device=device, dtype=dtype,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv3d(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}"
