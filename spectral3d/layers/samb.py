"""SAMB, the Spectral Adaptive Modulation Block (paper §3.2, Eq. 2; DESIGN.md §3), ``(N, C, D, H, W)`` → same::

    X = rfftn(x.to(t), norm="ortho")  (N, C, D, H, Wf), Wf = W // 2 + 1;   [R, I, phi] = spectral_features(X), phi = |X|
    f_e = fc2(GELU(fc1([R, I, phi]) + E[band]))         3C → C → C, kernel enh_kernel_size, E: (B, C) (ours)
    f_m = 2 sigmoid(Mod(LayerNorm(x)))                   (the 2·sigmoid range is ours)
    R' = R (1 + alpha (f_m - 1)) + beta f_e phi,   I' = I (1 + alpha (f_m - 1))     (Eq. 2, per-channel alpha, beta)
    y = irfftn(R' + i I', s=(D, H, W), norm="ortho").to(x.dtype)        t = promote_types(x.dtype, float32)

``fm_mode``: ``"band"`` *(default, ours)*: avg pool → 1×1×1 conv C → C/r → GELU → 1×1×1 conv → C·B, ``f_m: (N, C, B)``;
``"channel"``: ``(N, C, 1, 1, 1)``; ``"spectral"``: ``(N, C, D, H, Wf)`` from 1×1×1 convs on ``log1p|rfftn(LN(x))|``.
Bands: :func:`band_index` (int32, cached); init: identity (:meth:`SAMB.reset_parameters`); convs: module dtype.
"""

from __future__ import annotations

import math

import torch
from timm.layers import trunc_normal_
from torch import nn

from spectral3d.checks import check_channels, check_int, check_ndim, to_3tuple_int
from spectral3d.layers.norm import LayerNorm3d
from spectral3d.ops import spectral_features, spectral_modulation

__all__ = ["SAMB", "band_index"]

FM_MODES = ("band", "channel", "spectral")
_FFT_DIMS = (-3, -2, -1)


