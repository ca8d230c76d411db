"""Triton kernels and launchers of :func:`spectral3d.ops.depthwise_conv3d` (odd ``k <= 7``; maths at the op).

*(ours)*: forward and grad input (``dx = conv(dy, flip(w))``, one kernel, fp32 ``(taps, C)`` weight table) write a
``[BLOCK_S, BLOCK_C]`` tile (one sample's flat positions × channels) from fp32 registers, a tap being a masked
scalar shift of the offsets (padding-only taps skipped); channel stride 1 is the vector axis, ``C`` and strides in
units of ``ALIGN`` (≤ 16) for 16 B accesses; NCDHW is read through one channels-last copy (``nc_via_cl``) or
natively; grad weight/bias: per-chunk fp32 partials ``(chunks, taps [+ 1], C)`` summed in fixed order by a second
kernel (no atomics, bitwise repeatable); ``DROP_TAP`` (tests) leaves out a tap. Tiles: :func:`forward_config`.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from spectral3d.ops import testing

__all__ = [
    "TileConfig",
    "backward",
    "channels_last",
    "forward",
    "forward_config",
    "interpreting",
    "wgrad_config",
]


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------
# Sizes and strides are not specialised on (divisibility by 16, == 1): shapes that share a tile config share
# one compiled kernel, and the alignment the loads need comes from ALIGN instead.
_RUNTIME_INTS = ("CA", "D", "H", "W", "sa_n", "sa_d", "sa_h", "sa_o")


@triton.jit
def _sample_base(ptr, n, s_n):
    """``ptr + n * s_n`` with a 64-bit offset (offsets inside one sample fit 32 bits)."""
    return ptr + n.to(tl.int64) * s_n


@triton.jit
def _unscale(CA, sa_d, sa_h, sa_o, D, H, W, ALIGN: tl.constexpr, BLOCK_S: tl.constexpr):
    """C and x's (d, h, o) strides from their ``ALIGN`` units, the positions per sample and their tiles."""
    S = D * H * W
    return CA * ALIGN, sa_d * ALIGN, sa_h * ALIGN, sa_o * ALIGN, S, tl.cdiv(S, BLOCK_S)


