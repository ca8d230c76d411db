"""Triton kernels of the spectral ops: Eq. 2 forward/backward and the ``[R, I, |X|]`` features.

Grid *(ours)*: one 1-D launch of ``N * C * cdiv(S, BLOCK)`` programs, ``S = D * H * Wf`` bins per
``(n, c)`` row; program ``pid`` handles bins ``[blk * BLOCK, (blk + 1) * BLOCK)`` of row
``pid // nblk``, so ``alpha[c]``, ``beta[c]`` and a per-channel ``f_m[n, c]`` are scalars of the
program and a banded ``f_m[n, c, :]`` is a tiny gather that stays in L1. Complex tensors arrive as
their ``view_as_real`` float views: one ``(BLOCK, 2)`` load, ``tl.split`` into real and imaginary
parts. Every tensor is addressed through its own ``(n, c, d, h, w)`` strides (channels-last or
sliced inputs need no copy); when every spatial block is dense (``SPATIAL_CONTIG``) the bin offset
is ``offs`` times the element size, so the compiler sees contiguous, vectorisable accesses, and the
``d, h, w`` decomposition (two divisions) is only paid otherwise.

All arithmetic is float32 whatever the storage dtype of ``f_m`` / ``f_e`` (bf16/fp16 under
autocast); stores cast to the destination dtype. The backward writes the element-wise gradients and
one row of per-block partial sums per program (``K`` floats: the ``f_m``/``alpha`` sums and the
``beta`` sum); the launcher reduces those with a fixed-order ``torch.sum``, so gradients are
bitwise reproducible (no atomics).

``band`` indices are clamped to ``[0, B)`` in the kernel, so a bad index can never read outside
``f_m`` (the op validates the range on CPU, and on GPU with ``SPECTRAL3D_CHECK_FINITE=1``).
"""

from __future__ import annotations

import triton
import triton.language as tl

FM_CHANNEL = 0
FM_FULL = 1
FM_BAND = 2


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
def _gain(fm_ptr, band_ptr, n, c, offs, mask, Wf, H, sm_n, sm_c, sm_d, sm_h, sm_w,
          FM_FORM: tl.constexpr, NUM_BANDS: tl.constexpr, SPATIAL_CONTIG: tl.constexpr):  # fmt: skip
    """``f_m`` at bins ``offs`` of row (n, c), float32, and the band of each bin (0 if not banded)."""
    base = _row(n, c, sm_n, sm_c)
    band = tl.zeros_like(offs)
    if FM_FORM == 0:
        fm = tl.load(fm_ptr + base).to(tl.float32)
    elif FM_FORM == 1:
        fo = _bin_offsets(offs, Wf, H, sm_d, sm_h, sm_w, 1, SPATIAL_CONTIG)
        fm = tl.load(fm_ptr + base + fo, mask=mask, other=1.0).to(tl.float32)
    else:
        band = tl.load(band_ptr + offs, mask=mask, other=0)
        band = tl.minimum(tl.maximum(band, 0), NUM_BANDS - 1)
        fm = tl.load(fm_ptr + base + band * sm_w, mask=mask, other=1.0).to(tl.float32)
    return fm, band


@triton.jit
def _program_block(C, S, nblk, BLOCK: tl.constexpr):
    """This program's ``(pid, n, c)`` and its block of bin indices ``offs`` with their ``mask``."""
    pid = tl.program_id(0)
    row = pid // nblk
    n = row // C
    c = row % C
    offs = (pid % nblk) * BLOCK + tl.arange(0, BLOCK)
    return pid, n, c, offs, offs < S


@triton.jit
def _row(n, c, s_n, s_c):
    """Offset (int64) of row ``(n, c)`` of a tensor with batch/channel strides ``s_n``, ``s_c``."""
    return n.to(tl.int64) * s_n + c.to(tl.int64) * s_c


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


