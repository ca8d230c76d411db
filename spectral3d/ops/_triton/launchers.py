"""Launchers of the spectral Triton kernels: plain functions over tensors.

The custom ops of :mod:`spectral3d.ops.spectral_modulation` call them with ``wrap=True`` on CUDA
(kernels go through ``torch.library.wrap_triton``, so ``torch.compile`` sees them); with
``TRITON_INTERPRET=1`` set at process start they are called with ``wrap=False`` on CPU tensors,
running the very same kernels in Triton's interpreter.

Each launcher allocates its outputs like its inputs (``empty_like``: same layout; through
:mod:`spectral3d.ops.testing`, whose hooks poison outputs and count launches in tests), reads complex
tensors through ``view_as_real`` (no copy) and passes every tensor's strides, so channels-last or
sliced inputs cost no copy. Only ``band_index`` (``(D, H, Wf)``, converted to int32) and a banded
``f_m``, ``alpha``, ``beta`` (a few hundred bytes) are made contiguous. Block size: ``BLOCK = 1024``
bins per program with 4 warps by default (8 complex bins per thread); ``block`` overrides it (tests
use small blocks to exercise many blocks per row).
"""

from __future__ import annotations

import torch
import triton

from spectral3d.ops import testing
from spectral3d.ops._triton import kernels

__all__ = ["features_backward", "features_forward", "modulation_backward", "modulation_forward"]

BLOCK = 1024
NUM_WARPS = 4


def _kernel(fn, wrap: bool):  # noqa: ANN001, ANN202
    testing.record_launch(fn.__name__)
    return torch.library.wrap_triton(fn) if wrap else fn


def _as_real(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t.resolve_conj().resolve_neg())


def _strides(t: torch.Tensor) -> tuple[int, int, int, int, int]:
    """(n, c, d, h, w) strides in elements of the storage dtype (a real view: complex element strides)."""
    return tuple(t.stride()[:5])  # type: ignore[return-value]


def _dense_spatial(t: torch.Tensor, elem: int) -> bool:
    _, _, D, H, Wf = t.shape[:5]
    s = t.stride()
    return (Wf == 1 or s[4] == elem) and (H == 1 or s[3] == Wf * elem) and (D == 1 or s[2] == H * Wf * elem)


def _spatial_contig(complex_views: list[torch.Tensor], reals: list[torch.Tensor]) -> bool:
    return all(_dense_spatial(t, 2) for t in complex_views) and all(_dense_spatial(t, 1) for t in reals)


def _form(f_m: torch.Tensor) -> int:
    if f_m.ndim == 3:
        return kernels.FM_BAND
    return kernels.FM_CHANNEL if f_m.shape[2:] == (1, 1, 1) else kernels.FM_FULL


def _gain_args(f_m: torch.Tensor, band_index: torch.Tensor | None, dummy: torch.Tensor):  # noqa: ANN202
    """(f_m, band, f_m strides (n, c, d, h, w), form, B) as the kernels address them."""
    form = _form(f_m)
    if form == kernels.FM_BAND:
        f_m = f_m.contiguous()
        return f_m, band_index.to(torch.int32).contiguous(), (f_m.stride(0), f_m.stride(1), 0, 0, 1), form, f_m.shape[2]
    return f_m, dummy, _strides(f_m), form, 1


def _grid(N: int, C: int, S: int, block: int) -> tuple[int, int]:
    nblk = triton.cdiv(S, block)
    return nblk, N * C * nblk


def modulation_forward(
    X: torch.Tensor,
    f_m: torch.Tensor,
    f_e: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    band_index: torch.Tensor | None,
    *,
    wrap: bool,
    block: int = BLOCK,
) -> torch.Tensor:
    """Eq. 2 forward on complex64 ``X``; arguments as :func:`spectral3d.ops.spectral_modulation`."""
    N, C, D, H, Wf = X.shape
    S = D * H * Wf
    out = testing.empty_like(X)
    xr, outr = _as_real(X), torch.view_as_real(out)
    alpha, beta = alpha.contiguous(), beta.contiguous()
    fm, band, sm, form, B = _gain_args(f_m, band_index, alpha)
    full = [fm] if form == kernels.FM_FULL else []
    contig = _spatial_contig([xr, outr], [f_e, *full])
    nblk, programs = _grid(N, C, S, block)
    if programs == 0:
        return out
    _kernel(kernels.modulation_fwd_kernel, wrap)[(programs,)](
        xr, fm, f_e, alpha, beta, band, outr,
        C, H, Wf, S, nblk,
        *_strides(xr), *sm, *_strides(f_e), *_strides(outr),
        FM_FORM=form, NUM_BANDS=B, SPATIAL_CONTIG=contig, BLOCK=block, num_warps=NUM_WARPS,
    )  # fmt: skip
    return out


