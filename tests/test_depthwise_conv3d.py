"""``depthwise_conv3d`` / ``DepthwiseConv3d`` on CPU: equal to ``F.conv3d`` (values, gradients, memory format,
autocast, FLOPs), opcheck, the kernel switch, old ``nn.Conv3d`` state dicts, compiled models, bad arguments.

The Triton kernels themselves are tested through the interpreter (``tests/interpreter/test_depthwise_kernels.py``).
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import backbones3d
from spectral3d import flops
from spectral3d.layers import DepthwiseConv3d
from spectral3d.ops import depthwise_conv3d, depthwise_conv3d_reference, use_kernels

pytestmark = pytest.mark.usefixtures("one_thread")

KERNELS = [3, 5, 7, (1, 7, 7), (3, 1, 5), 9]
DEFAULT = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
LAYOUTS = ["contiguous", "channels_last", "channel_slice"]


def make_input(shape: tuple[int, ...], layout: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A random input; ``channel_slice`` is what GatedCNNBlock3d passes (a channel slice of channels-last)."""
    N, C, D, H, W = shape
    if layout == "channel_slice":
        return torch.randn(N, D, H, W, C + 5, dtype=dtype)[..., 3 : 3 + C].permute(0, 4, 1, 2, 3)
    x = torch.randn(shape, dtype=dtype)
    return x.to(memory_format=torch.channels_last_3d) if layout == "channels_last" else x


