"""Spectral-op, SAMB and SAMBlock micro-benchmarks, and ``desamba_spine`` with Triton vs reference.

The custom ops' implementation is switched with ``spectral3d.ops.use_kernels``
(``auto``: Triton on CUDA, PyTorch formulas elsewhere; ``reference``: PyTorch formulas). On CUDA
each case is timed with ``triton`` and ``reference`` interleaved and reported as a ratio
(``> 1``: Triton is faster); on a CPU without Triton the ratio rows are ``None`` (n/a) and the
micro-benchmarks time the custom op (its PyTorch formulas) against the plain-autograd oracle
``spectral_modulation_reference``. Quick shapes are small; full shapes are PERF.md's.
Achieved GB/s use PERF.md's floor bytes per spectrum element (20 B forward, 52 B forward +
backward for a per-channel or banded ``f_m``).
"""

from __future__ import annotations

import pytest
import torch

from spectral3d.ops import use_kernels
from spectral3d.ops.testing import make_modulation_inputs

QUICK_OP_SHAPES = [(2, 8, 16, 16, 16)]
FULL_OP_SHAPES = [(8, 96, 32, 32, 32), (8, 192, 16, 16, 16), (2, 48, 64, 64, 64), (1, 32, 128, 128, 128)]
QUICK_BLOCK_SHAPES = [(2, 16, 16, 16, 16)]
FULL_BLOCK_SHAPES = [(8, 96, 32, 32, 32), (8, 192, 16, 16, 16)]
FLOOR_BYTES = {"fwd": 20, "fwd+bwd": 52}
NUM_BANDS = 8


def _spectrum_inputs(shape, fm_mode, device):
    return make_modulation_inputs(fm_mode, shape, num_bands=NUM_BANDS, device=device)


def _providers(settings):
    from spectral3d import ops

    def fused(*a, band_index=None):
        return ops.spectral_modulation(*a, band_index=band_index)

    def reference(*a, band_index=None):
        return ops.spectral_modulation_reference(*a, band_index=band_index)

    modes = {"triton": "triton", "reference": "reference"} if settings.cuda else {"op": "auto"}
    providers = {name: (fused, mode) for name, mode in modes.items()}
    providers["autograd-reference"] = (reference, "reference")
    return providers


@pytest.mark.parametrize("fm_mode", ["channel", "band"])
@pytest.mark.parametrize("direction", ["fwd", "fwd+bwd"])
def test_spectral_modulation_micro(fm_mode, direction, settings, record, bench_tools):
    pytest.importorskip("spectral3d.ops")
    for shape in FULL_OP_SHAPES if settings.full else QUICK_OP_SHAPES:
        tensors, band_index = _spectrum_inputs(shape, fm_mode, settings.device)
        elements = tensors[0].numel()
        results = {}
        for provider, (fn, mode) in _providers(settings).items():
            args = [t.detach().requires_grad_(direction == "fwd+bwd") for t in tensors]

            def call(fn=fn, args=args, band_index=band_index):
                out = fn(*args, band_index=band_index)
                if direction == "fwd+bwd":
                    torch.view_as_real(out).sum().backward()

            with use_kernels(mode):
                if provider == "op" or provider == "triton":  # the op must agree with its oracle
                    ref = _providers(settings)["autograd-reference"][0](*tensors, band_index=band_index)
                    torch.testing.assert_close(fn(*tensors, band_index=band_index), ref, rtol=1e-4, atol=1e-4)
                seconds = bench_tools.time_call(call, settings.device, settings.rounds * 3, settings.warmup)
            results[provider] = seconds
            context = {"shape": list(shape), "fm_mode": fm_mode, "direction": direction, "provider": provider}
            record("spectral_modulation", "time_ms", seconds * 1e3, "ms", device=settings.device.type, **context)
            gbps = FLOOR_BYTES[direction] * elements / seconds / 1e9
            record("spectral_modulation", "floor_GBps", gbps, "GB/s", device=settings.device.type, **context)
        base = "triton" if settings.cuda else "op"
        record(
            "spectral_modulation",
            "speedup_vs_autograd_reference",
            results["autograd-reference"] / results[base],
            "x",
            shape=list(shape),
            fm_mode=fm_mode,
            direction=direction,
            provider=base,
            device=settings.device.type,
        )


@pytest.mark.parametrize("block", ["SAMB", "SAMBlock"])
def test_block_micro(block, settings, record, bench_tools):
    try:
        from spectral3d.layers.samb import SAMB
        from spectral3d.layers.samblock import SAMBlock
    except ImportError as err:
        pytest.skip(f"{block} not available: {err}")
    cls = SAMB if block == "SAMB" else SAMBlock
    modes = ("triton", "reference") if settings.cuda else ("auto",)
    for shape in FULL_BLOCK_SHAPES if settings.full else QUICK_BLOCK_SHAPES:
        module = cls(shape[1]).to(settings.device)
        x = torch.randn(shape, device=settings.device, requires_grad=True)

        def call(module=module, x=x):
            with settings.autocast():
                out = module(x)
            out.float().square().mean().backward()

        times = {}
        for mode in modes:
            with use_kernels(mode):
                times[mode] = bench_tools.time_call(call, settings.device, settings.rounds * 2, settings.warmup)
            context = {"shape": list(shape), "direction": "fwd+bwd", "kernel": mode, "device": settings.device.type}
            record(block, "time_ms", times[mode] * 1e3, "ms", **context)
        ratio = times["reference"] / times["triton"] if settings.cuda else None
        note = None if settings.cuda else "n/a: no CUDA (Triton runs on CUDA only)"
        record(block, "triton_speedup_vs_reference", ratio, "x", shape=list(shape), note=note)


def test_desamba_spine_triton_vs_reference(settings, record, bench_tools):
    backbones3d = pytest.importorskip("backbones3d")
    if not backbones3d.is_model("desamba_spine"):
        pytest.skip("desamba_spine is not registered")
    if not settings.cuda:
        for phase in ("train", "infer"):
            record("desamba_spine", f"{phase}_triton_speedup_vs_reference", None, "x", note="n/a: no CUDA")
        pytest.skip("Triton kernels need CUDA; recorded as n/a")
    cfg = backbones3d.get_pretrained_cfg("desamba_spine")
    batch, size = settings.shapes(cfg["input_size"])[0]
    work = bench_tools.build_workload("desamba_spine", batch, size, settings)
    for phase in ("train", "infer"):
        step = getattr(work, f"{phase}_step")
        times = {"triton": [], "reference": []}
        for mode in times:
            with use_kernels(mode):
                bench_tools.time_call(step, settings.device, 1, settings.warmup)
        for _ in range(settings.rounds):
            for mode in times:
                with use_kernels(mode):
                    times[mode].append(bench_tools.time_call(step, settings.device, 1, 0))
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        context = {"input": list(size), "batch": batch, "dtype": settings.dtype_name}
        for mode, seconds in med.items():
            record("desamba_spine", f"{phase}_throughput", batch / seconds, "volumes/s", kernel=mode, **context)
        speedup = med["reference"] / med["triton"]
        record("desamba_spine", f"{phase}_triton_speedup_vs_reference", speedup, "x", **context)
