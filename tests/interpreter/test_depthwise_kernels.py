"""The depthwise-convolution kernels in Triton's interpreter: every output poisoned, float64 oracles.

Forward, grad input, grad weight and grad bias against ``F.conv3d(groups=C)`` in float64 over
hypothesis-drawn sizes (1-11 per axis), kernels 3/5/7 and anisotropic ones, contiguous, channels-last
and channel-slice inputs, bias on and off, C = 1 and C not a multiple of the channel block, default and
small tiles; half precision with its own tolerance; a deliberately broken kernel that the check must
catch; the public op and the layers routed through the kernels.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from spectral3d.layers import ConvNeXtV2Block3d, GatedCNNBlock3d
from spectral3d.ops import depthwise_conv3d, use_kernels
from spectral3d.ops._triton import depthwise
from spectral3d.ops.testing import count_launches, poison_outputs, rel_err

RTOL = 1e-5
# half storage, fp32 accumulation: only the final rounding to the storage dtype (unit roundoff 2^-9 for
# bf16, 2^-11 for fp16) separates the result from float64 on the same (rounded) inputs
HALF_RTOL = {torch.bfloat16: 2**-8, torch.float16: 2**-10}
KERNELS = [3, 5, 7, (1, 7, 7), (3, 1, 5), (7, 3, 1)]
LAYOUTS = ["contiguous", "channels_last", "channel_slice"]
# no shrinking: a failure is reported at once (shrinking through the interpreter takes minutes)
SETTINGS = settings(max_examples=8, deadline=None, derandomize=True, database=None, phases=(Phase.generate,))


@pytest.fixture(autouse=True)
def _poisoned_triton() -> None:
    with use_kernels("triton", ops={"depthwise_conv3d"}), poison_outputs():
        yield


def make_input(shape, layout: str, dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    N, C, D, H, W = shape
    if layout == "channel_slice":  # GatedCNNBlock3d's input: channels of a channels-last tensor
        return torch.randn(N, D, H, W, C + 5, generator=g).to(dtype)[..., 2 : 2 + C].permute(0, 4, 1, 2, 3)
    x = torch.randn(shape, generator=g).to(dtype)
    return x.to(memory_format=torch.channels_last_3d) if layout == "channels_last" else x


def make_case(shape, kernel, layout: str, bias: bool, seed: int, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    k = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
    C = shape[1]
    x = make_input(shape, layout, dtype, g)
    w = torch.randn(C, 1, *k, generator=g).to(dtype)
    b = torch.randn(C, generator=g).to(dtype) if bias else None
    dy = torch.randn(shape, generator=g).to(dtype)
    return x, w, b, dy


def reference(x, w, b, dy):
    """Output and (dx, dw, db) in float64 on the same (possibly rounded) values."""
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b) if t is not None]
    y = F.conv3d(leaves[0], leaves[1], leaves[2] if b is not None else None, padding=[k // 2 for k in w.shape[2:]],
                 groups=x.shape[1])  # fmt: skip
    grads = torch.autograd.grad(y, leaves, dy.double())
    return y.detach(), grads


def assert_close(name: str, a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> None:
    assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    assert torch.isfinite(a).all(), f"{name}: non-finite values (an output was not fully written)"
    err = rel_err(a, b)
    assert err <= rtol, f"{name}: relative error {err:.3g} > {rtol:g}"


def check_launchers(x, w, b, dy, rtol: float = RTOL, repeat: bool = False, **launch) -> None:
    """Launchers vs float64; ``launch``: ``config``, ``nc_via_cl`` (both passes), ``wgrad``, ``tiles_per_chunk``."""
    ref_y, ref_grads = reference(x, w, b, dy)
    tag = f"x{tuple(x.shape)} k{tuple(w.shape[2:])} strides {x.stride()} bias={b is not None}"
    y = depthwise.forward(x, w, b, wrap=False, **{k: v for k, v in launch.items() if k in ("config", "nc_via_cl")})
    assert y.dtype == x.dtype
    assert_close(f"forward {tag}", y, ref_y, rtol)
    fmt = torch.channels_last_3d if not x.is_contiguous() and x.shape[1] > 1 and x.stride(1) == 1 else None
    assert y.is_contiguous(memory_format=fmt or torch.contiguous_format), f"y strides {y.stride()}"
    kw = {"wrap": False, **launch}
    first = depthwise.backward(dy, x, w, True, True, b is not None, **kw)
    assert first[0].is_contiguous(memory_format=fmt or torch.contiguous_format), f"dx strides {first[0].stride()}"
    for name, got, ref in zip(("dx", "dw", "db"), first, ref_grads):
        assert_close(f"{name} {tag}", got, ref, rtol)
    assert first[1].dtype == w.dtype and first[1].is_contiguous()
    if repeat:  # in the interpreter programs run one after another; on a GPU this is the real test
        second = depthwise.backward(dy, x, w, False, True, b is not None, **kw)
        assert torch.equal(first[1], second[1]), "dw: two runs on the same inputs differ"
        if b is not None:
            assert torch.equal(first[2], second[2]), "db: two runs on the same inputs differ"


@SETTINGS
@given(
    N=st.integers(1, 2),
    C=st.sampled_from([1, 3, 8, 17]),
    D=st.integers(1, 11),
    H=st.integers(1, 11),
    W=st.integers(1, 11),
    kernel=st.sampled_from(KERNELS),
    layout=st.sampled_from(LAYOUTS),
    bias=st.booleans(),
    nc_via_cl=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_kernels_match_float64(N, C, D, H, W, kernel, layout, bias, nc_via_cl, seed) -> None:
    """Default (interpreter) tiles: one position tile per sample; C = 3, 17 leave a partial channel block;
    NCDHW inputs natively or through a channels-last copy."""
    check_launchers(*make_case((N, C, D, H, W), kernel, layout, bias, seed), nc_via_cl=nc_via_cl)


@settings(SETTINGS, max_examples=6)
@given(
    N=st.integers(1, 2),
    C=st.sampled_from([1, 3, 5]),
    D=st.integers(1, 4),
    H=st.integers(1, 6),
    W=st.integers(1, 6),
    kernel=st.sampled_from([3, 5, (1, 7, 7), (3, 1, 5)]),
    layout=st.sampled_from(LAYOUTS),
    block_s=st.sampled_from([16, 64]),
    block_c=st.sampled_from([2, 4]),
    tiles_per_chunk=st.integers(1, 3),
    nc_via_cl=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_small_tiles_match_float64(N, C, D, H, W, kernel, layout, block_s, block_c, tiles_per_chunk, nc_via_cl, seed):
    """Many tiles per sample (tiles that straddle rows and planes), several channel blocks and chunks."""
    cfg = depthwise.TileConfig(block_s, block_c)
    case = make_case((N, C, D, H, W), kernel, layout, True, seed)
    check_launchers(*case, config=cfg, wgrad=cfg, tiles_per_chunk=tiles_per_chunk, repeat=True, nc_via_cl=nc_via_cl)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_accumulates_in_float32(dtype: torch.dtype) -> None:
    rtol = HALF_RTOL[dtype]
    check_launchers(*make_case((2, 12, 3, 4, 5), 3, "channels_last", True, seed=4, dtype=dtype), rtol=rtol)
    case = make_case((1, 5, 2, 6, 4), (1, 7, 7), "contiguous", False, seed=5, dtype=dtype)
    check_launchers(*case, rtol=rtol, nc_via_cl=False)


def test_a_dropped_halo_tap_fails_the_check() -> None:
    """The kernels with one tap left out (a test-only constexpr) are caught by the same comparison."""
    x, w, b, dy = make_case((2, 3, 6, 5, 7), 3, "channels_last", True, seed=1)
    ref_y, (_, ref_dw, _) = reference(x, w, b, dy)
    assert_close("forward", depthwise.forward(x, w, b, wrap=False), ref_y)
    assert_close("dw", depthwise.backward(dy, x, w, False, True, True, wrap=False)[1], ref_dw)
    corner = 0  # tap (0, 0, 0): reads the halo of every border output
    with pytest.raises(AssertionError, match="relative error"):
        assert_close("forward", depthwise.forward(x, w, b, wrap=False, drop_tap=corner), ref_y)
    with pytest.raises(AssertionError, match="relative error"):
        assert_close("dw", depthwise.backward(dy, x, w, False, True, True, wrap=False, drop_tap=corner)[1], ref_dw)


def test_public_op_routes_to_kernels_and_falls_back() -> None:
    x, w, b, dy = make_case((2, 6, 5, 4, 7), 5, "channels_last", True, seed=2)
    ref_y, ref_grads = reference(x, w, b, dy)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    with count_launches() as launches:
        y = depthwise_conv3d(*leaves)
        grads = torch.autograd.grad(y, leaves, dy)
    assert dict(launches) == {"_dw_fwd_kernel": 2, "_dw_wgrad_kernel": 1, "_dw_finish_kernel": 1}
    assert_close("op forward", y, ref_y)
    for name, got, ref in zip(("dx", "dw", "db"), grads, ref_grads):
        assert_close(f"op {name}", got, ref)
    with count_launches() as launches:  # float64 and kernels over 7 run F.conv3d, even in mode "triton"
        depthwise_conv3d(x.double(), w.double())
        depthwise_conv3d(x, torch.randn(6, 1, 1, 1, 9))
    assert not launches


@pytest.mark.parametrize("block", ["gated_cnn", "convnextv2"])
def test_layers_through_kernels_equal_the_autograd_path(block: str) -> None:
    """GatedCNNBlock3d passes a channel slice (no copy); ConvNeXtV2 a channels-last map."""
    torch.manual_seed(0)
    if block == "gated_cnn":
        m = GatedCNNBlock3d(12, kernel_size=(3, 5, 5), conv_ratio=0.5)
    else:
        m = ConvNeXtV2Block3d(8, kernel_size=3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(2, m.dim if block == "gated_cnn" else 8, 4, 5, 6).to(memory_format=torch.channels_last_3d)

    def run() -> list[torch.Tensor]:
        m.zero_grad()
        xg = x.clone().requires_grad_()
        y = m(xg)
        y.backward(torch.cos(torch.arange(y.numel(), dtype=y.dtype)).view_as(y))
        return [y.detach(), xg.grad] + [p.grad for p in m.parameters()]

    with count_launches() as launches:
        kernels = run()
    assert launches["_dw_fwd_kernel"] == 2 and launches["_dw_wgrad_kernel"] == 1
    with use_kernels("autograd", ops={"depthwise_conv3d"}):
        reference_path = run()
    names = ["y", "x"] + [n for n, _ in m.named_parameters()]
    for name, a, b in zip(names, kernels, reference_path):
        assert_close(f"{block} {name}", a, b.double(), rtol=1e-5)