@triton.jit
def _positions(s0, S, H, W, BLOCK_S: tl.constexpr):
    """Mask, ``d, h, w`` and tile ranges ``[lo, hi]`` of positions ``s0 + [0, BLOCK_S)`` of a flat (D, H, W)."""
    q = s0 + tl.arange(0, BLOCK_S)
    HW = H * W
    d = q // HW
    r = q % HW
    h = r // W
    w = r % W
    q_last = tl.minimum(s0 + BLOCK_S, S) - 1
    d_lo = s0 // HW
    d_hi = q_last // HW
    one_plane = d_lo == d_hi
    h_lo = tl.where(one_plane, (s0 % HW) // W, 0)
    h_hi = tl.where(one_plane, (q_last % HW) // W, H - 1)
    one_row = s0 // W == q_last // W
    w_lo = tl.where(one_row, s0 % W, 0)
    w_hi = tl.where(one_row, q_last % W, W - 1)
    return q, q < S, d, h, w, d_lo, d_hi, h_lo, h_hi, w_lo, w_hi


@triton.jit(do_not_specialize=_RUNTIME_INTS)
def _dw_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    CA, D, H, W,
    sa_n, sa_d, sa_h, sa_o,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, OUT_CHANNELS_LAST: tl.constexpr, EVEN_C: tl.constexpr, ALIGN: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, DROP_TAP: tl.constexpr,
):  # fmt: skip
    """``y = conv(x, w) + b`` on a ``[BLOCK_S, BLOCK_C]`` tile of sample ``n``; ``C``, strides in ``ALIGN`` units."""
    PD: tl.constexpr = KD // 2
    PH: tl.constexpr = KH // 2
    PW: tl.constexpr = KW // 2
    C, sx_d, sx_h, sx_o, S, tiles = _unscale(CA, sa_d, sa_h, sa_o, D, H, W, ALIGN, BLOCK_S)
    pid = tl.program_id(0)
    n = pid // tiles
    s0 = (pid % tiles) * BLOCK_S
    q, qm, d, h, w, d_lo, d_hi, h_lo, h_hi, w_lo, w_hi = _positions(s0, S, H, W, BLOCK_S)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < C
    if CHANNELS_LAST:
        xo = d * sx_d + h * sx_h + w * sx_o
        coff = cs[None, :]
    else:
        xo = d * sx_d + h * sx_h + w
        coff = (cs * sx_o)[None, :]
    xp = _sample_base(x_ptr, n, sa_n * ALIGN) + coff  # [1, BLOCK_C] pointers
    wp = w_ptr + cs
    # taps that reach the tile: the others would read padding only
    j_lo = tl.maximum(PH - h_hi, 0)
    j_hi = tl.minimum(H + PH - h_lo, KH)
    k_lo = tl.maximum(PW - w_hi, 0)
    k_hi = tl.minimum(W + PW - w_lo, KW)

    acc = tl.zeros([BLOCK_S, BLOCK_C], dtype=tl.float32)
    for i in range(tl.maximum(PD - d_hi, 0), tl.minimum(D + PD - d_lo, KD)):
        dd = d + (i - PD)
        mi = qm & (dd >= 0) & (dd < D)
        xi = xo + (i - PD) * sx_d
        for j in range(j_lo, j_hi):
            hh = h + (j - PH)
            mj = mi & (hh >= 0) & (hh < H)
            xj = xi + (j - PH) * sx_h
            wj = wp + (i * KH + j) * KW * C
            for k in tl.static_range(KW):
                if (k >= k_lo) & (k < k_hi):
                    ww = w + (k - PW)
                    m = (mj & (ww >= 0) & (ww < W))[:, None]
                    if CHANNELS_LAST:
                        xk = xj + (k - PW) * sx_o
                    else:
                        xk = xj + (k - PW)
                    if EVEN_C:
                        wv = tl.load(wj + k * C)
                    else:
                        m = m & cmask[None, :]
                        wv = tl.load(wj + k * C, mask=cmask, other=0.0)
                    if DROP_TAP >= 0:
                        wv = tl.where((i * KH + j) * KW + k == DROP_TAP, 0.0, wv)
                    xv = tl.load(xp + xk[:, None], mask=m, other=0.0)
                    acc += xv.to(tl.float32) * wv[None, :]
    acc += tl.load(b_ptr + cs, mask=cmask, other=0.0).to(tl.float32)[None, :]

    m = qm[:, None]
    if not EVEN_C:
        m = m & cmask[None, :]
    if OUT_CHANNELS_LAST:
        yo = (q * C)[:, None] + cs[None, :]
    else:
        yo = q[:, None] + (cs * S)[None, :]
    tl.store(_sample_base(y_ptr, n, S * C) + yo, acc.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=(*_RUNTIME_INTS, "TILES", "PER_CHUNK"))
def _dw_wgrad_kernel(
    x_ptr, dy_ptr, part_ptr,
    CA, D, H, W, TILES, PER_CHUNK,
    sa_n, sa_d, sa_h, sa_o,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, KWP: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_C: tl.constexpr, ALIGN: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, DROP_TAP: tl.constexpr,
):  # fmt: skip
    """Partial ``sum dy * x_shifted`` (centre row: also ``sum dy``); grid (chunk, tap row ``(i, j)``, channel block)."""
    PD: tl.constexpr = KD // 2
    PH: tl.constexpr = KH // 2
    PW: tl.constexpr = KW // 2
    TAPS: tl.constexpr = KD * KH * KW
    ROWS: tl.constexpr = KD * KH
    NROWS: tl.constexpr = TAPS + HAS_BIAS
    C, sx_d, sx_h, sx_o, S, tiles = _unscale(CA, sa_d, sa_h, sa_o, D, H, W, ALIGN, BLOCK_S)
    pid = tl.program_id(0)
    row = pid % ROWS
    chunk = pid // ROWS
    i = row // KH
    j = row % KH
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < C
    ls = tl.arange(0, KWP)
    lm = ls < KW
    if CHANNELS_LAST:
        xc = cs[None, None, :]
    else:
        xc = (cs * sx_o)[None, None, :]

    acc = tl.zeros([KWP, BLOCK_S, BLOCK_C], dtype=tl.float32)
    accb = tl.zeros([BLOCK_S, BLOCK_C], dtype=tl.float32)
    for tau in range(chunk * PER_CHUNK, tl.minimum(chunk * PER_CHUNK + PER_CHUNK, TILES)):
        n = tau // tiles
        s0 = (tau % tiles) * BLOCK_S
        q, qm, d, h, w, d_lo, d_hi, h_lo, h_hi, w_lo, w_hi = _positions(s0, S, H, W, BLOCK_S)
        om = qm[:, None]
        if not EVEN_C:
            om = om & cmask[None, :]
        if CHANNELS_LAST:
            yo = (q * C)[:, None] + cs[None, :]
        else:
            yo = q[:, None] + (cs * S)[None, :]
        if HAS_BIAS:
            g = tl.load(_sample_base(dy_ptr, n, S * C) + yo, mask=om, other=0.0).to(tl.float32)
            accb += g
        hit = (d_lo + (i - PD) < D) & (d_hi + (i - PD) >= 0) & (h_lo + (j - PH) < H) & (h_hi + (j - PH) >= 0)
        if hit:
            if not HAS_BIAS:
                g = tl.load(_sample_base(dy_ptr, n, S * C) + yo, mask=om, other=0.0).to(tl.float32)
            dd = d + (i - PD)
            hh = h + (j - PH)
            m = qm & (dd >= 0) & (dd < D) & (hh >= 0) & (hh < H)
            ww = w[None, :] + (ls - PW)[:, None]  # [KWP, BLOCK_S]: the KW width taps of this row
            mw = (m[None, :] & (ww >= 0) & (ww < W) & lm[:, None])[:, :, None]
            if not EVEN_C:
                mw = mw & cmask[None, None, :]
            if CHANNELS_LAST:
                xo = (dd * sx_d + hh * sx_h)[None, :] + ww * sx_o
            else:
                xo = (dd * sx_d + hh * sx_h)[None, :] + ww
            xv = tl.load(_sample_base(x_ptr, n, sa_n * ALIGN) + xo[:, :, None] + xc, mask=mw, other=0.0)
            acc += g[None, :, :] * xv.to(tl.float32)

    red = tl.sum(acc, axis=1)  # [KWP, BLOCK_C]
    taps = row * KW + ls
    if DROP_TAP >= 0:
        red = tl.where((taps == DROP_TAP)[:, None], 0.0, red)
    pb = part_ptr + chunk * (NROWS * C)
    tl.store(pb + taps[:, None] * C + cs[None, :], red, mask=lm[:, None] & cmask[None, :])
    if HAS_BIAS:
        tl.store(pb + TAPS * C + cs, tl.sum(accb, axis=0), mask=cmask & (row == PD * KH + PH))


@triton.jit(do_not_specialize=("C", "CHUNKS"))
def _dw_finish_kernel(
    part_ptr, dw_ptr, db_ptr, C, CHUNKS,
    TAPS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``dw[c, t] = sum_chunk part[chunk, t, c]`` (and ``db``) in chunk order: a fixed summation order."""
    NROWS: tl.constexpr = TAPS + HAS_BIAS
    total = NROWS * C
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = e < total
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(CHUNKS):
        acc += tl.load(part_ptr + k * total + e, mask=m, other=0.0)
    t = e // C
    c = e % C
    tl.store(dw_ptr + c * TAPS + t, acc.to(dw_ptr.dtype.element_ty), mask=m & (t < TAPS))
    if HAS_BIAS:
        tl.store(db_ptr + c, acc.to(db_ptr.dtype.element_ty), mask=m & (t == TAPS))


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
class TileConfig(NamedTuple):
    """Tile of one program: ``block_s`` positions of the flattened (D, H, W) volume x ``block_c`` channels."""

    block_s: int
    block_c: int
    num_warps: int = 4


def interpreting() -> bool:
    """Whether Triton runs through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def _channel_block(C: int, cap: int = 32) -> int:
    """The largest of ``cap, cap/2, ..., 8`` that divides ``C`` (no channel mask), else ``pow2(C)`` capped."""
    b = cap
    while b >= 8:
        if C % b == 0:
            return b
        b //= 2
    return min(cap, _pow2(C))


_MIN_PROGRAMS = 512  # ~4 per SM of an H100


def _warps(elements: int) -> int:
    return max(1, min(8, elements // 256))


def forward_config(N: int, C: int, S: int, channels_last: bool, interpret: bool | None = None) -> TileConfig:
    """Forward tile *(ours)*: channel block 32/16/8 dividing C, ~2048 elements, ≥ ~512 programs; NCDHW ≤ 1024."""
    if interpreting() if interpret is None else interpret:
        return TileConfig(min(_pow2(S), 2048), min(_pow2(C), 32), 4)
    if channels_last:
        bc = _channel_block(C)
        bs = min(_pow2(S), max(16, 2048 // bc))
        while bc > 8 and N * -(-S // bs) * -(-C // bc) < _MIN_PROGRAMS:
            bc //= 2
    else:
        bs = min(_pow2(S), 1024)
        bc = min(_pow2(C), max(1, 1024 // bs))
    return TileConfig(bs, bc, _warps(bs * bc))


def wgrad_config(C: int, S: int, KW: int, channels_last: bool, interpret: bool | None = None) -> TileConfig:
    """Tile of the weight-gradient kernel, whose register block is ``pow2(KW)`` times the tile."""
    kwp = _pow2(KW)
    if interpreting() if interpret is None else interpret:
        return TileConfig(min(_pow2(S), 2048), min(_pow2(C), 16), 4)
    if channels_last:
        bc = _channel_block(C)
        bs = min(_pow2(S), max(16, 4096 // (kwp * bc)))
    else:
        bs = min(_pow2(S), 4096 // kwp)
        bc = min(_pow2(C), max(1, 4096 // (kwp * bs)))
    return TileConfig(bs, bc, max(1, min(8, kwp * bs * bc // 512)))


def _tiles_per_chunk(tiles: int, rows: int, cblocks: int, interpret: bool) -> int:
    """Position tiles summed by one weight-gradient program: enough programs to fill a GPU, few partials."""
    if interpret:
        return max(1, -(-tiles // 2))  # two chunks: the finishing sum is exercised
    chunks = max(1, min(tiles, -(-2048 // (rows * cblocks))))
    return -(-tiles // chunks)


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------
def channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is read with a unit channel stride (else W); contiguous tensors read as NCDHW."""
    return not x.is_contiguous() and x.shape[1] > 1 and x.stride(1) == 1


def _readable(x: torch.Tensor, cl: bool) -> torch.Tensor:
    """``x`` as the kernels can address it in layout ``cl``: one copy if its unit stride is elsewhere."""
    N, C, D, H, W = x.shape
    if cl and (C == 1 or x.stride(1) == 1):
        return x
    if not cl and (W == 1 or x.stride(4) == 1):
        return x
    return x.contiguous(memory_format=torch.channels_last_3d if cl else torch.contiguous_format)


def _dense(x: torch.Tensor, cl: bool) -> torch.Tensor:
    fmt = torch.channels_last_3d if cl else torch.contiguous_format
    return x if x.is_contiguous(memory_format=fmt) else x.contiguous(memory_format=fmt)


def _alloc(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, cl: bool) -> torch.Tensor:
    """A dense output in the kernels' layout, through the test hooks (poisoned in tests)."""
    if cl:
        N, C, D, H, W = shape
        return testing.empty((N, D, H, W, C), dtype, device).permute(0, 4, 1, 2, 3)
    return testing.empty(tuple(shape), dtype, device)


def _align(cl: bool, x: torch.Tensor, C: int, block_c: int) -> int:
    """Largest power of two (≤ 16, ≤ block_c) dividing C and x's strides, channels-last (1 for NCDHW)."""
    if not cl:
        return 1
    g = 16
    for s in (*(x.stride(k) for k in (0, 2, 3, 4)), C, block_c):
        g = math.gcd(g, int(s))
    return g


def _strides(x: torch.Tensor, cl: bool, align: int) -> tuple[int, int, int, int]:
    """x's (n, d, h, o) strides in units of ``align``; ``o`` is w channels-last, c otherwise."""
    s = x.stride()
    return s[0] // align, s[2] // align, s[3] // align, (s[4] if cl else s[1]) // align


def _taps_table(weight: torch.Tensor, flip: bool) -> torch.Tensor:
    """``(taps, C)`` float32, tap ``t = (i * kh + j) * kw + k``; taps reversed for the grad input."""
    w = weight.flip((2, 3, 4)) if flip else weight
    return w.reshape(weight.shape[0], -1).t().to(torch.float32).contiguous()


def _kernel(fn, wrap: bool):
    testing.record_launch(fn.__name__)
    return torch.library.wrap_triton(fn) if wrap else fn


def _conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    cl: bool,
    out_cl: bool,
    flip: bool,
    wrap: bool,
    config: TileConfig | None,
    drop_tap: int,
) -> torch.Tensor:
    """One launch of the forward kernel: ``x`` read in layout ``cl``, ``y`` written dense in ``out_cl``."""
    N, C, D, H, W = x.shape
    KD, KH, KW = weight.shape[2:]
    cfg = config or forward_config(N, C, D * H * W, cl)
    y = _alloc(tuple(x.shape), x.dtype, x.device, out_cl)
    taps = _taps_table(weight, flip)
    # float32 bias, zeros when there is none: one compiled kernel serves the forward and the input gradient
    bias = torch.zeros(C, dtype=torch.float32, device=x.device) if bias is None else bias.to(torch.float32)
    align = _align(cl, x, C, cfg.block_c)
    grid = (N * triton.cdiv(D * H * W, cfg.block_s), triton.cdiv(C, cfg.block_c))
    _kernel(_dw_fwd_kernel, wrap)[grid](
        x, taps, bias, y,
        C // align, D, H, W, *_strides(x, cl, align),
        KD=KD, KH=KH, KW=KW, CHANNELS_LAST=cl, OUT_CHANNELS_LAST=out_cl, EVEN_C=C % cfg.block_c == 0,
        ALIGN=align, BLOCK_S=cfg.block_s, BLOCK_C=cfg.block_c, DROP_TAP=drop_tap, num_warps=cfg.num_warps,
    )  # fmt: skip
    return y


def _layouts(x: torch.Tensor, nc_via_cl: bool) -> tuple[bool, bool]:
    """(layout read, layout written): the input's, NCDHW read through a channels-last copy if ``nc_via_cl``."""
    out_cl = channels_last(x)
    return out_cl or nc_via_cl, out_cl


# --------------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------------
def forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    wrap: bool,
    config: TileConfig | None = None,
    nc_via_cl: bool = True,
    drop_tap: int = -1,
) -> torch.Tensor:
    """Launch the forward kernel, grid (tiles, channel blocks); output dense in ``x``'s layout."""
    cl, out_cl = _layouts(x, nc_via_cl)
    return _conv(_readable(x, cl), weight, bias, cl, out_cl, False, wrap, config, drop_tap)


def backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    input_grad: bool,
    weight_grad: bool,
    bias_grad: bool,
    *,
    wrap: bool,
    config: TileConfig | None = None,
    wgrad: TileConfig | None = None,
    tiles_per_chunk: int | None = None,
    nc_via_cl: bool = True,
    drop_tap: int = -1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dw, db)`` of :func:`forward` (empty where not asked for): flipped-tap forward, then wgrad + finish."""
    N, C, D, H, W = x.shape
    KD, KH, KW = weight.shape[2:]
    cl, out_cl = _layouts(x, nc_via_cl)
    grad = _dense(grad, cl)
    dx = _conv(grad, weight, None, cl, out_cl, True, wrap, config, drop_tap) if input_grad else None
    if not (weight_grad or bias_grad):
        return dx if input_grad else x.new_empty(0), x.new_empty(0), x.new_empty(0)
    x = _readable(x, cl)
    interpret = not wrap and x.device.type == "cpu"
    S = D * H * W
    cfg = wgrad or wgrad_config(C, S, KW, cl)
    cblocks = triton.cdiv(C, cfg.block_c)
    rows, taps = KD * KH, KD * KH * KW
    tiles = N * triton.cdiv(S, cfg.block_s)
    per = tiles_per_chunk or _tiles_per_chunk(tiles, rows, cblocks, interpret)
    chunks = triton.cdiv(tiles, per)
    nrows = taps + int(bias_grad)
    part = testing.empty((chunks, nrows, C), torch.float32, x.device)
    align = _align(cl, x, C, cfg.block_c)
    _kernel(_dw_wgrad_kernel, wrap)[(chunks * rows, cblocks)](
        x, grad, part,
        C // align, D, H, W, tiles, per, *_strides(x, cl, align),
        KD=KD, KH=KH, KW=KW, KWP=_pow2(KW), CHANNELS_LAST=cl, HAS_BIAS=bias_grad, EVEN_C=C % cfg.block_c == 0,
        ALIGN=align, BLOCK_S=cfg.block_s, BLOCK_C=cfg.block_c, DROP_TAP=drop_tap, num_warps=cfg.num_warps,
    )  # fmt: skip
    dw = testing.empty(tuple(weight.shape), weight.dtype, x.device)
    db = testing.empty((C,), grad.dtype, x.device) if bias_grad else None
    block = 256 if interpret else 1024
    _kernel(_dw_finish_kernel, wrap)[(triton.cdiv(nrows * C, block),)](
        part, dw, db if bias_grad else dw, C, chunks, TAPS=taps, HAS_BIAS=bias_grad, BLOCK=block, num_warps=4
    )
    return (
        dx if input_grad else x.new_empty(0),
        dw if weight_grad else x.new_empty(0),
        db if bias_grad else x.new_empty(0),
    )
