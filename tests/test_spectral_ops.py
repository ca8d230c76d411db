"""The spectral ops: Eq. 2 and ``[R, I, |X|]`` against float64 evaluations, gradients, op checks, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from spectral3d.ops import (
    spectral_features,
    spectral_features_reference,
    spectral_modulation,
    spectral_modulation_reference,
)
from spectral3d.ops.spectral_modulation import MODULATION_BACKWARD_FLOPS_PER_ELEMENT, MODULATION_FLOPS_PER_ELEMENT

FORMS = ("channel", "full", "band")


def make_inputs(form, N=2, C=3, D=4, H=5, Wf=3, B=5, dtype=torch.float64, requires_grad=False, seed=0):
    """Random inputs of Eq. 2 (never zeros) for one ``f_m`` form."""
    g = torch.Generator().manual_seed(seed)
    cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
    X = torch.randn(N, C, D, H, Wf, dtype=cdt, generator=g)
    fm_shape = {"channel": (N, C, 1, 1, 1), "full": (N, C, D, H, Wf), "band": (N, C, B)}[form]
    f_m = 2 * torch.rand(fm_shape, dtype=dtype, generator=g)
    f_e = torch.randn(N, C, D, H, Wf, dtype=dtype, generator=g)
    alpha = torch.randn(C, dtype=dtype, generator=g)
    beta = torch.randn(C, dtype=dtype, generator=g)
    band = torch.randint(0, B, (D, H, Wf), generator=g) if form == "band" else None
    if form == "band":
        band.view(-1)[:B] = torch.arange(B)  # every band is populated
    tensors = [X, f_m, f_e, alpha, beta]
    if requires_grad:
        for t in tensors:
            t.requires_grad_()
    return (*tensors, band)


def eq2_numpy(X, f_m, f_e, alpha, beta, band):
    """Eq. 2 evaluated independently in float64 numpy."""
    X, f_e = X.detach().cpu().numpy().astype(np.complex128), f_e.detach().double().numpy()
    f_m = f_m.detach().double().numpy()
    a = alpha.detach().double().numpy()[None, :, None, None, None]
    b = beta.detach().double().numpy()[None, :, None, None, None]
    if band is not None:
        f_m = f_m[:, :, band.numpy()]
    g = 1 + a * (f_m - 1)
    return (X.real * g + b * f_e * np.abs(X)) + 1j * (X.imag * g)


@pytest.mark.parametrize("form", FORMS)
@given(D=st.integers(1, 17), H=st.integers(1, 17), W=st.integers(1, 17), B=st.integers(1, 16))
def test_modulation_matches_float64_eq2(form, D, H, W, B):
    X, f_m, f_e, alpha, beta, band = make_inputs(form, N=1, C=2, D=D, H=H, Wf=W // 2 + 1, B=B, dtype=torch.float32)
    if band is not None:
        band = torch.randint(0, B, band.shape)
    out = spectral_modulation(X, f_m, f_e, alpha, beta, band)
    assert out.dtype == torch.complex64 and out.shape == X.shape
    expected = eq2_numpy(X, f_m, f_e, alpha, beta, band)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_float64_all_inputs(form):
    inputs = make_inputs(form, N=2, C=2, D=3, H=2, Wf=3, B=3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: spectral_modulation(*t, inputs[-1]), inputs[:5])


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_explicit_backward_matches_autograd_reference(form, dtype):
    inputs = make_inputs(form, dtype=dtype, requires_grad=True)
    g = torch.randn(inputs[0].shape, dtype=inputs[0].dtype)
    grads_op = torch.autograd.grad(spectral_modulation(*inputs), inputs[:5], g)
    grads_ref = torch.autograd.grad(spectral_modulation_reference(*inputs), inputs[:5], g)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for name, a, b, t in zip(("X", "f_m", "f_e", "alpha", "beta"), grads_op, grads_ref, inputs):
        assert a.shape == t.shape and a.dtype == t.dtype, name
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=name)


def test_zero_magnitude_bins_have_finite_gradients():
    X, f_m, f_e, alpha, beta, _ = make_inputs("full", requires_grad=False)
    X[:, :, 0] = 0
    X.requires_grad_()
    g = torch.randn(X.shape, dtype=X.dtype)
    (gX,) = torch.autograd.grad(spectral_modulation(X, f_m, f_e, alpha, beta), X, g)
    assert gX.isfinite().all()
    gain = 1 + alpha.view(1, -1, 1, 1, 1) * (f_m - 1)
    # at phi = 0 the beta-term contributes nothing (dphi/dX := 0): the gradient is the gain times g
    torch.testing.assert_close(gX[:, :, 0], (g * gain)[:, :, 0])


def test_half_precision_gains_are_upcast_and_gradients_keep_dtype():
    X, f_m, f_e, alpha, beta, band = make_inputs("band", dtype=torch.float32)
    f_m16, f_e16 = f_m.bfloat16().requires_grad_(), f_e.bfloat16().requires_grad_()
    out = spectral_modulation(X, f_m16, f_e16, alpha, beta, band)
    ref = spectral_modulation_reference(X, f_m16.float(), f_e16.float(), alpha, beta, band)
    torch.testing.assert_close(out, ref)
    gm, ge = torch.autograd.grad(out.abs().sum(), (f_m16, f_e16))
    assert gm.dtype == ge.dtype == torch.bfloat16 and gm.shape == f_m.shape


def test_band_gradient_is_segmented_sum_of_full_gradient():
    X, f_m, f_e, alpha, beta, band = make_inputs("band", requires_grad=True)
    g = torch.randn(X.shape, dtype=X.dtype)
    (g_band,) = torch.autograd.grad(spectral_modulation(X, f_m, f_e, alpha, beta, band), f_m, g)
    f_full = f_m.detach()[:, :, band].requires_grad_()
    (g_full,) = torch.autograd.grad(spectral_modulation(X, f_full, f_e, alpha, beta), f_full, g)
    expected = torch.stack([g_full[:, :, band == b].sum(-1) for b in range(f_m.shape[2])], dim=-1)
    torch.testing.assert_close(g_band, expected)


@given(D=st.integers(1, 17), H=st.integers(1, 17), W=st.integers(1, 17))
def test_features_match_definition_and_gradcheck(D, H, W):
    X = torch.randn(1, 2, D, H, W // 2 + 1, dtype=torch.complex64)
    out = spectral_features(X)
    assert out.shape == (1, 6, D, H, W // 2 + 1) and out.dtype == torch.float32
    x64 = X.numpy().astype(np.complex128)
    np.testing.assert_allclose(out.numpy(), np.concatenate([x64.real, x64.imag, np.abs(x64)], 1), rtol=1e-6)


def test_features_gradients():
    X = torch.randn(2, 3, 3, 4, 3, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(spectral_features, (X,))
    g = torch.randn(2, 9, 3, 4, 3, dtype=torch.float64)
    (a,) = torch.autograd.grad(spectral_features(X), X, g)
    (b,) = torch.autograd.grad(spectral_features_reference(X), X, g)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("form", FORMS)
def test_opcheck_modulation(form):
    args = make_inputs(form, dtype=torch.float32, requires_grad=True)
    torch.library.opcheck(torch.ops.spectral3d.spectral_modulation.default, args)
    grad = torch.randn(args[0].shape, dtype=args[0].dtype)
    plain = [t.detach() if t is not None else None for t in args]
    torch.library.opcheck(
        torch.ops.spectral3d.spectral_modulation_backward.default,
        (grad, *plain),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


def test_registered_op_without_band_index():
    """``torch.ops.spectral3d.spectral_modulation(X, f_m, f_e, alpha, beta)``: band_index defaults to None."""
    X, f_m, f_e, alpha, beta, _ = make_inputs("channel", requires_grad=True)
    out = torch.ops.spectral3d.spectral_modulation(X, f_m, f_e, alpha, beta)
    np.testing.assert_allclose(out.detach().numpy(), eq2_numpy(X, f_m, f_e, alpha, beta, None), rtol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: torch.ops.spectral3d.spectral_modulation(*t), (X, f_m, f_e, alpha, beta))
    torch.library.opcheck(torch.ops.spectral3d.spectral_modulation.default, (X, f_m, f_e, alpha, beta))


def test_opcheck_features():
    X = torch.randn(2, 3, 4, 3, 2, dtype=torch.complex64, requires_grad=True)
    torch.library.opcheck(torch.ops.spectral3d.spectral_features.default, (X,))
    g = torch.randn(2, 9, 4, 3, 2)
    torch.library.opcheck(torch.ops.spectral3d.spectral_features_backward.default, (g, X.detach()))


def test_flop_counter_sees_the_ops():
    inputs = make_inputs("channel", dtype=torch.float32, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        spectral_modulation(*inputs).abs().sum().backward()
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    n = inputs[0].numel()
    assert counts["spectral3d.spectral_modulation"] == MODULATION_FLOPS_PER_ELEMENT * n
    assert counts["spectral3d.spectral_modulation_backward"] == MODULATION_BACKWARD_FLOPS_PER_ELEMENT * n


def test_noncontiguous_inputs():
    X, f_m, f_e, alpha, beta, band = make_inputs("full", dtype=torch.float32)
    Xp = X.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)  # channels-last storage
    fe_t = f_e.transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(
        spectral_modulation(Xp, f_m, fe_t, alpha, beta), spectral_modulation(X, f_m, f_e, alpha, beta)
    )


def _bad(form="channel", **changes):
    X, f_m, f_e, alpha, beta, band = make_inputs(form, dtype=torch.float32)
    args = {"X": X, "f_m": f_m, "f_e": f_e, "alpha": alpha, "beta": beta, "band_index": band}
    args.update(changes)
    return args


BAD_CASES = [
    (TypeError, r"X: expected a complex64 or complex128.*got dtype torch.float32", _bad(X=torch.randn(2, 3, 4, 5, 3))),
    (ValueError, r"X: expected a 5-D spectrum.*\(2, 3, 4, 5\)", _bad(X=torch.randn(2, 3, 4, 5, dtype=torch.cfloat))),
    (TypeError, r"X: expected a torch.Tensor", _bad(X=[1.0])),
    (ValueError, r"f_m: expected shape \(N, C, 1, 1, 1\).*got \(2, 3, 4, 1\)", _bad(f_m=torch.rand(2, 3, 4, 1))),
    (ValueError, r"f_m: expected shape.*got \(2, 3, 4, 5, 2\)", _bad(f_m=torch.rand(2, 3, 4, 5, 2))),
    (ValueError, r"f_m: expected shape.*got \(1, 3, 5\)", _bad(f_m=torch.rand(1, 3, 5))),
    (
        TypeError,
        r"f_m: expected a real floating-point tensor, got dtype torch.int64",
        _bad(f_m=torch.ones(2, 3, 1, 1, 1).long()),
    ),
    (
        ValueError,
        r"band_index: a banded f_m of shape \(2, 3, 5\) needs band_index of shape \(4, 5, 3\)",
        _bad("band", band_index=None),
    ),
    (
        ValueError,
        r"band_index: expected values in \[0, 5\).*got values in \[5, 5\]",
        _bad("band", band_index=torch.full((4, 5, 3), 5)),
    ),
    (
        ValueError,
        r"band_index: expected values in \[0, 5\).*\[-1, ",
        _bad("band", band_index=torch.full((4, 5, 3), -1)),
    ),
    (
        ValueError,
        r"band_index: expected shape \(4, 5, 3\).*got \(4, 5, 2\)",
        _bad("band", band_index=torch.zeros(4, 5, 2).long()),
    ),
    (
        TypeError,
        r"band_index: expected an integer tensor, got dtype torch.float32",
        _bad("band", band_index=torch.zeros(4, 5, 3)),
    ),
    (ValueError, r"band_index: only used with a banded f_m", _bad(band_index=torch.zeros(4, 5, 3).long())),
    (ValueError, r"f_e: expected shape \(2, 3, 4, 5, 3\).*got \(2, 3, 4, 5, 2\)", _bad(f_e=torch.randn(2, 3, 4, 5, 2))),
    (
        TypeError,
        r"f_e: expected a real floating-point tensor, got dtype torch.complex64",
        _bad(f_e=torch.randn(2, 3, 4, 5, 3, dtype=torch.cfloat)),
    ),
    (ValueError, r"alpha: expected shape \(3,\).*got \(1,\)", _bad(alpha=torch.ones(1))),
    (ValueError, r"beta: expected shape \(3,\).*got \(3, 1\)", _bad(beta=torch.ones(3, 1))),
    (ValueError, r"alpha: expected shape \(3,\).*got \(\)", _bad(alpha=torch.tensor(1.0))),
    (
        ValueError,
        r"f_e: expected a tensor on X's device cpu, got meta",
        _bad(f_e=torch.randn(2, 3, 4, 5, 3, device="meta")),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("exc", "match", "args"), BAD_CASES)
def test_bad_input_modulation(exc, match, args):
    with pytest.raises(exc, match=match):
        spectral_modulation(**args)
    with pytest.raises(exc, match=match):
        spectral_modulation_reference(**args)


def test_bad_input_features():
    with pytest.raises(TypeError, match="X: expected a complex64 or complex128"):
        spectral_features(torch.randn(1, 2, 3, 3, 2))
    with pytest.raises(ValueError, match="X: expected a 5-D spectrum"):
        spectral_features(torch.randn(2, 3, 3, 2, dtype=torch.cfloat))


def test_nan_spectrum_rejected_only_when_enabled(monkeypatch):
    X, f_m, f_e, alpha, beta, _ = make_inputs("channel", dtype=torch.float32)
    X[0, 1, 2, 3, 1] = complex(float("nan"), 0.0)
    monkeypatch.delenv("SPECTRAL3D_CHECK_FINITE", raising=False)
    assert spectral_modulation(X, f_m, f_e, alpha, beta).isnan().any()
    monkeypatch.setenv("SPECTRAL3D_CHECK_FINITE", "1")
    with pytest.raises(ValueError, match="X: contains NaN or Inf"):
        spectral_modulation(X, f_m, f_e, alpha, beta)
    with pytest.raises(ValueError, match="X: contains NaN or Inf"):
        spectral_features(X)


def test_kernel_selection(monkeypatch):
    X, f_m, f_e, alpha, beta, _ = make_inputs("channel", dtype=torch.float32)
    monkeypatch.setenv("SPECTRAL3D_KERNEL", "fast")
    with pytest.raises(ValueError, match=r"SPECTRAL3D_KERNEL: expected a mode in \('auto', 'triton', 'reference'"):
        spectral_modulation(X, f_m, f_e, alpha, beta)
    monkeypatch.setenv("SPECTRAL3D_KERNEL", "spectral_modulation=triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="spectral_modulation: kernel mode 'triton' needs a CUDA tensor"):
        spectral_modulation(X, f_m, f_e, alpha, beta)
    spectral_features(X)  # the other ops stay on auto
    # complex128 always takes the PyTorch path
    X64, *rest = make_inputs("channel")
    assert spectral_modulation(X64, *rest[:4]).dtype == torch.complex128
    monkeypatch.setenv("SPECTRAL3D_KERNEL", "reference")
    torch.testing.assert_close(
        spectral_modulation(X, f_m, f_e, alpha, beta), spectral_modulation_reference(X, f_m, f_e, alpha, beta)
    )
