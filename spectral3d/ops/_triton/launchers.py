"""Launchers of the spectral Triton kernels, one launch each: ``wrap=True`` inside the custom ops on CUDA
(``torch.library.wrap_triton``), ``wrap=False`` for the eager path and the interpreter. Outputs via
:mod:`spectral3d.ops.testing` ``empty_like`` (input's layout); ``BLOCK = 1024`` bins, 4 warps (``block``: tests).
"""

from __future__ import annotations

import torch

from spectral3d.ops import testing
from spectral3d.ops._triton import kernels

__all__ = [
    "features_backward",
    "features_forward",
    "modulation_backward",
    "modulation_forward",
    "ticket_buffers",
    "tickets",
]

BLOCK = 1024
NUM_WARPS = 4
RBLOCK = 64  # partial rows summed per step by a channel's finishing program

_TICKETS: dict[tuple[torch.device, int, int], torch.Tensor] = {}


def _kernel(fn, wrap: bool):
    testing.record_launch(fn.__name__)
    if testing.launches_skipped():
        return testing.SKIPPED_LAUNCH
    return torch.library.wrap_triton(fn) if wrap else fn


def _as_real(t: torch.Tensor) -> torch.Tensor:
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return torch.view_as_real(t)


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
        return kernels.FM_BAND.value
    return kernels.FM_CHANNEL.value if f_m.shape[2:] == (1, 1, 1) else kernels.FM_FULL.value


def _gain_strides(f_m: torch.Tensor, form: int) -> tuple[int, int, int, int, int]:
    """``f_m``'s (n, c, d, h, w) strides as the kernels address it (banded: the band stride last)."""
    if form == kernels.FM_BAND.value:
        return (f_m.stride(0), f_m.stride(1), 0, 0, f_m.stride(2))
    return _strides(f_m)


def _num_blocks(S: int, block: int) -> int:
    return -(-S // block)


def _next_pow2(n: int) -> int:
    p = 1
    while p < n:  # also for a SymInt (torch.export / dynamic shapes)
        p *= 2
    return p


def _traced(t: torch.Tensor) -> bool:
    """Whether ``t`` belongs to a trace (fake / functional tensors, proxy mode): no cached buffers there."""
    if type(t) is not torch.Tensor:
        return True
    return torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.PROXY) is not None


def tickets(device: torch.device, channels: int) -> torch.Tensor:
    """Zeroed int32 tickets, one per channel, kept per (device, stream, C) for the process (CUDA-graph safe)."""
    stream = torch._C._cuda_getCurrentRawStream(device.index) if device.type == "cuda" else 0
    key = (device, stream, channels)
    buf = _TICKETS.get(key)
    if buf is None:
        buf = _TICKETS[key] = torch.zeros(channels, dtype=torch.int32, device=device)
    return buf


