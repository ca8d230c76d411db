"""Non-overlapping 3-D patch embedding (ViT, Vision Mamba, Swin-V2), timm's ``PatchEmbed`` in 3-D: tokens
``(N, L, embed_dim)``, ``L = (D/p_D)(H/p_H)(W/p_W)`` (``"NLC"``), or ``(N, D/p_D, H/p_H, W/p_W, embed_dim)``
(``"NDHWC"``); each axis a positive multiple of its patch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from spectral3d.checks import AXES, to_3tuple_int

__all__ = ["PatchEmbed3d"]

_FORMATS = ("NLC", "NDHWC")


class PatchEmbed3d(nn.Module):
    """``norm_layer(Conv3d(in_chans, embed_dim, kernel = stride = patch_size)(x))`` (``None``: no norm), ``output_fmt``.

    Example::

        >>> x, grid = torch.randn(1, 2, 8, 16, 24), PatchEmbed3d(4, 2, 16, nn.LayerNorm, "NDHWC")
        >>> PatchEmbed3d((4, 8, 8), 2, 32)(x).shape, grid(x).shape
        (torch.Size([1, 12, 32]), torch.Size([1, 2, 4, 6, 16]))
    """

    def __init__(
        self,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        norm_layer: Callable[[int], nn.Module] | None = None,
        output_fmt: str = "NLC",
    ) -> None:
        super().__init__()
        if output_fmt not in _FORMATS:
            raise ValueError(f"output_fmt: expected one of {_FORMATS}, got {output_fmt!r}")
        self.patch_size = to_3tuple_int(patch_size, "patch_size")
        self.output_fmt = output_fmt
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def grid_size(self, size: Sequence[int], name: str = "input size") -> tuple[int, int, int]:
        """The patch grid for a ``(D, H, W)`` size; ``ValueError`` naming the axis if the patch does not tile it."""
        for axis, s, p in zip(AXES, size, self.patch_size):
            if s % p != 0 or s < p:
                raise ValueError(
                    f"{name} {tuple(size)}: size {s} on axis {axis} cannot be tiled by the patch "
                    f"{self.patch_size} (patch {p} on axis {axis}); it must be a positive multiple of {p}"
                )
        return tuple(s // p for s, p in zip(size, self.patch_size))  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grid_size(x.shape[2:])
        x = self.proj(x)
        x = x.flatten(2).transpose(1, 2) if self.output_fmt == "NLC" else x.permute(0, 2, 3, 4, 1)
        return self.norm(x)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, output_fmt={self.output_fmt!r}"
