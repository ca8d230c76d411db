"""Numerics of the Triton kernels through Triton's CPU interpreter (run by test_triton_interpreter.py).

Run in its own process with ``TRITON_INTERPRET=1`` and ``SPECTRAL3D_KERNEL=triton`` in the
environment (the interpreter flag must be set before the kernels are defined). Every output the
launchers allocate is poisoned with NaN first, so a bin or partial sum the kernels forget to write
shows up as NaN; every result is compared with a float64 evaluation of the reference ops.
Exit status 0 means every check passed.
"""

from __future__ import annotations

import os
import sys
import time

import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from spectral3d.layers import samb as samb_module
from spectral3d.layers.samb import SAMB
from spectral3d.ops import (
    spectral_features,
    spectral_features_reference,
    spectral_modulation,
    spectral_modulation_reference,
)
from spectral3d.ops._triton import launchers
from spectral3d.ops.spectral_modulation import _path

RTOL = 1e-5
EXAMPLES = int(os.environ.get("SPECTRAL3D_INTERPRETER_EXAMPLES", "10"))
# no shrinking: a failure is reported at once (shrinking through the interpreter takes minutes)
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=(Phase.explicit, Phase.generate)
)
CALLS: dict[str, int] = {}


def _poisoned_empty_like(t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, complex(float("nan"), float("nan")) if t.is_complex() else float("nan"))


def _poisoned_empty(shape, dtype, device):  # noqa: ANN001, ANN202
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def _counting(name: str, fn):  # noqa: ANN001, ANN202
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        CALLS[name] = CALLS.get(name, 0) + 1
        return fn(*args, **kwargs)

    return wrapper


