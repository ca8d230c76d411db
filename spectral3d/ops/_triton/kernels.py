"""Triton kernels of the spectral ops (Eq. 2 forward/backward, ``[R, I, |X|]``; maths at the public ops).

*(ours)*: grid 1-D, ``N * C * cdiv(S, BLOCK)`` programs over ``S = D H Wf`` bins per ``(n, c)`` row (``alpha[c]``,
``beta[c]``, per-channel ``f_m`` are program scalars); complex as ``view_as_real`` ``(BLOCK, 2)`` loads; a
``*_contig_kernel`` entry (strides from ``C``, ``S``) and a strided one (channels-last or sliced, no copy); fp32
arithmetic, ``band`` clamped to ``[0, B)``; backward: per-block partial rows, an acquire-release ticket per channel,
the last program sums the partials in fixed order (bitwise reproducible, no second kernel) and re-zeroes the ticket.
"""

from __future__ import annotations

import triton
import triton.language as tl

# The forms of f_m, the kernels' FM_FORM argument: per-channel (N, C, 1, 1, 1), full (N, C, D, H, Wf), banded (N, C, B).
FM_CHANNEL = tl.constexpr(0)
FM_FULL = tl.constexpr(1)
FM_BAND = tl.constexpr(2)


@triton.jit
def _bin_offsets(offs, Wf, H, s_d, s_h, s_w, ELEM: tl.constexpr, SPATIAL_CONTIG: tl.constexpr):
    """Offset of bins ``offs`` (flat index over D, H, Wf) inside one (n, c) row."""
    if SPATIAL_CONTIG:
        return offs * ELEM
    else:
        w = offs % Wf
        t = offs // Wf
        return (t // H) * s_d + (t % H) * s_h + w * s_w


@triton.jit
def _load_complex(ptr, base, boffs, mask):
    """Real and imaginary parts (float32) of complex elements at ``ptr + base + boffs``."""
    pair = tl.arange(0, 2)
    v = tl.load(ptr + base + boffs[:, None] + pair[None, :], mask=mask[:, None], other=0.0)
    return tl.split(v.to(tl.float32))


@triton.jit
def _store_complex(ptr, base, boffs, mask, re, im):
    pair = tl.arange(0, 2)
    tl.store(ptr + base + boffs[:, None] + pair[None, :], tl.join(re, im), mask=mask[:, None])


@triton.jit
def _row(n, c, s_n, s_c):
    """Offset (int64) of row ``(n, c)`` of a tensor with batch/channel strides ``s_n``, ``s_c``."""
    return tl.cast(n, tl.int64) * s_n + tl.cast(c, tl.int64) * s_c


@triton.jit
def _program_block(C, S, BLOCK: tl.constexpr):
    """This program's ``(pid, n, c, blk, nblk)`` and its block of bin indices ``offs`` with their ``mask``."""
    pid = tl.program_id(0)
    nblk = tl.cdiv(S, BLOCK)
    row = pid // nblk
    blk = pid % nblk
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    return pid, row // C, row % C, blk, nblk, offs, offs < S


@triton.jit
def _gain(fm_ptr, band_ptr, n, c, offs, mask, Wf, H, sm_n, sm_c, sm_d, sm_h, sm_w,
          FM_FORM: tl.constexpr, NUM_BANDS: tl.constexpr, SPATIAL_CONTIG: tl.constexpr):  # fmt: skip
    """``f_m`` at bins ``offs`` of row (n, c), float32, and the band of each bin (0 if not banded)."""
    base = _row(n, c, sm_n, sm_c)
    band = tl.zeros_like(offs)
    if FM_FORM == FM_CHANNEL:
        fm = tl.load(fm_ptr + base).to(tl.float32)
    elif FM_FORM == FM_FULL:
        fo = _bin_offsets(offs, Wf, H, sm_d, sm_h, sm_w, 1, SPATIAL_CONTIG)
        fm = tl.load(fm_ptr + base + fo, mask=mask, other=1.0).to(tl.float32)
    else:
        band = tl.load(band_ptr + offs, mask=mask, other=0).to(tl.int32)
        band = tl.minimum(tl.maximum(band, 0), NUM_BANDS - 1)
        fm = tl.load(fm_ptr + base + band * sm_w, mask=mask, other=1.0).to(tl.float32)
    return fm, band


@triton.jit
def _modulation_inputs(x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr, n, c, offs, mask, H, Wf,
                       sx_n, sx_c, sx_d, sx_h, sx_w, sm_n, sm_c, sm_d, sm_h, sm_w, se_n, se_c, se_d, se_h, se_w,
                       FM_FORM: tl.constexpr, NUM_BANDS: tl.constexpr, SPATIAL_CONTIG: tl.constexpr):  # fmt: skip
    """What Eq. 2 reads for one block, as float32: ``R, I, f_e, f_m, band, alpha, beta``."""
    xo = _bin_offsets(offs, Wf, H, sx_d, sx_h, sx_w, 2, SPATIAL_CONTIG)
    re, im = _load_complex(x_ptr, _row(n, c, sx_n, sx_c), xo, mask)
    eo = _bin_offsets(offs, Wf, H, se_d, se_h, se_w, 1, SPATIAL_CONTIG)
    fe = tl.load(fe_ptr + _row(n, c, se_n, se_c) + eo, mask=mask, other=0.0).to(tl.float32)
    fm, band = _gain(fm_ptr, band_ptr, n, c, offs, mask, Wf, H, sm_n, sm_c, sm_d, sm_h, sm_w,
                     FM_FORM, NUM_BANDS, SPATIAL_CONTIG)  # fmt: skip
    alpha = tl.load(alpha_ptr + c).to(tl.float32)
    beta = tl.load(beta_ptr + c).to(tl.float32)
    return re, im, fe, fm, band, alpha, beta


# --------------------------------------------------------------------------------------------
# Eq. 2 forward
# --------------------------------------------------------------------------------------------


@triton.jit
def modulation_fwd_kernel(
    x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr, out_ptr, C, H, Wf, S,
    sx_n, sx_c, sx_d, sx_h, sx_w, sm_n, sm_c, sm_d, sm_h, sm_w,
    se_n, se_c, se_d, se_h, se_w, so_n, so_c, so_d, so_h, so_w,
    FM_FORM: tl.constexpr, NUM_BANDS: tl.constexpr, SPATIAL_CONTIG: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``out = (R g + beta f_e phi) + i I g``, ``g = 1 + alpha (f_m - 1)`` for one block of one row."""
    pid, n, c, blk, nblk, offs, mask = _program_block(C, S, BLOCK)
    re, im, fe, fm, band, alpha, beta = _modulation_inputs(
        x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr, n, c, offs, mask, H, Wf,
        sx_n, sx_c, sx_d, sx_h, sx_w, sm_n, sm_c, sm_d, sm_h, sm_w, se_n, se_c, se_d, se_h, se_w,
        FM_FORM, NUM_BANDS, SPATIAL_CONTIG,
    )  # fmt: skip
    phi = tl.sqrt(re * re + im * im)
    g = 1.0 + alpha * (fm - 1.0)
    oo = _bin_offsets(offs, Wf, H, so_d, so_h, so_w, 2, SPATIAL_CONTIG)
    _store_complex(out_ptr, _row(n, c, so_n, so_c), oo, mask, re * g + beta * fe * phi, im * g)


@triton.jit
def modulation_fwd_contig_kernel(
    x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr, out_ptr, C, S,
    FM_FORM: tl.constexpr, NUM_BANDS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Eq. 2 forward, every tensor contiguous (banded ``f_m`` ``(N, C, B)``)."""
    S64 = tl.cast(S, tl.int64)
    sm_n, sm_c = _gain_strides(C, S64, FM_FORM, NUM_BANDS)
    modulation_fwd_kernel(
        x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr, out_ptr, C, 1, 1, S,
        C * S64 * 2, S64 * 2, 0, 0, 0, sm_n, sm_c, 0, 0, 1,
        C * S64, S64, 0, 0, 0, C * S64 * 2, S64 * 2, 0, 0, 0,
        FM_FORM, NUM_BANDS, True, BLOCK,
    )  # fmt: skip


@triton.jit
def _gain_strides(C, S, FM_FORM: tl.constexpr, NUM_BANDS: tl.constexpr):
    """(n, c) strides of a contiguous ``f_m``: ``(N, C, 1, 1, 1)``, ``(N, C, D, H, Wf)`` or ``(N, C, B)``."""
    if FM_FORM == FM_CHANNEL:
        return C, 1
    elif FM_FORM == FM_FULL:
        return C * S, S
    else:
        return C * NUM_BANDS, NUM_BANDS


# --------------------------------------------------------------------------------------------
# Eq. 2 backward, with the per-channel reductions finished by the channel's last program
# --------------------------------------------------------------------------------------------


@triton.jit
def _block_partials(s, gr, fe, phi, fm, band, FM_FORM: tl.constexpr, NUM_BANDS: tl.constexpr, KP: tl.constexpr):
    """This block's ``KP`` partial sums: the ``f_m`` (per form) or ``alpha`` sums of ``s``, then ``sum gR f_e phi``."""
    k = tl.arange(0, KP)
    if FM_FORM == FM_CHANNEL:
        row = tl.where(k == 0, tl.sum(s, axis=0), 0.0)
        nb = 1
    elif FM_FORM == FM_FULL:
        row = tl.where(k == 0, tl.sum((fm - 1.0) * s, axis=0), 0.0)
        nb = 1
    else:
        row = tl.zeros((KP,), tl.float32)
        for b in tl.static_range(NUM_BANDS):
            row = tl.where(k == b, tl.sum(tl.where(band == b, s, 0.0), axis=0), row)
        nb = NUM_BANDS
    return tl.where(k == nb, tl.sum(gr * fe * phi, axis=0), row)


@triton.jit
def _finish_channel(c, N, nblk, part_ptr, fm_ptr, alpha_ptr, gfm_ptr, galpha_ptr, gbeta_ptr,
                    sm_n, sm_c, sm_w, sgm_n, sgm_c, sgm_w,
                    FM_FORM: tl.constexpr, NUM_BANDS: tl.constexpr, KP: tl.constexpr,
                    RBLOCK: tl.constexpr):  # fmt: skip
    """Channel ``c``'s grad ``f_m``, ``alpha``, ``beta`` from its ``N * nblk`` partial rows, summed in index order."""
    k = tl.arange(0, KP)
    nb = NUM_BANDS if FM_FORM == FM_BAND else 1
    is_gain = k < nb
    alpha = tl.load(alpha_ptr + c).to(tl.float32)
    ga = tl.zeros((KP,), tl.float32)
    gb = tl.zeros((KP,), tl.float32)
    rows = tl.arange(0, RBLOCK)
    for n in range(N):
        base = part_ptr + (c * N + n).to(tl.int64) * nblk * KP
        acc = tl.zeros((KP,), tl.float32)
        for start in range(0, nblk, RBLOCK):
            r = start + rows
            tile = tl.load(base + r[:, None] * KP + k[None, :], mask=r[:, None] < nblk, other=0.0, cache_modifier=".cg")
            acc += tl.sum(tile, axis=0)
        gb += tl.where(k == nb, acc, 0.0)
        if FM_FORM == FM_FULL:
            ga += tl.where(k == 0, acc, 0.0)
        else:
            fm = tl.load(fm_ptr + _row(n, c, sm_n, sm_c) + k * sm_w, mask=is_gain, other=1.0).to(tl.float32)
            tl.store(gfm_ptr + _row(n, c, sgm_n, sgm_c) + k * sgm_w, alpha * acc, mask=is_gain)
            ga += tl.where(is_gain, (fm - 1.0) * acc, 0.0)
    tl.store(galpha_ptr + c, tl.sum(ga, axis=0))
    tl.store(gbeta_ptr + c, tl.sum(gb, axis=0))


@triton.jit
def modulation_bwd_kernel(
    gy_ptr, x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr,
    gx_ptr, gfe_ptr, gfm_ptr, galpha_ptr, gbeta_ptr, part_ptr, ticket_ptr,
    N, C, H, Wf, S,
    sg_n, sg_c, sg_d, sg_h, sg_w, sx_n, sx_c, sx_d, sx_h, sx_w,
    sm_n, sm_c, sm_d, sm_h, sm_w, se_n, se_c, se_d, se_h, se_w,
    sgx_n, sgx_c, sgx_d, sgx_h, sgx_w, sge_n, sge_c, sge_d, sge_h, sge_w,
    sgm_n, sgm_c, sgm_d, sgm_h, sgm_w,
    FM_FORM: tl.constexpr, NUM_BANDS: tl.constexpr, KP: tl.constexpr, SPATIAL_CONTIG: tl.constexpr,
    BLOCK: tl.constexpr, RBLOCK: tl.constexpr,
):  # fmt: skip
    """Element-wise gradients of Eq. 2 for one block of one row; partial sums; ticket; channel finish."""
    pid, n, c, blk, nblk, offs, mask = _program_block(C, S, BLOCK)
    go = _bin_offsets(offs, Wf, H, sg_d, sg_h, sg_w, 2, SPATIAL_CONTIG)
    gr, gi = _load_complex(gy_ptr, _row(n, c, sg_n, sg_c), go, mask)
    re, im, fe, fm, band, alpha, beta = _modulation_inputs(
        x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr, n, c, offs, mask, H, Wf,
        sx_n, sx_c, sx_d, sx_h, sx_w, sm_n, sm_c, sm_d, sm_h, sm_w, se_n, se_c, se_d, se_h, se_w,
        FM_FORM, NUM_BANDS, SPATIAL_CONTIG,
    )  # fmt: skip

    phi = tl.sqrt(re * re + im * im)
    inv = tl.where(phi > 0.0, 1.0 / tl.where(phi > 0.0, phi, 1.0), 0.0)
    g = 1.0 + alpha * (fm - 1.0)
    t = gr * beta * fe * inv
    gxo = _bin_offsets(offs, Wf, H, sgx_d, sgx_h, sgx_w, 2, SPATIAL_CONTIG)
    _store_complex(gx_ptr, _row(n, c, sgx_n, sgx_c), gxo, mask, gr * g + t * re, gi * g + t * im)
    geo = _bin_offsets(offs, Wf, H, sge_d, sge_h, sge_w, 1, SPATIAL_CONTIG)
    tl.store(gfe_ptr + _row(n, c, sge_n, sge_c) + geo, gr * beta * phi, mask=mask)
    s = gr * re + gi * im  # 0 on masked lanes (loads return 0 there)
    if FM_FORM == FM_FULL:
        gmo = _bin_offsets(offs, Wf, H, sgm_d, sgm_h, sgm_w, 1, SPATIAL_CONTIG)
        tl.store(gfm_ptr + _row(n, c, sgm_n, sgm_c) + gmo, alpha * s, mask=mask)

    part = _block_partials(s, gr, fe, phi, fm, band, FM_FORM, NUM_BANDS, KP)
    tl.store(part_ptr + ((c * N + n).to(tl.int64) * nblk + blk) * KP + tl.arange(0, KP), part)
    tl.debug_barrier()  # every thread's partials are written before the ticket releases them
    ticket = tl.atomic_add(ticket_ptr + c, 1, sem="acq_rel", scope="gpu")
    if ticket == N * nblk - 1:
        tl.atomic_xchg(ticket_ptr + c, 0, sem="relaxed", scope="gpu")  # ready for the next launch / replay
        _finish_channel(c, N, nblk, part_ptr, fm_ptr, alpha_ptr, gfm_ptr, galpha_ptr, gbeta_ptr,
                        sm_n, sm_c, sm_w, sgm_n, sgm_c, sgm_w, FM_FORM, NUM_BANDS, KP, RBLOCK)  # fmt: skip


@triton.jit
def modulation_bwd_contig_kernel(
    gy_ptr, x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr,
    gx_ptr, gfe_ptr, gfm_ptr, galpha_ptr, gbeta_ptr, part_ptr, ticket_ptr, N, C, S,
    FM_FORM: tl.constexpr, NUM_BANDS: tl.constexpr, KP: tl.constexpr, BLOCK: tl.constexpr, RBLOCK: tl.constexpr,
):  # fmt: skip
    """Eq. 2 backward, every tensor contiguous (grad ``f_m`` in ``f_m``'s contiguous layout)."""
    S64 = tl.cast(S, tl.int64)
    sm_n, sm_c = _gain_strides(C, S64, FM_FORM, NUM_BANDS)
    modulation_bwd_kernel(
        gy_ptr, x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr,
        gx_ptr, gfe_ptr, gfm_ptr, galpha_ptr, gbeta_ptr, part_ptr, ticket_ptr,
        N, C, 1, 1, S,
        C * S64 * 2, S64 * 2, 0, 0, 0, C * S64 * 2, S64 * 2, 0, 0, 0,
        sm_n, sm_c, 0, 0, 1, C * S64, S64, 0, 0, 0,
        C * S64 * 2, S64 * 2, 0, 0, 0, C * S64, S64, 0, 0, 0,
        sm_n, sm_c, 0, 0, 1,
        FM_FORM, NUM_BANDS, KP, True, BLOCK, RBLOCK,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# [R, I, |X|] features
# --------------------------------------------------------------------------------------------


@triton.jit
def features_fwd_kernel(x_ptr, out_ptr, C, H, Wf, S, sx_n, sx_c, sx_d, sx_h, sx_w,
                  SPATIAL_CONTIG: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """``out[n, c] = R``, ``out[n, C + c] = I``, ``out[n, 2C + c] = |X|``; ``out`` contiguous."""
    pid, n, c, blk, nblk, offs, mask = _program_block(C, S, BLOCK)
    xo = _bin_offsets(offs, Wf, H, sx_d, sx_h, sx_w, 2, SPATIAL_CONTIG)
    re, im = _load_complex(x_ptr, _row(n, c, sx_n, sx_c), xo, mask)
    plane = tl.cast(C, tl.int64) * S  # one block of C channels of out
    ob = out_ptr + n.to(tl.int64) * 3 * plane + c.to(tl.int64) * S + offs
    tl.store(ob, re, mask=mask)
    tl.store(ob + plane, im, mask=mask)
    tl.store(ob + 2 * plane, tl.sqrt(re * re + im * im), mask=mask)


@triton.jit
def features_fwd_contig_kernel(x_ptr, out_ptr, C, S, BLOCK: tl.constexpr):
    """Features forward, contiguous ``X``."""
    S64 = tl.cast(S, tl.int64)
    features_fwd_kernel(x_ptr, out_ptr, C, 1, 1, S, C * S64 * 2, S64 * 2, 0, 0, 0, True, BLOCK)


@triton.jit
def features_bwd_kernel(g_ptr, x_ptr, gx_ptr, C, H, Wf, S,
                  sg_n, sg_c, sg_d, sg_h, sg_w, sx_n, sx_c, sx_d, sx_h, sx_w, sgx_n, sgx_c, sgx_d, sgx_h, sgx_w,
                  SPATIAL_CONTIG: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """``dX = (g_R + g_phi R / phi) + i (g_I + g_phi I / phi)`` (0 / 0 := 0)."""
    pid, n, c, blk, nblk, offs, mask = _program_block(C, S, BLOCK)
    xo = _bin_offsets(offs, Wf, H, sx_d, sx_h, sx_w, 2, SPATIAL_CONTIG)
    re, im = _load_complex(x_ptr, _row(n, c, sx_n, sx_c), xo, mask)
    gb = g_ptr + _row(n, c, sg_n, sg_c) + _bin_offsets(offs, Wf, H, sg_d, sg_h, sg_w, 1, SPATIAL_CONTIG)
    g_re = tl.load(gb, mask=mask, other=0.0).to(tl.float32)
    plane = tl.cast(C, tl.int64) * sg_c  # C channels of grad
    g_im = tl.load(gb + plane, mask=mask, other=0.0).to(tl.float32)
    g_phi = tl.load(gb + 2 * plane, mask=mask, other=0.0).to(tl.float32)
    phi = tl.sqrt(re * re + im * im)
    q = tl.where(phi > 0.0, g_phi / tl.where(phi > 0.0, phi, 1.0), 0.0)
    gxo = _bin_offsets(offs, Wf, H, sgx_d, sgx_h, sgx_w, 2, SPATIAL_CONTIG)
    _store_complex(gx_ptr, _row(n, c, sgx_n, sgx_c), gxo, mask, g_re + q * re, g_im + q * im)


@triton.jit
def features_bwd_contig_kernel(g_ptr, x_ptr, gx_ptr, C, S, BLOCK: tl.constexpr):
    """Features backward, contiguous ``grad`` ``(N, 3C, ...)``, ``X`` and ``dX``."""
    S64 = tl.cast(S, tl.int64)
    features_bwd_kernel(g_ptr, x_ptr, gx_ptr, C, 1, 1, S,
                  3 * C * S64, S64, 0, 0, 0, C * S64 * 2, S64 * 2, 0, 0, 0, C * S64 * 2, S64 * 2, 0, 0, 0,
                  True, BLOCK)  # fmt: skip