def ticket_buffers() -> list[torch.Tensor]:
    """Every ticket buffer allocated so far (each reads all zeros between launches)."""
    return list(_TICKETS.values())


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
    programs = N * C * _num_blocks(S, block)
    if programs == 0:
        return out
    form = _form(f_m)
    B = f_m.shape[2] if form == kernels.FM_BAND.value else 1
    if form == kernels.FM_BAND.value:
        f_m, band_index = f_m.contiguous(), band_index.contiguous()
    band = band_index if band_index is not None else alpha  # unused pointer unless banded
    alpha, beta = alpha.contiguous(), beta.contiguous()
    xr, outr = _as_real(X), torch.view_as_real(out)
    if X.is_contiguous() and f_e.is_contiguous() and f_m.is_contiguous() and out.is_contiguous():
        _kernel(kernels.modulation_fwd_contig_kernel, wrap)[(programs,)](
            xr, f_m, f_e, alpha, beta, band, outr, C, S,
            FM_FORM=form, NUM_BANDS=B, BLOCK=block, num_warps=NUM_WARPS,
        )  # fmt: skip
        return out
    full = [f_m] if form == kernels.FM_FULL.value else []
    _kernel(kernels.modulation_fwd_kernel, wrap)[(programs,)](
        xr, f_m, f_e, alpha, beta, band, outr, C, H, Wf, S,
        *_strides(xr), *_gain_strides(f_m, form), *_strides(f_e), *_strides(outr),
        FM_FORM=form, NUM_BANDS=B, SPATIAL_CONTIG=_spatial_contig([xr, outr], [f_e, *full]), BLOCK=block,
        num_warps=NUM_WARPS,
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
    """Gradients of Eq. 2 for ``X, f_m, f_e, alpha, beta`` (inputs' shapes and dtypes) in one launch."""
    N, C, D, H, Wf = X.shape
    S = D * H * Wf
    form = _form(f_m)
    B = f_m.shape[2] if form == kernels.FM_BAND.value else 1
    if form == kernels.FM_BAND.value:
        f_m, band_index = f_m.contiguous(), band_index.contiguous()
    band = band_index if band_index is not None else alpha  # unused pointer unless banded
    gx, gfe, gfm = testing.empty_like(X), testing.empty_like(f_e), testing.empty_like(f_m)
    galpha, gbeta = testing.empty_like(alpha), testing.empty_like(beta)
    nblk = _num_blocks(S, block)
    if N * C * nblk == 0:  # nothing to sum: the reductions are 0
        for t in (gx, gfe, gfm, galpha, gbeta):
            t.zero_()
        return gx, gfm, gfe, galpha, gbeta
    alpha_c, beta_c = alpha.contiguous(), beta.contiguous()
    KP = _next_pow2((B if form == kernels.FM_BAND.value else 1) + 1)
    partials = testing.empty((C * N * nblk * KP,), torch.float32, X.device)
    ticket = torch.zeros(C, dtype=torch.int32, device=X.device) if _traced(X) else tickets(X.device, C)
    gyr, xr, gxr = _as_real(grad), _as_real(X), torch.view_as_real(gx)
    common = (gyr, xr, f_m, f_e, alpha_c, beta_c, band, gxr, gfe, gfm, galpha, gbeta, partials, ticket)
    dense = (grad, X, f_e, f_m, gx, gfe, gfm)
    if all(t.is_contiguous() for t in dense):
        _kernel(kernels.modulation_bwd_contig_kernel, wrap)[(N * C * nblk,)](
            *common, N, C, S,
            FM_FORM=form, NUM_BANDS=B, KP=KP, BLOCK=block, RBLOCK=RBLOCK, num_warps=NUM_WARPS,
        )  # fmt: skip
    else:
        full = [f_m, gfm] if form == kernels.FM_FULL.value else []
        _kernel(kernels.modulation_bwd_kernel, wrap)[(N * C * nblk,)](
            *common, N, C, H, Wf, S,
            *_strides(gyr), *_strides(xr), *_gain_strides(f_m, form), *_strides(f_e),
            *_strides(gxr), *_strides(gfe), *_gain_strides(gfm, form),
            FM_FORM=form, NUM_BANDS=B, KP=KP, SPATIAL_CONTIG=_spatial_contig([gyr, xr, gxr], [f_e, gfe, *full]),
            BLOCK=block, RBLOCK=RBLOCK, num_warps=NUM_WARPS,
        )  # fmt: skip
    return gx, gfm, gfe, galpha, gbeta


def features_forward(X: torch.Tensor, *, wrap: bool, block: int = BLOCK) -> torch.Tensor:
    """``concat[R, I, |X|]`` ``(N, 3C, D, H, Wf)`` float32 (contiguous) of complex64 ``X``."""
    N, C, D, H, Wf = X.shape
    S = D * H * Wf
    out = testing.empty((N, 3 * C, D, H, Wf), torch.float32, X.device)
    programs = N * C * _num_blocks(S, block)
    if programs == 0:
        return out
    xr = _as_real(X)
    if X.is_contiguous():
        _kernel(kernels.features_fwd_contig_kernel, wrap)[(programs,)](xr, out, C, S, BLOCK=block, num_warps=NUM_WARPS)
    else:
        _kernel(kernels.features_fwd_kernel, wrap)[(programs,)](
            xr, out, C, H, Wf, S, *_strides(xr),
            SPATIAL_CONTIG=_spatial_contig([xr], []), BLOCK=block, num_warps=NUM_WARPS,
        )  # fmt: skip
    return out


def features_backward(grad: torch.Tensor, X: torch.Tensor, *, wrap: bool, block: int = BLOCK) -> torch.Tensor:
    """Gradient of :func:`features_forward` w.r.t. ``X`` (``X``'s layout and dtype)."""
    N, C, D, H, Wf = X.shape
    S = D * H * Wf
    gx = testing.empty_like(X)
    programs = N * C * _num_blocks(S, block)
    if programs == 0:
        return gx
    xr, gxr = _as_real(X), torch.view_as_real(gx)
    if grad.is_contiguous() and X.is_contiguous() and gx.is_contiguous():
        _kernel(kernels.features_bwd_contig_kernel, wrap)[(programs,)](
            grad, xr, gxr, C, S, BLOCK=block, num_warps=NUM_WARPS
        )
    else:
        _kernel(kernels.features_bwd_kernel, wrap)[(programs,)](
            grad, xr, gxr, C, H, Wf, S,
            *_strides(grad), *_strides(xr), *_strides(gxr),
            SPATIAL_CONTIG=_spatial_contig([xr, gxr], [grad]), BLOCK=block, num_warps=NUM_WARPS,
        )  # fmt: skip
    return gx