launchers._empty_like = _poisoned_empty_like
launchers._empty = _poisoned_empty
for _name in launchers.__all__:
    setattr(launchers, _name, _counting(_name, getattr(launchers, _name)))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error of ``a`` against the float64 ``b`` (NaN if ``a`` holds NaN)."""
    a = a.detach().to(b.dtype)
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def assert_close(name: str, a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> None:
    assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    err = rel_err(a, b)
    assert torch.isfinite(a).all(), f"{name}: non-finite values (an output was not fully written)"
    assert err <= rtol, f"{name}: relative error {err:.3g} > {rtol:g}"


def make_inputs(form: str, N: int, C: int, D: int, H: int, W: int, B: int, layout: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    Wf = W // 2 + 1
    X = torch.randn(N, C, D, H, Wf, dtype=torch.complex64, generator=g)
    f_e = torch.randn(N, C, D, H, Wf, generator=g)
    fm_shape = {"channel": (N, C, 1, 1, 1), "full": (N, C, D, H, Wf), "band": (N, C, B)}[form]
    f_m = 2 * torch.rand(fm_shape, generator=g)
    alpha, beta = torch.randn(C, generator=g), torch.randn(C, generator=g)
    band = torch.randint(0, B, (D, H, Wf), generator=g) if form == "band" else None
    if layout == "channels_last":
        X = X.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
        f_e = f_e.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    elif layout == "sliced":  # every spatial axis strided: views into larger tensors
        X = torch.randn(N, C, D + 1, H, Wf + 2, dtype=torch.complex64, generator=g)[:, :, 1:, :, 1:-1]
        f_e = torch.randn(N, C, D, H, 2 * Wf, generator=g)[..., ::2]
        if form == "full":
            f_m = 2 * torch.rand(N, C, D, H + 2, Wf, generator=g)[:, :, :, 1:-1]
    return X, f_m, f_e, alpha, beta, band


def reference_grads(X, f_m, f_e, alpha, beta, band, grad):  # noqa: ANN001, ANN201
    leaves = [X.detach().to(torch.complex128)] + [t.detach().double() for t in (f_m, f_e, alpha, beta)]
    for t in leaves:
        t.requires_grad_()
    out = spectral_modulation_reference(*leaves, band)
    grads = torch.autograd.grad(out, leaves, grad.to(torch.complex128))
    return out.detach(), grads


@SETTINGS
@given(
    form=st.sampled_from(["channel", "full", "band"]),
    N=st.integers(1, 2),
    C=st.integers(1, 2),
    D=st.integers(1, 7),
    H=st.integers(1, 7),
    W=st.integers(1, 9),
    B=st.integers(1, 16),
    block=st.sampled_from([16, 32, 1024]),
    layout=st.sampled_from(["contiguous", "channels_last", "sliced"]),
    seed=st.integers(0, 2**16),
)
def check_modulation_launchers(form, N, C, D, H, W, B, block, layout, seed):  # noqa: ANN001
    """Forward and all five gradients vs float64, over odd sizes, many blocks per row, all forms."""
    X, f_m, f_e, alpha, beta, band = make_inputs(form, N, C, D, H, W, B, layout, seed)
    grad = torch.randn(X.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed + 1))
    ref_out, ref_grads = reference_grads(X, f_m, f_e, alpha, beta, band, grad)
    out = launchers.modulation_forward(X, f_m, f_e, alpha, beta, band, wrap=False, block=block)
    assert_close(f"forward[{form}]", out, ref_out)
    first = launchers.modulation_backward(grad, X, f_m, f_e, alpha, beta, band, wrap=False, block=block)
    second = launchers.modulation_backward(grad, X, f_m, f_e, alpha, beta, band, wrap=False, block=block)
    for name, a, again, ref in zip(("X", "f_m", "f_e", "alpha", "beta"), first, second, ref_grads):
        assert a.dtype == (torch.complex64 if name == "X" else torch.float32), f"grad {name}: dtype {a.dtype}"
        assert_close(f"grad {name}[{form}, {layout}, block={block}]", a, ref)
        assert torch.equal(a, again), f"grad {name}[{form}]: two runs on the same inputs differ"


@SETTINGS
@given(
    N=st.integers(1, 2),
    C=st.integers(1, 3),
    D=st.integers(1, 7),
    H=st.integers(1, 7),
    W=st.integers(1, 9),
    block=st.sampled_from([16, 1024]),
    layout=st.sampled_from(["contiguous", "channels_last", "sliced"]),
)
def check_features_launchers(N, C, D, H, W, block, layout):  # noqa: ANN001
    X = make_inputs("channel", N, C, D, H, W, 1, layout, seed=N + 10 * C)[0]
    X[..., 0, 0, 0] = 0  # a zero-magnitude bin: gradient of |X| taken as 0
    X64 = X.to(torch.complex128).requires_grad_()
    ref = spectral_features_reference(X64)
    grad = torch.randn(ref.shape, dtype=torch.float32)
    (ref_grad,) = torch.autograd.grad(ref, X64, grad.double())
    assert_close("features forward", launchers.features_forward(X, wrap=False, block=block), ref.detach())
    assert_close("features backward", launchers.features_backward(grad, X, wrap=False, block=block), ref_grad)


def check_public_ops_route_to_kernels() -> None:
    """Through ``spectral_modulation`` / ``spectral_features`` and autograd, default block size."""
    assert _path(torch.zeros(1, 1, 1, 1, 1, dtype=torch.complex64)) == "interpret"
    before = dict(CALLS)
    for form, B in (("channel", 1), ("full", 1), ("band", 16)):
        X, f_m, f_e, alpha, beta, band = make_inputs(form, 1, 1, 5, 7, 9, B, "contiguous", seed=3)  # N*C = 1
        grad = torch.randn(X.shape, dtype=torch.complex64)
        ref_out, ref_grads = reference_grads(X, f_m, f_e, alpha, beta, band, grad)
        leaves = [t.clone().requires_grad_() for t in (X, f_m, f_e, alpha, beta)]
        out = spectral_modulation(*leaves, band)
        assert_close(f"op forward[{form}]", out, ref_out)
        for name, a, ref in zip("X f_m f_e alpha beta".split(), torch.autograd.grad(out, leaves, grad), ref_grads):
            assert_close(f"op grad {name}[{form}]", a, ref)
    X = leaves[0].detach().requires_grad_()
    f = spectral_features(X)
    f.backward(torch.randn_like(f))
    assert CALLS["modulation_forward"] - before.get("modulation_forward", 0) == 3
    assert CALLS["modulation_backward"] - before.get("modulation_backward", 0) == 3
    assert CALLS["features_forward"] - before.get("features_forward", 0) == 1
    assert CALLS["features_backward"] - before.get("features_backward", 0) == 1


def check_half_precision_gains() -> None:
    """bf16 / fp16 ``f_m`` and ``f_e`` (autocast outputs) are computed in float32."""
    for dtype in (torch.bfloat16, torch.float16):
        X, f_m, f_e, alpha, beta, band = make_inputs("band", 2, 2, 3, 5, 6, 4, "contiguous", seed=5)
        f_m, f_e = f_m.to(dtype), f_e.to(dtype)
        grad = torch.randn(X.shape, dtype=torch.complex64)
        ref_out, ref_grads = reference_grads(X, f_m, f_e, alpha, beta, band, grad)
        assert_close("half forward", launchers.modulation_forward(X, f_m, f_e, alpha, beta, band, wrap=False), ref_out)
        grads = launchers.modulation_backward(grad, X, f_m, f_e, alpha, beta, band, wrap=False)
        assert grads[1].dtype == grads[2].dtype == dtype, "gradients of f_m, f_e come back in their dtype"
        for name, a, ref in zip("X f_m f_e alpha beta".split(), grads, ref_grads):
            assert_close(f"half grad {name}", a, ref, rtol=1e-2 if name in ("f_m", "f_e") else RTOL)


def check_samb_kernels_equal_reference_path() -> None:
    for fm_mode in ("band", "channel", "spectral"):
        m = SAMB(4, fm_mode=fm_mode, num_bands=5)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
        x = torch.randn(1, 4, 5, 6, 7)

        def run(m=m, x=x):  # noqa: ANN001, ANN202
            m.zero_grad()
            xg = x.clone().requires_grad_()
            y = m(xg)
            y.backward(torch.ones_like(y) + torch.arange(y.numel()).view_as(y) % 3)
            return [y.detach(), xg.grad] + [p.grad for p in m.parameters()]

        before = CALLS.get("modulation_forward", 0)
        kernel = run()
        assert CALLS["modulation_forward"] == before + 1
        saved = samb_module.spectral_modulation, samb_module.spectral_features
        samb_module.spectral_modulation, samb_module.spectral_features = (
            spectral_modulation_reference,
            spectral_features_reference,
        )
        try:
            reference = run()
        finally:
            samb_module.spectral_modulation, samb_module.spectral_features = saved
        names = ["y", "x"] + [n for n, _ in m.named_parameters()]
        for name, a, b in zip(names, kernel, reference):
            assert_close(f"SAMB[{fm_mode}] {name}", a, b.double(), rtol=1e-4)


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") != "1" or os.environ.get("SPECTRAL3D_KERNEL") != "triton":
        print("run with TRITON_INTERPRET=1 SPECTRAL3D_KERNEL=triton", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    checks = [
        check_modulation_launchers,
        check_features_launchers,
        check_public_ops_route_to_kernels,
        check_half_precision_gains,
        check_samb_kernels_equal_reference_path,
    ]
    for check in checks:
        start = time.perf_counter()
        check()
        print(f"ok {check.__name__} ({time.perf_counter() - start:.1f} s)", flush=True)
    print(f"launcher calls: {CALLS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