def modulation_backward(
    grad: torch.Tensor,
    X: torch.Tensor,
    f_m: torch.Tensor,
    f_e: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    band_index: torch.Tensor | None,
    *,
    wrap: bool,
    block: int = BLOCK,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of Eq. 2 for ``X, f_m, f_e, alpha, beta``, each in its input's shape and dtype.

    One pass over the bins writes ``grad_X``, ``grad_f_e`` (and a full ``grad_f_m``) and per-block
    partial sums; a fixed-order ``torch.sum`` over blocks and batch finishes ``grad_f_m``
    (per-channel/banded), ``grad_alpha`` and ``grad_beta`` (deterministic).
    """
    N, C, D, H, Wf = X.shape
    S = D * H * Wf
    gx, gfe = testing.empty_like(X), testing.empty_like(f_e)
    gyr, xr, gxr = _as_real(grad), _as_real(X), torch.view_as_real(gx)
    alpha_c, beta_c = alpha.contiguous(), beta.contiguous()
    fm, band, sm, form, B = _gain_args(f_m, band_index, alpha_c)
    gfm = testing.empty_like(f_m) if form == kernels.FM_FULL else gfe  # gfe: unused pointer otherwise
    full = [fm, gfm] if form == kernels.FM_FULL else []
    contig = _spatial_contig([gyr, xr, gxr], [f_e, gfe, *full])
    K = B + 1 if form == kernels.FM_BAND else 2
    nblk, programs = _grid(N, C, S, block)
    partials = testing.empty((N, C, nblk, K), torch.float32, X.device)
    if programs > 0:
        _kernel(kernels.modulation_bwd_kernel, wrap)[(programs,)](
            gyr, xr, fm, f_e, alpha_c, beta_c, band,
            gxr, gfe, gfm, partials,
            C, H, Wf, S, nblk,
            *_strides(gyr), *_strides(xr), *sm, *_strides(f_e),
            *_strides(gxr), *_strides(gfe), *_strides(gfm),
            FM_FORM=form, NUM_BANDS=B, NUM_PARTIALS=K, SPATIAL_CONTIG=contig, BLOCK=block, num_warps=NUM_WARPS,
        )  # fmt: skip
    sums = partials.sum(dim=2)  # (N, C, K), fixed order
    a = alpha.float()
    grad_beta = sums[..., -1].sum(dim=0)
    if form == kernels.FM_FULL:
        grad_alpha = sums[..., 0].sum(dim=0)
    elif form == kernels.FM_CHANNEL:
        s = sums[..., 0]
        gfm = (a * s).view(N, C, 1, 1, 1)
        grad_alpha = ((f_m.float().reshape(N, C) - 1) * s).sum(dim=0)
    else:
        s = sums[..., :B]
        gfm = a.view(1, C, 1) * s
        grad_alpha = ((f_m.float() - 1) * s).sum(dim=(0, 2))
    return gx, gfm.to(f_m.dtype), gfe, grad_alpha.to(alpha.dtype), grad_beta.to(beta.dtype)


def features_forward(X: torch.Tensor, *, wrap: bool, block: int = BLOCK) -> torch.Tensor:
    """``concat[R, I, |X|]`` ``(N, 3C, D, H, Wf)`` float32 (contiguous) of complex64 ``X``."""
    N, C, D, H, Wf = X.shape
    S = D * H * Wf
    out = testing.empty((N, 3 * C, D, H, Wf), torch.float32, X.device)
    xr = _as_real(X)
    nblk, programs = _grid(N, C, S, block)
    if programs > 0:
        _kernel(kernels.features_fwd_kernel, wrap)[(programs,)](
            xr, out, C, H, Wf, S, nblk, *_strides(xr),
            SPATIAL_CONTIG=_spatial_contig([xr], []), BLOCK=block, num_warps=NUM_WARPS,
        )  # fmt: skip
    return out


def features_backward(grad: torch.Tensor, X: torch.Tensor, *, wrap: bool, block: int = BLOCK) -> torch.Tensor:
    """Gradient of :func:`features_forward` w.r.t. ``X`` (``X``'s layout and dtype)."""
    N, C, D, H, Wf = X.shape
    S = D * H * Wf
    gx = testing.empty_like(X)
    xr, gxr = _as_real(X), torch.view_as_real(gx)
    nblk, programs = _grid(N, C, S, block)
    if programs > 0:
        _kernel(kernels.features_bwd_kernel, wrap)[(programs,)](
            grad, xr, gxr, C, H, Wf, S, nblk,
            *_strides(grad), *_strides(xr), *_strides(gxr),
            SPATIAL_CONTIG=_spatial_contig([xr, gxr], [grad]), BLOCK=block, num_warps=NUM_WARPS,
        )  # fmt: skip
    return gx