def conv_reference(x, weight, bias):
    return F.conv3d(x, weight, bias, padding=[k // 2 for k in weight.shape[2:]], groups=x.shape[1])


@given(
    N=st.integers(1, 2),
    C=st.integers(1, 5),
    D=st.integers(1, 6),
    H=st.integers(1, 6),
    W=st.integers(1, 6),
    kernel=st.sampled_from(KERNELS),
    layout=st.sampled_from(LAYOUTS),
    bias=st.booleans(),
    mode=st.sampled_from(["auto", "reference"]),
)
def test_op_equals_conv3d_with_gradients(N, C, D, H, W, kernel, layout, bias, mode):
    k = (kernel,) * 3 if isinstance(kernel, int) else kernel
    x = make_input((N, C, D, H, W), layout).requires_grad_()
    w = torch.randn(C, 1, *k, requires_grad=True)
    b = torch.randn(C, requires_grad=True) if bias else None
    leaves = [t for t in (x, w, b) if t is not None]
    with use_kernels(mode, ops={"depthwise_conv3d"}):
        y = depthwise_conv3d(x, w, b)
    ref = conv_reference(x, w, b)
    g = torch.randn_like(ref)
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    for a, r in zip(torch.autograd.grad(y, leaves, g), torch.autograd.grad(ref, leaves, g)):
        torch.testing.assert_close(a, r, rtol=1e-6, atol=1e-6)
    expected = torch.channels_last_3d if layout != "contiguous" and C > 1 else torch.contiguous_format
    assert y.is_contiguous(memory_format=expected), f"output strides {y.stride()} are not {expected}"


def test_gradcheck_and_gradgradcheck_float64() -> None:
    """First and second derivatives (the backward op has its own autograd formula, as nn.Conv3d's has)."""
    x = make_input((2, 3, 4, 3, 5), "channel_slice", torch.float64).requires_grad_()
    w = torch.randn(3, 1, 3, 1, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(depthwise_conv3d, (x, w, b))
    assert torch.autograd.gradgradcheck(depthwise_conv3d, (x, w, b))


def test_opcheck() -> None:
    w = torch.randn(3, 1, 3, 5, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    for layout, bias in (("contiguous", b), ("channels_last", None)):
        x = make_input((2, 3, 3, 4, 5), layout).requires_grad_()
        utils = None if layout == "contiguous" else ("test_schema", "test_autograd_registration", "test_faketensor")
        torch.library.opcheck(torch.ops.spectral3d.depthwise_conv3d.default, (x, w, bias), test_utils=utils or DEFAULT)
    backward = torch.ops.spectral3d.depthwise_conv3d_backward.default
    for mask in ((True, True, True), (False, True, False)):
        torch.library.opcheck(backward, (torch.randn(x.shape), x.detach(), w.detach(), *mask))


def _node(y: torch.Tensor) -> str:
    return type(y.grad_fn).__name__


def test_kernel_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    x, w = torch.randn(1, 2, 3, 3, 3, requires_grad=True), torch.randn(2, 1, 3, 3, 3)
    assert "spectral3d_depthwise_conv3d" in _node(depthwise_conv3d(x, w))  # the custom op's node
    with use_kernels("autograd", ops={"depthwise_conv3d"}):
        assert _node(depthwise_conv3d(x, w)) == "ConvolutionBackward0"  # F.conv3d, no custom op
    monkeypatch.setenv("SPECTRAL3D_KERNEL", "auto,depthwise_conv3d=autograd")
    assert _node(depthwise_conv3d(x, w)) == "ConvolutionBackward0"
    monkeypatch.setenv("SPECTRAL3D_KERNEL", "depthwise_conv3d=triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        depthwise_conv3d(x, w)
    # what the kernels do not cover runs F.conv3d even in mode "triton": float64, kernels over 7
    torch.testing.assert_close(depthwise_conv3d(x.double(), w.double()), conv_reference(x.double(), w.double(), None))
    w9 = torch.randn(2, 1, 1, 9, 1)
    torch.testing.assert_close(depthwise_conv3d(x, w9), conv_reference(x, w9, None))


def test_autocast_casts_like_conv3d() -> None:
    x = make_input((2, 4, 5, 6, 7), "channels_last")
    w, b = torch.randn(4, 1, 3, 3, 3), torch.randn(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, ref = depthwise_conv3d(x, w, b), conv_reference(x, w, b)
        y64 = depthwise_conv3d(x.double(), w.double(), b.double())
    assert y.dtype == ref.dtype == torch.bfloat16
    assert y64.dtype == torch.float64  # autocast leaves float64 alone, as for F.conv3d
    torch.testing.assert_close(y, ref)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)


def test_flops_equal_conv3d_forward_and_count_the_backward() -> None:
    x, w = torch.randn(2, 8, 5, 6, 7), torch.randn(8, 1, 3, 5, 7)
    forward = 2 * 2 * 8 * 5 * 6 * 7 * 3 * 5 * 7
    assert flops.count(depthwise_conv3d, x.to("meta"), w.to("meta")).flops == forward
    assert flops.count(conv_reference, x.to("meta"), w.to("meta"), None).flops == forward

    def train_flops(fn) -> dict[str, int]:
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        with FlopCounterMode(display=False) as counter:
            fn(xg, wg, None).sum().backward()
        return {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}

    ours = train_flops(depthwise_conv3d)
    assert ours == {"spectral3d.depthwise_conv3d": forward, "spectral3d.depthwise_conv3d_backward": 2 * forward}
    # torch's conv_backward_flop ignores groups for the weight gradient (C times the work): ours does not
    assert train_flops(conv_reference)["aten.convolution_backward"] == (1 + 8) * forward


def test_fvcore_counts_the_op_like_conv3d() -> None:
    pytest.importorskip("fvcore")
    x = torch.randn(1, 6, 5, 6, 7)
    layer = DepthwiseConv3d(6, (3, 5, 7))
    plain = nn.Conv3d(6, 6, (3, 5, 7), padding=(1, 2, 3), groups=6)
    macs = flops.fvcore_macs(layer, x)
    assert macs == flops.fvcore_macs(plain, x) == flops.count(layer, x).macs == 6 * 5 * 6 * 7 * 3 * 5 * 7


def test_layer_is_a_conv3d_with_its_names_shapes_and_init() -> None:
    torch.manual_seed(3)
    layer = DepthwiseConv3d(5, (1, 7, 3), bias=True)
    torch.manual_seed(3)
    plain = nn.Conv3d(5, 5, (1, 7, 3), padding=(0, 3, 1), groups=5)
    assert isinstance(layer, nn.Conv3d)
    assert {k: v.shape for k, v in layer.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    for a, b in zip(layer.parameters(), plain.parameters()):
        assert torch.equal(a, b)  # nn.Conv3d's default initialisation, drawn the same way
    x = torch.randn(2, 5, 4, 9, 3)
    torch.testing.assert_close(layer(x), plain(x), rtol=0, atol=0)
    assert repr(DepthwiseConv3d(8, 3, bias=False)) == "DepthwiseConv3d(8, kernel_size=(3, 3, 3), bias=False)"
    assert DepthwiseConv3d(8, 3, bias=False).bias is None


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"channels": 0, "kernel_size": 3}, ValueError, "channels: expected a positive int, got 0"),
        ({"channels": True, "kernel_size": 3}, TypeError, "channels: expected an int, got bool"),
        ({"channels": 4, "kernel_size": 4}, ValueError, "kernel_size: expected an odd size on axis D .* got 4"),
        ({"channels": 4, "kernel_size": (3, 3, 2)}, ValueError, "kernel_size: expected an odd size on axis W"),
        ({"channels": 4, "kernel_size": (3, 3)}, TypeError, "kernel_size: expected an int or a 3-tuple"),
        ({"channels": 4, "kernel_size": 0}, ValueError, "kernel_size: expected a positive size on axis D"),
        ({"channels": 4, "kernel_size": 3, "bias": 1}, TypeError, "bias: expected a bool"),
    ],
)
def test_layer_rejects_bad_arguments(kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        DepthwiseConv3d(**kwargs)


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((torch.randn(2, 4, 5, 5), torch.randn(4, 1, 3, 3, 3)), ValueError, r"x: expected a 5-D tensor"),
        ((torch.ones(1, 4, 3, 3, 3, dtype=torch.long), torch.randn(4, 1, 3, 3, 3)), TypeError, "x: expected a float"),
        ((torch.randn(1, 4, 3, 3, 3), torch.randn(3, 1, 3, 3, 3)), ValueError, r"weight: expected shape .* C = 4"),
        ((torch.randn(1, 4, 3, 3, 3), torch.randn(4, 2, 3, 3, 3)), ValueError, r"weight: expected shape"),
        ((torch.randn(1, 4, 3, 3, 3), torch.randn(4, 1, 3, 2, 3)), ValueError, "odd kernel size on axis H"),
        (
            (torch.randn(1, 4, 3, 3, 3), torch.randn(4, 1, 3, 3, 3), torch.randn(3)),
            ValueError,
            r"bias: expected shape \(4,\)",
        ),
        (("x", torch.randn(4, 1, 3, 3, 3)), TypeError, "x: expected a torch.Tensor"),
    ],
)
def test_op_rejects_bad_arguments(args, exc, match) -> None:
    with pytest.raises(exc, match=match):
        depthwise_conv3d(*args)
    with pytest.raises(exc, match=match):
        depthwise_conv3d_reference(*args)


def _as_plain_conv3d(model: nn.Module) -> nn.Module:
    """The model as it was before ``DepthwiseConv3d``: every one swapped for the ``nn.Conv3d`` it replaced."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, DepthwiseConv3d):
                plain = nn.Conv3d(
                    child.in_channels, child.out_channels, child.kernel_size, padding=child.padding,
                    groups=child.groups, bias=child.bias is not None,
                )  # fmt: skip
                plain.load_state_dict(child.state_dict())
                setattr(module, child_name, plain)
    assert not any(isinstance(m, DepthwiseConv3d) for m in model.modules())
    return model


@pytest.mark.parametrize(
    "name, expected",
    [("test_convnextv2_3d", 5), ("test_samnet_3d", 12), ("test_mambaout_3d", 4), ("test_efficientnet_3d", 6)],
)
def test_state_dicts_saved_before_load_unchanged(name: str, expected: int) -> None:
    """A state dict of the ``nn.Conv3d`` form loads key for key into the model built with ``DepthwiseConv3d``."""
    torch.manual_seed(0)
    new = backbones3d.create_model(name, num_classes=3).eval()
    assert sum(isinstance(m, DepthwiseConv3d) for m in new.modules()) == expected
    torch.manual_seed(1)
    old = _as_plain_conv3d(backbones3d.create_model(name, num_classes=3)).eval()
    with torch.no_grad():
        for p in old.parameters():
            p.add_(0.1 * torch.randn_like(p))  # away from any init, GRN's zeros included
    buffer = io.BytesIO()
    torch.save(old.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert list(state) == list(new.state_dict())
    new.load_state_dict(state)  # strict
    x = torch.randn(2, 3, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(new(x), old(x))


@pytest.mark.parametrize(
    "name",
    # SAMNet traces SAMB's FFTs and spectral ops too: ~20 s on 2 cores, and the issue asks for this model
    ["test_convnextv2_3d", pytest.param("test_samnet_3d", marks=pytest.mark.slow)],
)
def test_compiled_model_has_no_graph_break_and_equals_eager(name: str) -> None:
    torch.manual_seed(0)
    model = backbones3d.create_model(name, num_classes=3).eval()
    x = torch.randn(1, 3, 32, 32, 32)
    graphs = []
    aot_eager = torch._dynamo.lookup_backend("aot_eager")

    def backend(gm, example_inputs):
        graphs.append(gm)
        return aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)  # raises on a graph break
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    ops = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert len(graphs) == 1 and any("spectral3d.depthwise_conv3d" in o for o in ops)
