"""Selective scan (Mamba's S6, Gu & Dao 2023, Alg. 2; ``mamba_ssm``'s ``selective_scan_fn`` signature)::

    Δ[b,d,t]   = softplus(delta[b,d,t] + delta_bias[d])   (bias / softplus optional)
    h[b,d,n,t] = exp(Δ[b,d,t]·A[d,n]) · h[b,d,n,t-1] + Δ[b,d,t] · B[b,n,t] · u[b,d,t],   h[...,-1] = 0
    y[b,d,t]   = Σ_n C[b,n,t] · h[b,d,n,t] + D[d] · u[b,d,t]
    out        = y · silu(z)                               (gate optional)

Shapes: ``u``, ``delta``, ``z``: ``(B, D, L)``; ``A``: ``(D, N)``; ``B``, ``C``: ``(B, N, L)`` or ``(B, G, N, L)``
(``G`` groups of ``D / G`` channels); ``D``, ``delta_bias``: ``(D,)``. Output ``(B, D, L)`` in ``u``'s dtype,
computed in ``promote_types(u.dtype, float32)``. :func:`selective_scan_chunked` *(ours)*: chunks carry ``h``
``(B, D, N)``; inside one a Hillis–Steele scan ``h_t ← h_t + exp(A · W_t) · h_{t-s}``, ``W_t ← W_t + W_{t-s}``
(``W`` summed step sizes, exponents ≤ 0), checkpointed per chunk. Notes: benchmarks/results/library_notes.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from spectral3d.checks import check_int
from spectral3d.ops._switch import kernel_mode

__all__ = [
    "mamba_ssm_available",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_reference",
]

Backend = Literal["auto", "torch", "mamba_ssm"]
_MAMBA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.cache
def _mamba_selective_scan_fn() -> Callable[..., torch.Tensor] | None:
    """``mamba_ssm``'s fused ``selective_scan_fn``, or ``None`` when it does not import."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except (ImportError, OSError):  # not installed, or its CUDA extension fails to load
        return None
    return selective_scan_fn


def mamba_ssm_available() -> bool:
    """True when ``mamba_ssm``'s fused selective-scan kernel imports in this environment."""
    return _mamba_selective_scan_fn() is not None


def _check_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
) -> None:
    """Validate shapes and dtypes (no host synchronisation)."""
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a real floating-point tensor, got dtype {t.dtype}")
    if u.ndim != 3:
        raise ValueError(f"u: expected a 3-D tensor (B, D, L), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if length < 1:
        raise ValueError(f"u: expected at least one token (L >= 1), got shape {tuple(u.shape)}")
    if delta.shape != u.shape:
        raise ValueError(f"delta: expected shape {tuple(u.shape)} (same as u), got {tuple(delta.shape)}")
    if A.ndim != 2 or A.shape[0] != dim:
        raise ValueError(f"A: expected shape (D, N) = ({dim}, N), got {tuple(A.shape)}")
    state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.ndim == 3:
            expected: tuple[int, ...] = (batch, state, length)
        elif t.ndim == 4:
            expected = (batch, t.shape[1], state, length)
            if t.shape[1] < 1 or dim % t.shape[1] != 0:
                raise ValueError(f"{name}: the number of groups {t.shape[1]} (axis 1) must divide D = {dim}")
        else:
            raise ValueError(f"{name}: expected shape (B, N, L) or (B, G, N, L), got {tuple(t.shape)}")
        if tuple(t.shape) != expected:
            raise ValueError(f"{name}: expected shape {expected} (B, [G,] N, L), got {tuple(t.shape)}")
    if B.ndim == 4 and C.ndim == 4 and B.shape[1] != C.shape[1]:
        raise ValueError(f"B and C: expected the same number of groups, got {B.shape[1]} and {C.shape[1]}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and (not isinstance(t, torch.Tensor) or tuple(t.shape) != (dim,)):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected shape ({dim},) (one value per channel D), got {shape}")
    if z is not None and (not isinstance(z, torch.Tensor) or z.shape != u.shape):
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"z: expected shape {tuple(u.shape)} (same as u), got {shape}")