@triton.jit
def modulation_fwd_kernel(
    x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr, out_ptr,
    C, H, Wf, S, nblk,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sm_n, sm_c, sm_d, sm_h, sm_w,
    se_n, se_c, se_d, se_h, se_w,
    so_n, so_c, so_d, so_h, so_w,
    FM_FORM: tl.constexpr, NUM_BANDS: tl.constexpr, SPATIAL_CONTIG: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``out = (R g + beta f_e phi) + i I g``, ``g = 1 + alpha (f_m - 1)`` for one block of one row."""
    pid, n, c, offs, mask = _program_block(C, S, nblk, BLOCK)

    re, im, fe, fm, band, alpha, beta = _modulation_inputs(
        x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr, n, c, offs, mask, H, Wf,
        sx_n, sx_c, sx_d, sx_h, sx_w, sm_n, sm_c, sm_d, sm_h, sm_w, se_n, se_c, se_d, se_h, se_w,
        FM_FORM, NUM_BANDS, SPATIAL_CONTIG,
    )  # fmt: skip

    phi = tl.sqrt(re * re + im * im)
    g = 1.0 + alpha * (fm - 1.0)
    ob = _row(n, c, so_n, so_c)
    oo = _bin_offsets(offs, Wf, H, so_d, so_h, so_w, 2, SPATIAL_CONTIG)
    _store_complex(out_ptr, ob, oo, mask, re * g + beta * fe * phi, im * g)


@triton.jit
def modulation_bwd_kernel(
    gy_ptr, x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr,
    gx_ptr, gfe_ptr, gfm_ptr, part_ptr,
    C, H, Wf, S, nblk,
    sg_n, sg_c, sg_d, sg_h, sg_w,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sm_n, sm_c, sm_d, sm_h, sm_w,
    se_n, se_c, se_d, se_h, se_w,
    sgx_n, sgx_c, sgx_d, sgx_h, sgx_w,
    sge_n, sge_c, sge_d, sge_h, sge_w,
    sgm_n, sgm_c, sgm_d, sgm_h, sgm_w,
    FM_FORM: tl.constexpr, NUM_BANDS: tl.constexpr, NUM_PARTIALS: tl.constexpr, SPATIAL_CONTIG: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """Element-wise gradients of Eq. 2 for one block of one row, plus the block's partial sums.

    Partial sums, written at ``part_ptr + pid * K`` with ``K = NUM_PARTIALS`` (``B + 1`` banded, else 2):
    per-channel ``[sum s, sum gR f_e phi]``; full ``[sum (f_m - 1) s, sum gR f_e phi]``; banded
    ``[sum_{band 0} s, ..., sum_{band B-1} s, sum gR f_e phi]``, with ``s = gR R + gI I``.
    """
    pid, n, c, offs, mask = _program_block(C, S, nblk, BLOCK)

    gb = _row(n, c, sg_n, sg_c)
    gr, gi = _load_complex(gy_ptr, gb, _bin_offsets(offs, Wf, H, sg_d, sg_h, sg_w, 2, SPATIAL_CONTIG), mask)
    re, im, fe, fm, band, alpha, beta = _modulation_inputs(
        x_ptr, fm_ptr, fe_ptr, alpha_ptr, beta_ptr, band_ptr, n, c, offs, mask, H, Wf,
        sx_n, sx_c, sx_d, sx_h, sx_w, sm_n, sm_c, sm_d, sm_h, sm_w, se_n, se_c, se_d, se_h, se_w,
        FM_FORM, NUM_BANDS, SPATIAL_CONTIG,
    )  # fmt: skip

    phi = tl.sqrt(re * re + im * im)
    inv = tl.where(phi > 0.0, 1.0 / tl.where(phi > 0.0, phi, 1.0), 0.0)
    g = 1.0 + alpha * (fm - 1.0)
    t = gr * beta * fe * inv
    gxb = _row(n, c, sgx_n, sgx_c)
    gxo = _bin_offsets(offs, Wf, H, sgx_d, sgx_h, sgx_w, 2, SPATIAL_CONTIG)
    _store_complex(gx_ptr, gxb, gxo, mask, gr * g + t * re, gi * g + t * im)
    geb = _row(n, c, sge_n, sge_c)
    geo = _bin_offsets(offs, Wf, H, sge_d, sge_h, sge_w, 1, SPATIAL_CONTIG)
    tl.store(gfe_ptr + geb + geo, gr * beta * phi, mask=mask)

    s = gr * re + gi * im  # 0 on masked lanes (loads return 0 there)
    part = part_ptr + pid.to(tl.int64) * NUM_PARTIALS
    if FM_FORM == 0:
        tl.store(part, tl.sum(s, axis=0))
    elif FM_FORM == 1:
        gmb = _row(n, c, sgm_n, sgm_c)
        gmo = _bin_offsets(offs, Wf, H, sgm_d, sgm_h, sgm_w, 1, SPATIAL_CONTIG)
        tl.store(gfm_ptr + gmb + gmo, alpha * s, mask=mask)
        tl.store(part, tl.sum((fm - 1.0) * s, axis=0))
    else:
        for b in tl.static_range(NUM_BANDS):
            tl.store(part + b, tl.sum(tl.where(band == b, s, 0.0), axis=0))
    tl.store(part + (NUM_PARTIALS - 1), tl.sum(gr * fe * phi, axis=0))


@triton.jit
def features_fwd_kernel(
    x_ptr, out_ptr,
    C, H, Wf, S, nblk,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    SPATIAL_CONTIG: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``out[n, c] = R``, ``out[n, C + c] = I``, ``out[n, 2C + c] = |X|``; ``out`` contiguous."""
    pid, n, c, offs, mask = _program_block(C, S, nblk, BLOCK)
    xb = _row(n, c, sx_n, sx_c)
    re, im = _load_complex(x_ptr, xb, _bin_offsets(offs, Wf, H, sx_d, sx_h, sx_w, 2, SPATIAL_CONTIG), mask)
    ob = out_ptr + (n.to(tl.int64) * 3 * C + c) * S + offs
    tl.store(ob, re, mask=mask)
    tl.store(ob + C * S, im, mask=mask)
    tl.store(ob + 2 * C * S, tl.sqrt(re * re + im * im), mask=mask)


@triton.jit
def features_bwd_kernel(
    g_ptr, x_ptr, gx_ptr,
    C, H, Wf, S, nblk,
    sg_n, sg_c, sg_d, sg_h, sg_w,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sgx_n, sgx_c, sgx_d, sgx_h, sgx_w,
    SPATIAL_CONTIG: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``dX = (g_R + g_phi R / phi) + i (g_I + g_phi I / phi)`` (0 / 0 := 0)."""
    pid, n, c, offs, mask = _program_block(C, S, nblk, BLOCK)
    xb = _row(n, c, sx_n, sx_c)
    re, im = _load_complex(x_ptr, xb, _bin_offsets(offs, Wf, H, sx_d, sx_h, sx_w, 2, SPATIAL_CONTIG), mask)
    gb = g_ptr + _row(n, c, sg_n, sg_c) + _bin_offsets(offs, Wf, H, sg_d, sg_h, sg_w, 1, SPATIAL_CONTIG)
    g_re = tl.load(gb, mask=mask, other=0.0).to(tl.float32)
    g_im = tl.load(gb + C * sg_c, mask=mask, other=0.0).to(tl.float32)
    g_phi = tl.load(gb + 2 * C * sg_c, mask=mask, other=0.0).to(tl.float32)
    phi = tl.sqrt(re * re + im * im)
    q = tl.where(phi > 0.0, g_phi / tl.where(phi > 0.0, phi, 1.0), 0.0)
    gxb = _row(n, c, sgx_n, sgx_c)
    gxo = _bin_offsets(offs, Wf, H, sgx_d, sgx_h, sgx_w, 2, SPATIAL_CONTIG)
    _store_complex(gx_ptr, gxb, gxo, mask, g_re + q * re, g_im + q * im)
