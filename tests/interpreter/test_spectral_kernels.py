"""The spectral kernels' numerics in Triton's interpreter: every output poisoned, float64 oracles.

Forward and all five gradients of Eq. 2 and the ``[R, I, |X|]`` features over hypothesis-drawn odd
sizes, many blocks per row and every ``f_m`` form and layout; bitwise-reproducible gradients and
self-resetting tickets of the backward's in-kernel finish; the host path counted (one launch per
direction, no other device kernel); the public ops and SAMB routed through the kernels.

The interpreter runs a launch's programs one after another, in program order: the ticket logic, the
fixed-order sums and the reset are exercised here, but memory ordering between concurrent programs
and CUDA-graph capture/replay can only be shown on a GPU (``benchmarks/gpu_spectral.py``, checks tier).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from spectral3d.layers.samb import SAMB
from spectral3d.ops import (
    spectral_features,
    spectral_features_reference,
    spectral_modulation,
    spectral_modulation_reference,
    use_kernels,
)
from spectral3d.ops._triton import launchers
from spectral3d.ops.testing import (
    NO_KERNEL_OPS,
    count_aten_ops,
    count_launches,
    make_modulation_inputs,
    poison_outputs,
    rel_err,
    skip_launches,
)

RTOL = 1e-5
# no shrinking: a failure is reported at once (shrinking through the interpreter takes minutes)
SETTINGS = settings(max_examples=10, deadline=None, derandomize=True, database=None, phases=(Phase.generate,))


@pytest.fixture(autouse=True)
def _poisoned_triton() -> None:
    with use_kernels("triton"), poison_outputs():
        yield


def assert_close(name: str, a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> None:
    assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    assert torch.isfinite(a).all(), f"{name}: non-finite values (an output was not fully written)"
    err = rel_err(a, b)
    assert err <= rtol, f"{name}: relative error {err:.3g} > {rtol:g}"


def reference_grads(leaves, band, grad):
    ref_in = [t.detach().to(torch.complex128 if t.is_complex() else torch.float64).requires_grad_() for t in leaves]
    out = spectral_modulation_reference(*ref_in, band)
    return out.detach(), torch.autograd.grad(out, ref_in, grad.to(torch.complex128))


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
def test_modulation_launchers_match_float64(form, N, C, D, H, W, B, block, layout, seed):
    leaves, band = make_modulation_inputs(form, (N, C, D, H, W), num_bands=B, layout=layout, seed=seed)
    X = leaves[0]
    grad = torch.randn(X.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed + 1))
    ref_out, ref_grads = reference_grads(leaves, band, grad)
    assert_close(f"forward[{form}]", launchers.modulation_forward(*leaves, band, wrap=False, block=block), ref_out)
    first = launchers.modulation_backward(grad, *leaves, band, wrap=False, block=block)
    second = launchers.modulation_backward(grad, *leaves, band, wrap=False, block=block)
    for name, a, again, ref in zip(("X", "f_m", "f_e", "alpha", "beta"), first, second, ref_grads):
        assert a.dtype == (torch.complex64 if name == "X" else torch.float32), f"grad {name}: dtype {a.dtype}"
        assert_close(f"grad {name}[{form}, {layout}, block={block}]", a, ref)
        assert torch.equal(a, again), f"grad {name}[{form}]: two runs on the same inputs differ"


def test_ticket_finish_bitwise_and_reset_across_calls_and_shapes() -> None:
    """Several programs per channel take tickets (block 16); calls on other shapes in between (same C,
    so the same tickets) leave every gradient bitwise equal, and the tickets at 0 after each call."""
    C = 2
    plan = [  # 8, 2 and 6 tickets per channel
        ((2, C, 3, 4, 9), ("channel", "full", "band")),
        ((1, C, 2, 3, 4), ("band",)),
        ((3, C, 2, 2, 10), ("channel",)),
    ]
    cases = []
    for i, (shape, forms) in enumerate(plan):
        for form in forms:
            leaves, band = make_modulation_inputs(form, shape, num_bands=5, seed=i)
            grad = torch.randn(leaves[0].shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(i))
            cases.append((f"{form} {shape}", grad, leaves, band))
    counters = launchers.tickets(torch.device("cpu"), C)
    first = {}
    for _ in range(2):  # every case twice, interleaved with the others
        for name, grad, leaves, band in cases:
            grads = launchers.modulation_backward(grad, *leaves, band, wrap=False, block=16)
            assert torch.equal(counters, torch.zeros_like(counters)), f"{name}: tickets not reset: {counters}"
            if name not in first:
                first[name] = grads
                _, ref = reference_grads(leaves, band, grad)
                for what, a, b in zip("X f_m f_e alpha beta".split(), grads, ref):
                    assert_close(f"{name} grad {what}", a, b)
            for what, a, b in zip("X f_m f_e alpha beta".split(), grads, first[name]):
                assert torch.equal(a, b), f"{name} grad {what}: not bitwise equal across calls"


def _compute_ops(counts: dict[str, int]) -> dict[str, int]:
    """Ops that launch a device kernel: neither allocation/view nor the spectral3d custom op itself."""
    return {k: v for k, v in counts.items() if k not in NO_KERNEL_OPS and not k.startswith("spectral3d.")}


@pytest.mark.parametrize("form", ["channel", "band", "full", "features"])
def test_host_path_one_launch_per_direction_and_no_other_kernel(form: str) -> None:
    """Eager forward + backward, then a forward without grad: one launch per direction and no aten op that
    would launch a kernel, both through the custom op (what a ``TorchDispatchMode`` sees, its implementation
    counted too) and on the fast path (no dispatch mode: ``torch.profiler``'s record of the aten ops)."""
    if form == "features":
        X = make_modulation_inputs("channel", (2, 3, 4, 5, 6), requires_grad=True)[0][0]
        grad = torch.randn(2, 9, 4, 5, 4)

        def step() -> None:
            torch.autograd.grad(spectral_features(X), X, grad)
            with torch.no_grad():
                spectral_features(X)

        expected = {"features_fwd_contig_kernel": 2, "features_bwd_contig_kernel": 1}
    else:
        leaves, band = make_modulation_inputs(form, (2, 3, 4, 5, 6), requires_grad=True)
        grad = torch.randn_like(leaves[0])

        def step() -> None:
            torch.autograd.grad(spectral_modulation(*leaves, band), leaves, grad)
            with torch.no_grad():
                spectral_modulation(*leaves, band)

        expected = {"modulation_fwd_contig_kernel": 2, "modulation_bwd_contig_kernel": 1}
    with poison_outputs(False), skip_launches():
        step()  # first call: allocates the cached tickets
        with count_aten_ops() as ops, count_launches() as launches:
            step()
        assert dict(launches) == expected
        assert _compute_ops(ops) == {}, f"device kernels besides the launches: {_compute_ops(ops)}"
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof, count_launches() as fast:
            step()
    assert dict(fast) == expected
    names = {e.name for e in prof.events()}
    assert not any(n.startswith("spectral3d::") for n in names), f"eager call went through the custom op: {names}"
    aten = {n.replace("aten::", "aten.") for n in names if n.startswith("aten::")}
    assert aten <= NO_KERNEL_OPS, f"fast path runs device kernels besides the launches: {sorted(aten - NO_KERNEL_OPS)}"


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
def test_features_launchers_match_float64(N, C, D, H, W, block, layout):
    X = make_modulation_inputs("channel", (N, C, D, H, W), layout=layout, seed=N + 10 * C)[0][0]
    X[..., 0, 0, 0] = 0  # a zero-magnitude bin: gradient of |X| taken as 0
    X64 = X.to(torch.complex128).requires_grad_()
    ref = spectral_features_reference(X64)
    grad = torch.randn(ref.shape, dtype=torch.float32)
    (ref_grad,) = torch.autograd.grad(ref, X64, grad.double())
    assert_close("features forward", launchers.features_forward(X, wrap=False, block=block), ref.detach())
    assert_close("features backward", launchers.features_backward(grad, X, wrap=False, block=block), ref_grad)


def test_public_ops_route_to_kernels() -> None:
    """Through ``spectral_modulation`` / ``spectral_features`` and autograd, default block size."""
    with count_launches() as launches:
        for form, B in (("channel", 1), ("full", 1), ("band", 16)):
            leaves, band = make_modulation_inputs(form, (1, 1, 5, 7, 16), num_bands=B, seed=3)  # N*C = 1
            grad = torch.randn(leaves[0].shape, dtype=torch.complex64)
            ref_out, ref_grads = reference_grads(leaves, band, grad)
            leaves = [t.requires_grad_() for t in leaves]
            out = spectral_modulation(*leaves, band)
            assert_close(f"op forward[{form}]", out, ref_out)
            for name, a, ref in zip("X f_m f_e alpha beta".split(), torch.autograd.grad(out, leaves, grad), ref_grads):
                assert_close(f"op grad {name}[{form}]", a, ref)
        X = leaves[0].detach().requires_grad_()
        f = spectral_features(X)
        f.backward(torch.randn_like(f))
    assert dict(launches) == {  # contiguous inputs: the contiguous entry points, one launch per direction
        "modulation_fwd_contig_kernel": 3,
        "modulation_bwd_contig_kernel": 3,
        "features_fwd_contig_kernel": 1,
        "features_bwd_contig_kernel": 1,
    }


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_gains_computed_in_float32(dtype: torch.dtype) -> None:
    """bf16 / fp16 ``f_m`` and ``f_e`` (autocast outputs) are computed in float32."""
    leaves, band = make_modulation_inputs("band", (2, 2, 3, 5, 10), num_bands=4, seed=5)
    leaves[1], leaves[2] = leaves[1].to(dtype), leaves[2].to(dtype)
    grad = torch.randn(leaves[0].shape, dtype=torch.complex64)
    ref_out, ref_grads = reference_grads(leaves, band, grad)
    assert_close("half forward", launchers.modulation_forward(*leaves, band, wrap=False), ref_out)
    grads = launchers.modulation_backward(grad, *leaves, band, wrap=False)
    assert grads[1].dtype == grads[2].dtype == dtype, "gradients of f_m, f_e come back in their dtype"
    for name, a, ref in zip("X f_m f_e alpha beta".split(), grads, ref_grads):
        assert_close(f"half grad {name}", a, ref, rtol=1e-2 if name in ("f_m", "f_e") else RTOL)


@pytest.mark.parametrize("fm_mode", ["band", "channel", "spectral"])
def test_samb_through_kernels_equals_autograd_path(fm_mode: str) -> None:
    m = SAMB(4, fm_mode=fm_mode, num_bands=5)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(1, 4, 5, 6, 7)

    def run() -> list[torch.Tensor]:
        m.zero_grad()
        xg = x.clone().requires_grad_()
        y = m(xg)
        y.backward(torch.ones_like(y) + torch.arange(y.numel()).view_as(y) % 3)
        return [y.detach(), xg.grad] + [p.grad for p in m.parameters()]

    with count_launches() as launches:
        kernel = run()
    assert launches["modulation_fwd_contig_kernel"] == 1 and launches["modulation_bwd_contig_kernel"] == 1
    with use_kernels("autograd", ops={"spectral_modulation", "spectral_features"}):
        reference = run()
    names = ["y", "x"] + [n for n, _ in m.named_parameters()]
    for name, a, b in zip(names, kernel, reference):
        assert_close(f"SAMB[{fm_mode}] {name}", a, b.double(), rtol=1e-4)