def band_index(
    size: int | tuple[int, int, int], num_bands: int = 8, device: torch.device | str | None = None
) -> torch.Tensor:
    """Band ``min(B - 1, floor(B rho / rho_max))`` of rfftn bins, ``rho = |(k_d/D, k_h/H, k_w/W)|``, ``rho_max = √3/2``.

    Example::

        >>> idx = band_index((4, 6, 8), num_bands=4); idx.shape, idx.dtype, int(idx.max())  # (D, H, W // 2 + 1)
        (torch.Size([4, 6, 5]), torch.int64, 3)
    """
    D, H, W = to_3tuple_int(size, "size")
    check_int(num_bands, "num_bands", expected="an int >= 1")
    kw = {"dtype": torch.float64, "device": device}
    fd = torch.fft.fftfreq(D, **kw).view(D, 1, 1)
    fh = torch.fft.fftfreq(H, **kw).view(1, H, 1)
    fw = torch.fft.rfftfreq(W, **kw).view(1, 1, W // 2 + 1)
    rho = torch.sqrt(fd * fd + fh * fh + fw * fw)
    return torch.floor(rho * (num_bands / (math.sqrt(3.0) / 2))).clamp_(max=num_bands - 1).long()


class SAMB(nn.Module):
    """SAMB (module docstring): ``fm_mode`` ``"band"``/``"channel"``/``"spectral"``; ``num_bands`` B;
    ``mod_reduction`` r (modulator width ``max(1, dim // r)``); ``band_embedding=False``: the paper's form, no ``E``.

    Example::

        >>> x = torch.randn(2, 16, 9, 10, 11); y = SAMB(16)(x); y.shape, bool(torch.allclose(y, x, atol=1e-5))
        (torch.Size([2, 16, 9, 10, 11]), True)
    """

    def __init__(
        self,
        dim: int,
        fm_mode: str = "band",
        num_bands: int = 8,
        enh_kernel_size: int = 1,
        mod_reduction: int = 4,
        band_embedding: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_bands", num_bands), ("mod_reduction", mod_reduction)):
            check_int(value, name, expected="an int >= 1")
        if fm_mode not in FM_MODES:
            raise ValueError(f"fm_mode: expected one of {FM_MODES}, got {fm_mode!r}")
        check_int(enh_kernel_size, "enh_kernel_size", odd=True)
        self.dim = dim
        self.fm_mode = fm_mode
        self.num_bands = num_bands
        self.enh_kernel_size = enh_kernel_size
        hidden = max(1, dim // mod_reduction)
        self.mod_hidden = hidden
        pad = enh_kernel_size // 2

        self.alpha = nn.Parameter(torch.empty(dim))
        self.beta = nn.Parameter(torch.empty(dim))
        # frequency enhancement: [R, I, phi] (3C) -> C (+ band embedding) -> GELU -> C
        self.enh_fc1 = nn.Conv3d(3 * dim, dim, enh_kernel_size, padding=pad)
        self.band_embed = nn.Parameter(torch.empty(num_bands, dim)) if band_embedding else None
        self.enh_act = nn.GELU()
        self.enh_fc2 = nn.Conv3d(dim, dim, enh_kernel_size, padding=pad)
        # modulator
        self.norm = LayerNorm3d(dim)
        self.mod_fc1 = nn.Conv3d(dim, hidden, 1)
        self.mod_act = nn.GELU()
        self.mod_fc2 = nn.Conv3d(hidden, dim * num_bands if fm_mode == "band" else dim, 1)
        # int32 band index of the last input size (non-persistent: never in the state_dict; moves with .to())
        self.register_buffer("_bands", None, persistent=False)
        self._bands_size: tuple[int, int, int] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity at init: ``alpha = 1``, ``beta = 0``, last modulator conv zero, ``E`` ~ trunc N(0, 0.02)."""
        nn.init.ones_(self.alpha)
        nn.init.zeros_(self.beta)
        if self.band_embed is not None:
            trunc_normal_(self.band_embed, std=0.02)
        nn.init.zeros_(self.mod_fc2.weight)
        nn.init.zeros_(self.mod_fc2.bias)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, fm_mode={self.fm_mode!r}, num_bands={self.num_bands}, "
            f"enh_kernel_size={self.enh_kernel_size}, mod_hidden={self.mod_hidden}, "
            f"band_embedding={self.band_embed is not None}"
        )

    def _band_index(self, size: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return band_index(size, self.num_bands, device)
        idx = self._bands
        if idx is None or self._bands_size != size or idx.device != device:
            idx = self._bands = band_index(size, self.num_bands, device).to(torch.int32)
            self._bands_size = size
        return idx

    def _modulation_gain(self, xt: torch.Tensor, t: torch.dtype) -> torch.Tensor:
        w = self.mod_fc1.weight.dtype  # the modulator runs in the module's dtype
        z = self.norm(xt.to(w))
        if self.fm_mode == "spectral":
            z = torch.log1p(torch.fft.rfftn(z.to(t), dim=_FFT_DIMS, norm="ortho").abs())
        else:
            z = z.mean(dim=_FFT_DIMS, keepdim=True)
        z = self.mod_fc2(self.mod_act(self.mod_fc1(z.to(w))))
        if self.fm_mode == "band":
            z = z.reshape(z.shape[0], self.dim, self.num_bands)
        return 2 * torch.sigmoid(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_ndim(x, 5)
        check_channels(x, self.dim)
        size = (x.shape[-3], x.shape[-2], x.shape[-1])
        t = torch.promote_types(x.dtype, torch.float32)
        xt = x.to(t)
        X = torch.fft.rfftn(xt, dim=_FFT_DIMS, norm="ortho")
        banded = self.fm_mode == "band" or self.band_embed is not None
        bands = self._band_index(size, x.device) if banded else None

        h = self.enh_fc1(spectral_features(X).to(self.enh_fc1.weight.dtype))  # float32 features, module-dtype convs
        if self.band_embed is not None:
            h = h + self.band_embed[bands].permute(3, 0, 1, 2).to(h.dtype)
        f_e = self.enh_fc2(self.enh_act(h))

        f_m = self._modulation_gain(xt, t)
        Xm = spectral_modulation(X, f_m, f_e, self.alpha, self.beta, bands if self.fm_mode == "band" else None)
        return torch.fft.irfftn(Xm, s=size, dim=_FFT_DIMS, norm="ortho").to(x.dtype)