def _as_groups(t: torch.Tensor) -> torch.Tensor:
    """``(B, N, L)`` → ``(B, 1, N, L)``; ``(B, G, N, L)`` unchanged."""
    return t.unsqueeze(1) if t.ndim == 3 else t


def _prepare_delta(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool, dtype: torch.dtype
) -> torch.Tensor:
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    return F.softplus(delta) if delta_softplus else delta


def _finish(
    y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None, dtype_in: torch.dtype
) -> torch.Tensor:
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype_in)


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The token loop over ``L`` (the oracle; any float dtype); arguments as :func:`selective_scan`.

    Example::

        >>> u, delta = torch.randn(2, 8, 5), torch.rand(2, 8, 5)
        >>> A, B, C = -torch.rand(8, 4), torch.randn(2, 4, 5), torch.randn(2, 4, 5)
        >>> selective_scan_reference(u, delta, A, B, C).shape
        torch.Size([2, 8, 5])
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype = torch.promote_types(u.dtype, torch.float32)
    batch, dim, length = u.shape
    groups = _as_groups(B).shape[1]
    # Per-channel B/C: (B, G, N, L) → (B, D, N, L), channel d using group d // (D / G).
    Bd = _as_groups(B).to(dtype).repeat_interleave(dim // groups, dim=1)
    Cd = _as_groups(C).to(dtype).repeat_interleave(dim // groups, dim=1)
    u_c = u.to(dtype)
    delta_c = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    A_c = A.to(dtype)
    h = u_c.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta_c[:, :, t, None] * A_c) * h + (delta_c[:, :, t] * u_c[:, :, t])[..., None] * Bd[..., t]
        ys.append((h * Cd[..., t]).sum(-1))
    out = _finish(torch.stack(ys, dim=-1), u_c, D, z, u.dtype)
    return (out, h) if return_last_state else out


def _scan_chunk(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan one chunk from state ``h0`` ``(b, G, D/G, N)``; return ``Σ_n C·h`` ``(b, G, D/G, T)`` and the last state."""
    length = u.shape[-1]
    h = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # (b, G, D/G, T, N): local states from a zero state
    window = delta  # Σ Δ over the tokens that h[t] covers; its log-decay is A · window[t] ≤ 0
    step = 1
    while step < length:  # Hillis–Steele: afterwards h[t] covers the 2·step tokens up to t
        decay = torch.exp(window[..., step:, None] * A.unsqueeze(-2))
        h = torch.cat([h[..., :step, :], torch.addcmul(h[..., step:, :], decay, h[..., :-step, :])], dim=-2)
        window = torch.cat([window[..., :step], window[..., step:] + window[..., :-step]], dim=-1)
        step *= 2
    h = torch.addcmul(h, torch.exp(window.unsqueeze(-1) * A.unsqueeze(-2)), h0.unsqueeze(-2))
    y = (h * C.unsqueeze(2)).sum(-1)
    return y, h[..., -1, :]


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk_size: int = 16,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The chunked PyTorch scan (module docstring), any device and float dtype; arguments as :func:`selective_scan`.

    Example::

        >>> u, delta = torch.randn(2, 8, 100), torch.rand(2, 8, 100)
        >>> A, B, C = -torch.rand(8, 4), torch.randn(2, 4, 100), torch.randn(2, 4, 100)
        >>> y = selective_scan_chunked(u, delta, A, B, C, chunk_size=16)
        >>> torch.allclose(y, selective_scan_reference(u, delta, A, B, C), atol=1e-5)
        True
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    check_int(chunk_size, "chunk_size")
    dtype = torch.promote_types(u.dtype, torch.float32)
    batch, dim, length = u.shape
    Bg, Cg = (_as_groups(t).to(dtype).transpose(-1, -2) for t in (B, C))  # (b, G, L, N)
    groups, state = _as_groups(B).shape[1], A.shape[1]
    u_c = u.to(dtype)
    delta_c = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    u_g = u_c.view(batch, groups, dim // groups, length)
    delta_g = delta_c.view(batch, groups, dim // groups, length)
    A_g = A.to(dtype).view(groups, dim // groups, state)
    h = u_c.new_zeros(batch, groups, dim // groups, state)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, delta_bias)
    )
    ys = []
    for start in range(0, length, chunk_size):
        chunk = (
            u_g[..., start : start + chunk_size],
            delta_g[..., start : start + chunk_size],
            A_g,
            Bg[..., start : start + chunk_size, :],
            Cg[..., start : start + chunk_size, :],
            h,
        )
        if needs_grad:  # keep only the chunk's inputs; its states are recomputed in the backward pass
            y, h = checkpoint(_scan_chunk, *chunk, use_reentrant=False, preserve_rng_state=False)
        else:
            y, h = _scan_chunk(*chunk)
        ys.append(y)
    y = torch.cat(ys, dim=-1).reshape(batch, dim, length)
    out = _finish(y, u_c, D, z, u.dtype)
    return (out, h.reshape(batch, dim, state)) if return_last_state else out


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    chunk_size: int = 16,
    backend: Backend = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mamba's selective scan ``y = SSM(Δ, A, B, C)(u) + D·u``, gated by ``silu(z)`` (module docstring).

    Arguments, shapes and result as ``mamba_ssm``'s ``selective_scan_fn`` (module docstring; ``A`` negative,
    ``D``, ``z``, ``delta_bias`` may be ``None``), plus:

    Args:
        return_last_state: also return the final ``h`` ``(B, D, N)``: ``(out, last_state)``.
        chunk_size: tokens per chunk of :func:`selective_scan_chunked` (work ~ log2, Python overhead ~ L / chunk).
        backend: ``"auto"`` (``mamba_ssm``'s kernel on CUDA fp32/fp16/bf16 when it imports, else PyTorch; per
            ``use_kernels``), ``"torch"`` or ``"mamba_ssm"`` (``RuntimeError`` if it cannot run).

    Example::

        >>> u, delta = torch.randn(2, 8, 100), torch.randn(2, 8, 100)
        >>> A = -torch.exp(torch.randn(8, 16))
        >>> B, C = torch.randn(2, 16, 100), torch.randn(2, 16, 100)
        >>> out, h = selective_scan(u, delta, A, B, C, D=torch.ones(8), z=torch.randn(2, 8, 100),
        ...                         delta_bias=torch.zeros(8), delta_softplus=True, return_last_state=True)
        >>> out.shape, h.shape
        (torch.Size([2, 8, 100]), torch.Size([2, 8, 16]))
    """
    if backend not in ("auto", "torch", "mamba_ssm"):
        raise ValueError(f"backend: expected 'auto', 'torch' or 'mamba_ssm', got {backend!r}")
    if backend == "auto":
        mode = kernel_mode("selective_scan")
        if mode == "autograd":
            return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
        backend = {"auto": "auto", "triton": "mamba_ssm", "reference": "torch"}[mode]
    kernel = _mamba_selective_scan_fn() if backend != "torch" else None
    kernel_fits = isinstance(u, torch.Tensor) and u.is_cuda and u.dtype in _MAMBA_DTYPES
    if backend == "mamba_ssm" and (kernel is None or not kernel_fits):
        why = "mamba_ssm does not import" if kernel is None else f"u is {u.device} {u.dtype}, not CUDA float32/16/bf16"
        raise RuntimeError(f"backend='mamba_ssm': the fused kernel cannot run ({why})")
    if kernel is not None and kernel_fits:
        _check_inputs(u, delta, A, B, C, D, z, delta_bias)
        return kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return selective_scan_chunked(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk_size=chunk_size
    )
