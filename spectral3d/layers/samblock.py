"""SAMBlock, the two-branch block of SAMNet (paper Fig. 2b, Eq. 1; DESIGN.md §4), and its ConvNeXtV2 body.

Input and output ``x: (N, C, D, H, W)``:

    F1    = Body_7(x)                                       spatial branch (ConvNeXtV2 block body)
    F2    = Body_7(DWConv_3(SAMB(x)))                       frequency branch
    theta = sigmoid(Conv_1x1x1(concat[F1, F2]))             2C -> C, per voxel and channel
    F_out = theta * (w1 * F1 + w2 * F2)                     Eq. 1
    y     = 0.5 * x + 0.5 * DropPath(F_out)                 residual="paper" (default)
    y     = x + DropPath(F_out)                             residual="identity"

``Body_k`` is the ConvNeXtV2 block without its residual: depthwise Conv3d k×k×k (``DepthwiseConv3d``) → LayerNorm →
Linear C→4C → GELU → GRN3d → Linear 4C→C (channels-last between the convolution and the end,
parameter names as timm's ``ConvNeXtBlock`` with ``use_grn=True``: ``conv_dw``, ``norm``,
``mlp.fc1``, ``mlp.grn``, ``mlp.fc2``; ConvNeXtV2 has no layer scale). ``conv_mlp=True`` is timm's
channels-first layout of the same function (LayerNorm3d and 1×1×1 convolutions, the weight shapes of
timm's small ConvNeXt variants); ``backbones3d.convnextv2_3d`` builds its blocks from these classes.

Choices the paper leaves open:

- The frequency branch is SAMB → depthwise Conv3d k=3 (the paper's "3×3 convolution"; depthwise
  *(ours)*) → the spatial branch's architecture, its own k=7 depthwise conv included ("the
  subsequent architecture of this branch mirrors the spatial branch").
- The gate is a 1×1×1 convolution over the concatenated branches *(ours)*.
- The paper's branch weights α, β are the learnable scalars ``branch_weights = (w1, w2)``,
  initialised to 0.5 each *(ours)*; the name keeps them apart from SAMB's α, β.
- ``residual="paper"`` weights the input and ``F_out`` by 0.5 each, as the paper states; the
  stream then halves at every block while each body's LayerNorm restores its branch's scale, so
  after a few blocks the identity path has all but gone. Measured (``benchmarks/results/
  fusion_ablation.md``): ``samnet_tiny`` on the synthetic spine cohort stays at chance with AdamW
  at lr 1e-3 (test AUC 0.57 after 7 epochs) and learns with ``residual="identity"`` (0.88), or with
  the paper form at lr 3e-4 (0.94 after 15 epochs). The default stays the paper's.
- Weight init as timm's ConvNeXt (truncated normal, std 0.02, zero biases) for the convolutions
  and linear layers of this block; SAMB keeps its own identity init.

:class:`ConvNeXtV2Block3d` (``x + DropPath(Body_7(x))``) is the block SAMNet uses when the
frequency pathway is off (DeSamba's ablation rows without FP: a 3D ConvNeXtV2).
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
    """SAMNet's block: a ConvNeXtV2 spatial branch and a SAMB frequency branch, gated (paper Eq. 1).

    Args:
        dim: channels C.
        drop_path: stochastic-depth probability of ``F_out``.
        kernel_size: depthwise kernel of both bodies (paper: 7).
        freq_kernel_size: depthwise kernel after SAMB (paper: 3).
        mlp_ratio: MLP expansion of both bodies (ConvNeXtV2: 4).
        fm_mode: SAMB's modulation form (``"band"``, ``"channel"``, ``"spectral"``).
        num_bands: SAMB's radial frequency bands.
        enh_kernel_size: SAMB's enhancement kernel.
        band_embedding: SAMB's learned band embedding (``False``: the paper's form).
        residual: ``"paper"`` (``0.5·x + 0.5·F_out``) or ``"identity"`` (``x + F_out``); module docstring.

    Submodules: ``spatial`` (F1), ``samb``, ``conv_freq`` and ``frequency`` (F2), ``gate``;
    parameter ``branch_weights`` ``(2,)``.

    Shapes: ``(N, C, D, H, W) -> (N, C, D, H, W)``, any size ≥ 1, same dtype.

    Example::

        >>> import torch
        >>> block = SAMBlock(16, drop_path=0.1)
        >>> block(torch.randn(2, 16, 7, 8, 9)).shape
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
