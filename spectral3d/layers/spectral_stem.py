"""SAMNet's ``spectral_stem``, a band-energy front end (DESIGN.md §5); ``x: (N, C, D, H, W)`` →
``(N, out_chs, D/s, H/s, W/s)``, ``s = stride`` dividing every axis, in ``t = promote_types(x.dtype, float32)``::

    X       = rfftn(x.to(t), norm="ortho")
    Y_{c,k} = irfftn(X_c · g[c, k, band])                  k < K = num_bands, g: (C, K, B), init copy k = band k (ours)
    E_{c,k} = log(AvgPool_s(Y_{c,k}²) / w_k + eps)         w_k: share of bins in band k, white noise → 0 (ours)
    out     = Conv1x1(BN(E))                               C·K → out_chs, BatchNorm3d without affine (ours)

Bands: :func:`spectral3d.layers.samb.band_index`. Measured: benchmarks/results/frequency_pathway.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spectral3d.checks import check_channels, check_divisible, check_int, check_ndim
from spectral3d.layers.samb import band_index

__all__ = ["SpectralStem3d"]

_FFT_DIMS = (-3, -2, -1)


class SpectralStem3d(nn.Module):
    """``in_chs`` C → ``out_chs``; ``stride`` s (SAMNet: 4), ``num_bands`` K = B, ``eps`` in the log (module docstring).

    Example::

        >>> SpectralStem3d(2, 16)(torch.randn(3, 2, 32, 32, 16)).shape
        torch.Size([3, 16, 8, 8, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 4, num_bands: int = 16, eps: float = 1e-3) -> None:
        super().__init__()
        for name, value in (("in_chs", in_chs), ("out_chs", out_chs), ("stride", stride), ("num_bands", num_bands)):
            check_int(value, name)
        if not eps > 0:
            raise ValueError(f"eps: expected a positive number, got {eps!r}")
        self.in_chs, self.out_chs, self.stride, self.num_bands, self.eps = in_chs, out_chs, stride, num_bands, eps
        self.band_gains = nn.Parameter(torch.empty(in_chs, num_bands, num_bands))
        self.norm = nn.BatchNorm3d(in_chs * num_bands, affine=False)
        self.proj = nn.Conv3d(in_chs * num_bands, out_chs, 1)
        self._cache: dict[tuple[int, int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity band split; PyTorch's default projection init."""
        with torch.no_grad():
            self.band_gains.copy_(torch.eye(self.num_bands).expand(self.in_chs, -1, -1))
        self.norm.reset_running_stats()
        self.proj.reset_parameters()

    def extra_repr(self) -> str:
        return f"in_chs={self.in_chs}, out_chs={self.out_chs}, stride={self.stride}, num_bands={self.num_bands}"

    def _bands(self, size: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Band of every half-spectrum bin and the fraction of the full spectrum's bins in each band."""
        key = (*size, device)
        if key in self._cache and not torch.compiler.is_compiling():
            return self._cache[key]
        idx = band_index(size, self.num_bands, device)
        # bins 1 .. W-1 - W//2 of the half spectrum stand for two bins of the full one
        weight = torch.ones(idx.shape, dtype=torch.float64, device=device)
        last = size[-1] // 2 + (size[-1] % 2)  # the first bin without a mirror (the Nyquist bin if W even)
        weight[..., 1:last] = 2.0
        frac = torch.zeros(self.num_bands, dtype=torch.float64, device=device).index_add_(
            0, idx.flatten(), weight.flatten()
        )
        frac = (frac / frac.sum()).clamp_min(1e-12)
        if not torch.compiler.is_compiling():
            self._cache[key] = (idx, frac)
        return idx, frac

    def band_energies(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 1–3: ``(N, C, D, H, W) -> (N, C·K, D/s, H/s, W/s)`` log relative band energies."""
        check_ndim(x, 5)
        check_channels(x, self.in_chs)
        s = self.stride
        check_divisible(tuple(x.shape[2:]), (s, s, s), name="x spatial size", what=f"the stem's stride {s}")
        size = (x.shape[-3], x.shape[-2], x.shape[-1])
        t = torch.promote_types(x.dtype, torch.float32)
        idx, frac = self._bands(size, x.device)
        X = torch.fft.rfftn(x.to(t), dim=_FFT_DIMS, norm="ortho")
        gains = self.band_gains.to(t)[:, :, idx]  # (C, K, D, H, Wf)
        y = torch.fft.irfftn(X.unsqueeze(2) * gains, s=size, dim=_FFT_DIMS, norm="ortho")  # (N, C, K, D, H, W)
        n, c, k = y.shape[:3]
        energy = F.avg_pool3d((y * y).reshape(n, c * k, *size), s)
        rel = energy.reshape(n, c, k, *energy.shape[2:]) / frac.to(t).view(1, 1, k, 1, 1, 1)
        return torch.log(rel + self.eps).reshape(n, c * k, *energy.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.band_energies(x).to(self.proj.weight.dtype)
        return self.proj(self.norm(e)).to(x.dtype)
