"""``DepthwiseConv3d`` against the ``nn.Conv3d(C, C, k, padding=k // 2, groups=C)`` it replaces, interleaved.

Same weights, same inputs, one process, calls alternating. On CPU the layer's custom op runs ``F.conv3d``
(its CPU implementation), so the ratio (recorded, not asserted; expected ~1) is the op's dispatch overhead.
On CUDA the layer runs the Triton kernels (``use_kernels("triton")``) and ``nn.Conv3d`` runs cuDNN / ATen as
dispatched, bf16 autocast and channels-last as the model benchmarks; ``benchmarks/gpu_depthwise.py`` has the
full comparison. Quick shapes are small ConvNeXt-like stages; full shapes are ``convnextv2_atto_3d``'s at 96³ x 8.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spectral3d.layers import DepthwiseConv3d
from spectral3d.ops import use_kernels

QUICK_SHAPES = [(2, 40, 12, 12, 12, 7), (2, 160, 6, 6, 6, 7), (2, 48, 12, 12, 12, 3)]  # (N, C, D, H, W, k)
FULL_SHAPES = [(8, 40, 24, 24, 24, 7), (8, 80, 12, 12, 12, 7), (8, 160, 6, 6, 6, 7), (8, 320, 3, 3, 3, 7)]


def _step(module: nn.Module, x: torch.Tensor, direction: str, settings) -> None:
    with settings.autocast():
        out = module(x)
    if direction == "fwd+bwd":
        out.float().square().mean().backward()


@pytest.mark.parametrize("direction", ["fwd", "fwd+bwd"])
def test_depthwise_layer_vs_conv3d(direction, settings, record, bench_tools):
    mode = "triton" if settings.cuda else "auto"
    fmt = torch.channels_last_3d if settings.cuda else torch.contiguous_format
    for N, C, D, H, W, k in FULL_SHAPES if settings.full else QUICK_SHAPES:
        torch.manual_seed(0)
        layer = DepthwiseConv3d(C, k).to(settings.device)
        plain = nn.Conv3d(C, C, k, padding=k // 2, groups=C).to(settings.device)
        plain.load_state_dict(layer.state_dict())
        x = torch.randn(N, C, D, H, W, device=settings.device).contiguous(memory_format=fmt)
        x.requires_grad_(direction == "fwd+bwd")

        with use_kernels(mode, ops={"depthwise_conv3d"}), torch.no_grad():
            torch.testing.assert_close(layer(x).float(), plain(x).float(), rtol=2e-2, atol=2e-2)
        modules = {"nn.Conv3d": plain, "DepthwiseConv3d": layer}
        calls = {name: (lambda m=m, x=x: _step(m, x, direction, settings)) for name, m in modules.items()}
        times = {name: [] for name in calls}
        with use_kernels(mode, ops={"depthwise_conv3d"}):
            for fn in calls.values():
                bench_tools.time_call(fn, settings.device, 1, settings.warmup)
            for _ in range(settings.rounds * 3):  # interleaved, so machine noise hits both alike
                for name, fn in calls.items():
                    times[name].append(bench_tools.time_call(fn, settings.device, 1, 0))
        med = {name: sorted(v)[len(v) // 2] for name, v in times.items()}
        context = {"shape": [N, C, D, H, W], "kernel": k, "direction": direction, "device": settings.device.type}
        for name, seconds in med.items():
            record(name, "time_ms", seconds * 1e3, "ms", kernel_mode=mode, **context)
        record("DepthwiseConv3d", "speedup_vs_nn_conv3d", med["nn.Conv3d"] / med["DepthwiseConv3d"], "x", **context)
