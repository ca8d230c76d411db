"""SAMB: identity at init, frequency selectivity, sizes/dtypes/layouts, compile, equality with the reference path."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spectral3d.layers.samb import SAMB, band_index
from spectral3d.ops import use_kernels

MODES = ("band", "channel", "spectral")


def perturb(module: torch.nn.Module, scale: float = 0.5, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("fm_mode", MODES)
@given(D=st.integers(1, 17), H=st.integers(1, 17), W=st.integers(1, 17), N=st.integers(1, 2))
def test_identity_at_init(fm_mode, D, H, W, N):
    x = torch.randn(N, 4, D, H, W)
    torch.testing.assert_close(SAMB(4, fm_mode=fm_mode)(x), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fm_mode", MODES)
@given(D=st.integers(1, 17), H=st.integers(1, 17), W=st.integers(1, 17))
def test_shapes_and_gradients_any_size(fm_mode, D, H, W):
    m = SAMB(4, fm_mode=fm_mode, num_bands=4)
    perturb(m)
    x = torch.randn(2, 4, D, H, W, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    y.square().sum().backward()
    assert x.grad.isfinite().all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.isfinite().all(), name


@pytest.mark.parametrize("fm_mode", MODES)
def test_channels_last_float64_and_autocast(fm_mode):
    m = SAMB(8, fm_mode=fm_mode)
    perturb(m)
    x = torch.randn(2, 8, 6, 7, 5)
    y = m(x)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last_3d)), y, rtol=1e-5, atol=1e-5)

    m64 = SAMB(8, fm_mode=fm_mode).double()
    m64.load_state_dict(m.state_dict())
    y64 = m64(x.double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), y, rtol=1e-4, atol=1e-4)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        yb = m(x.bfloat16())
        yf = m(x)
    assert yb.dtype == torch.bfloat16 and yf.dtype == torch.float32
    assert yb.isfinite().all() and yf.isfinite().all()
    assert (yf - y).abs().max() < 0.1 * y.abs().max()  # bf16 convs, float32 FFT and Eq. 2


@pytest.mark.parametrize("fm_mode", MODES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_module(fm_mode, dtype):
    """``SAMB(8).to(bf16/fp16)``: spectrum and Eq. 2 in float32, result and gradients in the module's dtype,
    values as the float32 module gives on the same (rounded) input and weights."""
    m = SAMB(8, fm_mode=fm_mode)
    perturb(m, scale=0.2)
    half = SAMB(8, fm_mode=fm_mode).to(dtype)
    half.load_state_dict(m.state_dict())
    m.load_state_dict(half.state_dict())  # the float32 reference uses the same rounded weights
    x = torch.randn(2, 8, 6, 7, 5).to(dtype).requires_grad_(True)
    y = half(x)
    assert y.dtype == dtype
    y.float().square().sum().backward()
    assert x.grad.dtype == dtype and all(p.grad.dtype == dtype for p in half.parameters())
    reference = m(x.detach().float())
    assert (y.float() - reference).abs().max() < 0.05 * reference.abs().max()


def _two_cosines(size: int = 16, k1: int = 1, k2: int = 5, channels: int = 4):
    """Two unit cosines on different axes at radial frequencies k1/size and k2/size."""
    n = torch.arange(size, dtype=torch.float64)
    c1 = torch.cos(2 * math.pi * k1 * n / size).view(size, 1, 1).expand(size, size, size)
    c2 = torch.cos(2 * math.pi * k2 * n / size).view(1, size, 1).expand(size, size, size)
    x = (c1 + c2).expand(1, channels, size, size, size).contiguous()
    return x, c1, c2


@pytest.mark.parametrize("fm_mode", ["band", "channel"])
def test_frequency_selectivity(fm_mode):
    """Band mode gains differ between two radial bands; channel mode gains (beta = 0) are equal."""
    x, c1, c2 = _two_cosines()
    bands = band_index((16, 16, 16), 8)
    assert bands[1, 0, 0] != bands[0, 5, 0]  # the two cosines fall in different bands
    m = SAMB(4, fm_mode=fm_mode, num_bands=8).double()
    perturb(m)
    with torch.no_grad():
        m.beta.zero_()
        y = m(x)[0]
    g1 = (y * c1).sum(dim=(1, 2, 3)) / c1.square().sum()
    g2 = (y * c2).sum(dim=(1, 2, 3)) / c2.square().sum()
    # with beta = 0, SAMB is a linear filter: each cosine comes out scaled by its gain
    torch.testing.assert_close(y, g1.view(-1, 1, 1, 1) * c1 + g2.view(-1, 1, 1, 1) * c2)
    assert (g1 - 1).abs().max() > 1e-3  # it does modulate
    if fm_mode == "band":
        assert (g1 - g2).abs().max() > 1e-2
    else:
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fm_mode", MODES)
def test_ops_equal_reference_path(fm_mode):
    m = SAMB(4, fm_mode=fm_mode, num_bands=5, enh_kernel_size=3).double()
    perturb(m, scale=0.3)
    x = torch.randn(2, 4, 5, 6, 7, dtype=torch.float64, requires_grad=True)

    def run():
        m.zero_grad()
        x.grad = None
        y = m(x)
        y.backward(torch.randn_like(y, generator=torch.Generator().manual_seed(3)))
        return [y.detach(), x.grad.clone()] + [p.grad.clone() for p in m.parameters()]

    ops = run()
    with use_kernels("autograd", ops={"spectral_modulation", "spectral_features"}):
        ref = run()
    for a, b in zip(ops, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    m = SAMB(4, fm_mode="band", num_bands=4)
    perturb(m, scale=0.3)
    x = torch.randn(2, 4, 5, 6, 7, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")  # raises on a graph break
    y_c = compiled(x)
    (gx_c,) = torch.autograd.grad(y_c.square().sum(), x)
    y_e = m(x)
    (gx_e,) = torch.autograd.grad(y_e.square().sum(), x)
    torch.testing.assert_close(y_c, y_e)
    torch.testing.assert_close(gx_c, gx_e)


def test_band_index_properties():
    idx = band_index((9, 8, 10), 6)
    assert idx.shape == (9, 8, 6) and idx.dtype == torch.int64
    assert idx.min() == 0 and idx.max() == 5 and idx[0, 0, 0] == 0
    # bands depend on |k| only: the bin of (+k_d, +k_h) and of (-k_d, -k_h) agree
    torch.testing.assert_close(idx[1:, 1:], idx[1:, 1:].flip(0, 1))
    # band(rho) = floor(B rho / rho_max) at a few bins
    for d, h, w in [(1, 0, 0), (0, 3, 2), (4, 4, 5), (5, 7, 1)]:
        kd, kh = (d if d <= 4 else d - 9) / 9, (h if h < 4 else h - 8) / 8
        rho = math.sqrt(kd * kd + kh * kh + (w / 10) ** 2)
        assert idx[d, h, w] == min(5, math.floor(6 * rho / (math.sqrt(3) / 2)))
    assert band_index(5, 1).eq(0).all()
    with pytest.raises(ValueError, match="num_bands: expected an int >= 1, got 0"):
        band_index(4, 0)
    with pytest.raises(ValueError, match="size: expected a positive size on axis H, got 0"):
        band_index((4, 0, 4), 2)


def test_band_index_cached_as_int32_nonpersistent_buffer():
    m = SAMB(4, num_bands=5)
    keys = set(m.state_dict())
    m(torch.randn(1, 4, 6, 5, 8))
    first = m._bands
    assert first.dtype == torch.int32 and torch.equal(first, band_index((6, 5, 8), 5).int())
    m(torch.randn(2, 4, 6, 5, 8))
    assert m._bands is first, "same size: the cached index is reused"
    m(torch.randn(1, 4, 6, 5, 9))  # same half-spectrum shape (6, 5, 5), other W: other bands
    assert torch.equal(m._bands, band_index((6, 5, 9), 5).int())
    assert set(m.state_dict()) == keys
    m.load_state_dict(SAMB(4, num_bands=5).state_dict())  # strict: nothing new to load


def test_module_api():
    m = SAMB(8, fm_mode="spectral", num_bands=3, enh_kernel_size=3, mod_reduction=2)
    assert "fm_mode='spectral'" in repr(m) and "num_bands=3" in repr(m) and "mod_hidden=4" in repr(m)
    m(torch.randn(1, 8, 4, 4, 4))
    assert not any("band_index" in k for k in m.state_dict())
    assert m.band_embed.shape == (3, 8) and m.alpha.shape == m.beta.shape == (8,)
    x = torch.randn(1, 8, 4, 4, 4)
    perturb(m)
    m.reset_parameters()
    torch.testing.assert_close(m(x), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"dim": 0}, ValueError, "dim: expected an int >= 1, got 0"),
        ({"dim": 4, "fm_mode": "pixel"}, ValueError, r"fm_mode: expected one of \('band', 'channel', 'spectral'\)"),
        ({"dim": 4, "num_bands": 0}, ValueError, "num_bands: expected an int >= 1"),
        ({"dim": 4, "enh_kernel_size": 2}, ValueError, "enh_kernel_size: expected an odd int"),
        ({"dim": 4, "mod_reduction": 0}, ValueError, "mod_reduction: expected an int >= 1"),
    ],
)
def test_bad_constructor_args(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SAMB(**kwargs)


def test_bad_input():
    m = SAMB(4)
    with pytest.raises(ValueError, match=r"x: expected a 5-D tensor \(N, C, D, H, W\), got shape \(4, 5, 5, 5\)"):
        m(torch.randn(4, 5, 5, 5))
    with pytest.raises(ValueError, match=r"x: expected 4 channels on axis 1, got 3"):
        m(torch.randn(1, 3, 5, 5, 5))
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        m([1.0])


@pytest.mark.parametrize("fm_mode", MODES)
def test_without_band_embedding_equals_a_zero_embedding(fm_mode):
    """``band_embedding=False`` (the paper's form) has no ``band_embed`` and computes SAMB with ``E = 0``."""
    plain = SAMB(6, fm_mode=fm_mode, band_embedding=False)
    assert "band_embed" not in plain.state_dict() and "band_embedding=False" in repr(plain)
    perturb(plain)
    full = SAMB(6, fm_mode=fm_mode)
    state = dict(plain.state_dict(), band_embed=torch.zeros(8, 6))
    full.load_state_dict(state)
    x = torch.randn(2, 6, 5, 6, 7)
    torch.testing.assert_close(plain(x), full(x))
    with torch.no_grad():
        full.band_embed.normal_()
    assert not torch.allclose(plain(x), full(x), atol=1e-4)


def test_channel_mode_without_band_embedding_has_no_band_structure():
    """``fm_mode="channel", band_embedding=False`` (the paper's simplest reading): no parameter depends on
    the number of bands, and the output does not either (the radial band index is never used)."""
    few, many = (SAMB(6, fm_mode="channel", num_bands=b, band_embedding=False) for b in (2, 16))
    assert {n: p.shape for n, p in few.named_parameters()} == {n: p.shape for n, p in many.named_parameters()}
    assert "band_embed" not in dict(many.named_parameters()) and many.mod_fc2.out_channels == 6  # one gain per channel
    perturb(few)
    many.load_state_dict(few.state_dict())
    x = torch.randn(2, 6, 7, 5, 6)
    torch.testing.assert_close(few(x), many(x))
    assert not torch.allclose(few(x), x, atol=1e-3)  # perturbed: not the identity
