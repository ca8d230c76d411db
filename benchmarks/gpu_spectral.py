"""The spectral ops, SAMB and SAMBlock on one GPU: correctness first, then device time against the byte floor.

One command, from the source tree, on an H100/H200 (torch 2.11 + Triton 3.6)::

    PYTHONPATH=. python benchmarks/gpu_spectral.py --budget-s 270   # writes $OUT or benchmarks/results/
    PYTHONPATH=. python benchmarks/gpu_spectral.py --smoke          # CPU + interpreter, tiny shapes (wiring)

Tiers, in this order; the JSON is rewritten after each unit of work, and a unit whose estimated cost
would pass ``--budget-s`` is skipped and listed (``skipped_over_budget``):

1. ``checks``: ``torch.library.opcheck`` of the four ops; the backward's in-kernel finish on the GPU
   (float64 agreement, 60 repeats bitwise equal with other launches in between, tickets back at 0, a
   block of 128 bins giving 900 programs per channel); capture of an eager forward + backward in a CUDA graph
   and 20 replays on new inputs, bitwise equal to eager calls, tickets at 0; ``torch.compile``
   (inductor, fullgraph) of the op and of SAMB for each ``f_m`` form vs eager.
2. ``ops``: ``spectral_modulation`` at the three targeted PERF.md shapes, three ``f_m`` forms, forward
   and forward + backward, Triton (eager fast path) vs eager PyTorch, each timed four ways: wall clock
   (``triton.testing.do_bench``, L2 flushed), device time (``torch.profiler`` kernel sums, L2 flushed
   between calls, flush kernels left out), ``do_bench_cudagraph`` (replayed graph: no host time, no
   flush), and ``host_us`` (host time of one call while the GPU is kept busy by ``torch.cuda._sleep``;
   ``gpu_busy`` says whether it stayed busy) — with % of the byte floor (PERF.md: 20/24 B forward,
   52/64 B forward + backward per spectrum element, at the measured copy bandwidth) for each.
3. ``blocks``: SAMB (per-channel and banded ``f_m``) and SAMBlock forward + backward, ops vs the
   reference path (``use_kernels("autograd")``), eager: wall and device time, the FFT kernels' share
   and the speed-up ceiling they leave (reference device time / FFT device time of the ops path).
4. ``compiled blocks``: ``torch.compile`` (inductor) of SAMB[band] and SAMBlock, ops vs reference
   path, Dynamo reset per variant, each row with its graph / graph-break / recompile counts.
5. ``compile``: ``torch.compile`` of the real-view reference formulation at the targeted shapes (the
   "x compile" ratio of tier 2's rows).
6. ``extras``: the reported-not-targeted (8, 192, 16³) shape and ``spectral_features`` rows.

A benchmark records; only a failed correctness check makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import compile_counts
import torch
from gpu_timing import Timer, copy_bandwidth

from spectral3d.layers.samb import SAMB, band_index
from spectral3d.ops import (
    spectral_features,
    spectral_features_reference,
    spectral_modulation,
    spectral_modulation_reference,
    use_kernels,
)
from spectral3d.ops._triton import launchers
from spectral3d.ops.testing import make_modulation_inputs, rel_err

SPECTRAL_OPS = ("spectral_modulation", "spectral_features")
TARGETED = [(8, 96, 32, 32, 32), (2, 48, 64, 64, 64), (1, 32, 128, 128, 128)]
REPORTED = [(8, 192, 16, 16, 16)]
SMOKE_SHAPES = [(2, 1, 3, 4, 5)]
SAMB_SHAPES = [(8, 96, 32, 32, 32), (8, 192, 16, 16, 16)]
SMOKE_SAMB_SHAPES = [(1, 4, 6, 6, 6)]
TICKET_SHAPE, SMOKE_TICKET_SHAPE = (2, 16, 48, 48, 48), (2, 2, 4, 5, 6)
FORMS = ("channel", "full", "band")
FORMS_SAMB = ("band", "channel", "spectral")
DEFAULT_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
NUM_BANDS = 8
# bytes per spectrum element that must move at least once (PERF.md)
FLOOR_BYTES = {
    ("modulation", "fwd", "full"): 24,
    ("modulation", "fwd", "channel"): 20,
    ("modulation", "fwd", "band"): 20,
    ("modulation", "fwd+bwd", "full"): 64,
    ("modulation", "fwd+bwd", "channel"): 52,
    ("modulation", "fwd+bwd", "band"): 52,
    ("features", "fwd", None): 20,
    ("features", "fwd+bwd", None): 48,
}
# seconds a unit of work is expected to take on an H100 (for --budget-s)
COST_S = {"checks": 60, "op": 8, "block": 10, "compiled block": 60, "compile": 25, "features": 5}


def modulation_real_view(xr, f_m, f_e, alpha, beta, band):
    """Eq. 2 on the real view ``(..., 2)`` of X: the formulation ``torch.compile`` fuses best."""
    R, I = xr[..., 0], xr[..., 1]  # noqa: E741
    phi = torch.sqrt(R * R + I * I)
    fm = f_m[:, :, band] if band is not None else f_m
    g = 1 + alpha.view(1, -1, 1, 1, 1) * (fm - 1)
    return torch.stack([R * g + beta.view(1, -1, 1, 1, 1) * f_e * phi, I * g], dim=-1)


# --------------------------------------------------------------------------------------------
# timing: wall clock, device time, CUDA graph, host time
# --------------------------------------------------------------------------------------------
def floor_fields(row: dict, nbytes: float, copy_gbs: float) -> dict:
    """``floor_ms`` and % of the floor for each timing in ``row``."""
    floor_ms = nbytes / (copy_gbs * 1e9) * 1e3
    out = {"floor_ms": floor_ms, "gbs": nbytes / (row["ms"] * 1e-3) / 1e9}
    for key, name in (("ms", "wall"), ("device_ms", "device"), ("graph_ms", "graph")):
        if row.get(key):
            out[f"pct_floor_{name}"] = 100 * floor_ms / row[key]
    return out


# --------------------------------------------------------------------------------------------
# tier 1: checks
# --------------------------------------------------------------------------------------------
def make_inputs(shape, form: str, device: torch.device, seed: int = 0):
    band = band_index(shape[2:], NUM_BANDS, device) if form == "band" else None
    if band is not None:
        band = band.to(torch.int32)  # as SAMB passes it
    return make_modulation_inputs(form, shape, num_bands=NUM_BANDS, device=device, band_index=band, seed=seed)


def float64_grads(leaves, band, grad):
    ref_in = [t.detach().to(torch.complex128 if t.is_complex() else torch.float64).requires_grad_() for t in leaves]
    ref = spectral_modulation_reference(*ref_in, band)
    return ref.detach(), torch.autograd.grad(ref, ref_in, grad.to(torch.complex128))


def check_against_float64(leaves, band, grad) -> float:
    """Largest norm-wise relative error of the op's output and five gradients vs float64."""
    ins = [t.detach().clone().requires_grad_() for t in leaves]
    out = spectral_modulation(*ins, band)
    grads = torch.autograd.grad(out, ins, grad)
    ref, ref_grads = float64_grads(leaves, band, grad)
    return max([rel_err(out, ref)] + [rel_err(a, b) for a, b in zip(grads, ref_grads)])


def tickets_zero() -> bool:
    return all(int(t.abs().sum()) == 0 for t in launchers.ticket_buffers())


def check_ticket_finish(device: torch.device, smoke: bool, failures: list[str]) -> dict:
    """The backward's in-kernel finish on this device: float64, bitwise repeats, tickets reset, CUDA graphs."""
    report: dict = {}
    shape = SMOKE_TICKET_SHAPE if smoke else TICKET_SHAPE
    other, other_band = make_inputs((1, shape[1], 8, 9, 10), "band", device, seed=9)
    other_grad = torch.randn_like(other[0])
    for form in FORMS:
        leaves, band = make_inputs(shape, form, device, seed=1)
        grad = torch.randn_like(leaves[0])
        for block in (launchers.BLOCK, 128):
            first = launchers.modulation_backward(grad, *leaves, band, wrap=False, block=block)
            _, ref = float64_grads(leaves, band, grad)
            err = max(rel_err(a, b) for a, b in zip(first, ref))
            mismatches = 0
            for _ in range(3 if smoke else 60):
                launchers.modulation_backward(other_grad, *other, other_band, wrap=False)  # other tickets in between
                again = launchers.modulation_backward(grad, *leaves, band, wrap=False, block=block)
                mismatches += any(not torch.equal(a, b) for a, b in zip(again, first))
            zero = tickets_zero()
            report[f"ticket finish [{form}, block {block}]"] = {
                "max_rel_err_vs_float64": err,
                "programs_per_channel": shape[0] * -(-shape[2] * shape[3] * (shape[4] // 2 + 1) // block),
                "repeats_not_bitwise_equal": mismatches,
                "tickets_zero_after": zero,
            }
            if not (err <= 1e-5 and mismatches == 0 and zero):
                failures.append(f"ticket finish [{form}, block {block}]: err {err:.3g}, {mismatches} differ, {zero=}")
    if device.type == "cuda":
        report["cuda graph capture/replay"] = check_cuda_graph(device, shape, failures)
    return report


def check_cuda_graph(device: torch.device, shape, failures: list[str]) -> dict:
    """Eager forward + backward (autograd, the fast path) captured once, replayed on new inputs.

    Captured on the warm-up's stream, whose ticket buffer already exists: the graph holds no zeroing of
    the tickets, so each replay relies on the kernel leaving them at 0.
    """
    report = {}
    for form in FORMS:
        leaves, band = make_inputs(shape, form, device, seed=2)
        static = [t.detach().clone().requires_grad_() for t in leaves]
        static_grad = torch.randn_like(leaves[0])

        def step(ins=static, g=static_grad, band=band):
            return torch.autograd.grad(spectral_modulation(*ins, band), ins, g)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):  # the warm-up's stream: its tickets exist, no zeroing captured
            out = step()
        mismatches = 0
        for r in range(20):
            new, _ = make_inputs(shape, form, device, seed=100 + r)
            new_grad = torch.randn_like(static_grad)
            with torch.no_grad():
                for s, t in zip(static, new):
                    s.copy_(t)
                static_grad.copy_(new_grad)
            graph.replay()
            eager = step([t.detach().clone().requires_grad_() for t in new], new_grad)
            mismatches += any(not torch.equal(a, b) for a, b in zip(out, eager))
        torch.cuda.synchronize()
        zero = tickets_zero()
        report[form] = {"replays": 20, "replays_not_bitwise_equal_to_eager": mismatches, "tickets_zero_after": zero}
        if mismatches or not zero:
            failures.append(f"CUDA graph [{form}]: {mismatches} replays differ from eager, tickets zero: {zero}")
        del graph
    return report


def check_opcheck(device: torch.device, smoke: bool, failures: list[str]) -> dict:
    report = {}
    leaves, band = make_inputs((2, 3, 5, 6, 7), "band", device)
    leaves = [t.requires_grad_() for t in leaves]
    grad = torch.randn_like(leaves[0])
    X = leaves[0]
    cases = {
        "spectral_modulation": (torch.ops.spectral3d.spectral_modulation.default, (*leaves, band)),
        "spectral_modulation_backward": (
            torch.ops.spectral3d.spectral_modulation_backward.default,
            (grad, *[t.detach() for t in leaves], band),
        ),
        "spectral_features": (torch.ops.spectral3d.spectral_features.default, (X,)),
        "spectral_features_backward": (
            torch.ops.spectral3d.spectral_features_backward.default,
            (torch.randn(2, 9, 5, 6, 4, device=device), X.detach()),
        ),
    }
    for name, (op, args) in cases.items():
        try:
            torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor") if smoke else DEFAULT_TESTS)
            report[f"opcheck {name}"] = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded, reported, exit status set
            report[f"opcheck {name}"] = f"FAILED: {exc}"
            failures.append(f"opcheck {name}: {exc}")
    return report


def check_compiled(device: torch.device, backend: str, smoke: bool, failures: list[str]) -> dict:
    """``torch.compile(fullgraph=True)`` of the op (each ``f_m`` form) and of SAMB (each mode) vs eager."""
    report: dict = {}
    for form in ("band",) if smoke else FORMS:
        leaves, band = make_inputs((2, 8, 12, 10, 14), form, device, seed=3)
        leaves = [t.requires_grad_() for t in leaves]
        grad = torch.randn_like(leaves[0])
        try:
            compile_counts.fresh()
            compiled = torch.compile(
                lambda *t, band=band: spectral_modulation(*t, band), backend=backend, fullgraph=True
            )
            out_c = compiled(*leaves)
            grads_c = torch.autograd.grad(out_c, leaves, grad)
            out_e = spectral_modulation(*leaves, band)
            grads_e = torch.autograd.grad(out_e, leaves, grad)
            err = max([rel_err(out_c, out_e.detach())] + [rel_err(a, b) for a, b in zip(grads_c, grads_e)])
            bitwise = torch.equal(out_c, out_e) and all(torch.equal(a, b) for a, b in zip(grads_c, grads_e))
            counts = compile_counts.counts()
            report[f"compile spectral_modulation[{form}]"] = {"rel_err": err, "bitwise": bitwise, **counts}
            if not err <= 1e-6:
                failures.append(f"compiled spectral_modulation[{form}] differs from eager: {err:.3g}")
        except Exception as exc:  # noqa: BLE001
            report[f"compile spectral_modulation[{form}]"] = f"FAILED: {exc}"
            failures.append(f"compile spectral_modulation[{form}]: {exc}")
    for fm_mode in ("band",) if smoke else FORMS_SAMB:
        torch.manual_seed(0)
        m = SAMB(16, fm_mode=fm_mode).to(device)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
        x = torch.randn(2, 16, 9, 10, 11, device=device, requires_grad=True)
        try:
            compile_counts.fresh()
            y_c = torch.compile(m, fullgraph=True, backend=backend)(x)
            (gx_c,) = torch.autograd.grad(y_c.square().sum(), x)
            y_e = m(x)
            (gx_e,) = torch.autograd.grad(y_e.square().sum(), x)
            err = max(rel_err(y_c, y_e.detach().double()), rel_err(gx_c, gx_e.double()))
            report[f"compile SAMB[{fm_mode}]"] = {"rel_err": err, **compile_counts.counts()}
            if not err <= 1e-4:
                failures.append(f"compiled SAMB[{fm_mode}] differs from eager: {err:.3g}")
        except Exception as exc:  # noqa: BLE001
            report[f"compile SAMB[{fm_mode}]"] = f"FAILED: {exc}"
            failures.append(f"compile SAMB[{fm_mode}]: {exc}")
    return report


# --------------------------------------------------------------------------------------------
# tiers 2, 5, 6: op rows
# --------------------------------------------------------------------------------------------
def op_providers(leaves, band, grad):
    """``{provider: (forward, forward + backward)}`` closures: the Triton op and eager PyTorch."""
    out = {}
    for provider, fn in (("triton", spectral_modulation), ("eager", spectral_modulation_reference)):
        plain = [t.detach() for t in leaves]
        trained = [t.detach().clone().requires_grad_() for t in leaves]

        def fwd(fn=fn, plain=plain) -> None:
            with torch.no_grad():
                fn(*plain, band)

        def both(fn=fn, trained=trained) -> None:
            torch.autograd.grad(fn(*trained, band), trained, grad)

        out[provider] = (fwd, both)
    return out


def measure_modulation(shape, form, device, timer, copy_gbs, rows, failures) -> None:
    leaves, band = make_inputs(shape, form, device)
    grad = torch.randn_like(leaves[0])
    err = check_against_float64(leaves, band, grad)
    if not err <= 1e-5:
        failures.append(f"spectral_modulation {shape} {form}: max relative error {err:.3g} > 1e-5")
    timed = {}
    for provider, (fwd, both) in op_providers(leaves, band, grad).items():
        for kind, fn in (("fwd", fwd), ("fwd+bwd", both)):
            timed[(provider, kind)] = timer.all(fn)
    for (provider, kind), t in timed.items():
        eager = timed[("eager", kind)]
        row = {"op": "spectral_modulation", "shape": list(shape), "f_m": form, "pass": kind, "provider": provider, **t}
        row.update(floor_fields(row, FLOOR_BYTES[("modulation", kind, form)] * leaves[0].numel(), copy_gbs))
        row["speedup_vs_eager"] = eager["ms"] / t["ms"]
        if t["device_ms"]:
            row["speedup_vs_eager_device"] = eager["device_ms"] / t["device_ms"]
        if provider == "triton":
            row["max_rel_err"] = err
        rows.append(row)


def measure_compile_provider(shape, form, device, timer, copy_gbs, backend, rows) -> None:
    """``torch.compile`` of the real-view formulation; fills ``speedup_vs_compile`` of the Triton rows."""
    leaves, band = make_inputs(shape, form, device)
    xr = torch.view_as_real(leaves[0]).detach().clone()
    plain = [xr, *[t.detach().clone() for t in leaves[1:]]]
    trained = [t.clone().requires_grad_() for t in plain]
    grad_r = torch.randn_like(xr)
    compile_counts.fresh()
    compiled = torch.compile(modulation_real_view, backend=backend, dynamic=False)

    def fwd() -> None:
        with torch.no_grad():
            compiled(*plain, band)

    def both() -> None:
        torch.autograd.grad(compiled(*trained, band), trained, grad_r)

    for kind, fn in (("fwd", fwd), ("fwd+bwd", both)):
        t = timer.all(fn, host=False)
        row = {"op": "spectral_modulation", "shape": list(shape), "f_m": form, "pass": kind, "provider": "compile", **t}
        row.update(floor_fields(row, FLOOR_BYTES[("modulation", kind, form)] * leaves[0].numel(), copy_gbs))
        row.update(compile_counts.counts())
        rows.append(row)
        for r in rows:
            same = r["op"] == "spectral_modulation" and r["shape"] == list(shape) and r["f_m"] == form
            if same and r["pass"] == kind:
                r["speedup_vs_compile"] = t["ms"] / r["ms"]
                if t["device_ms"] and r.get("device_ms"):
                    r["speedup_vs_compile_device"] = t["device_ms"] / r["device_ms"]


def measure_features(shape, device, timer, copy_gbs, rows) -> None:
    (X, *_), _ = make_inputs(shape, "channel", device)
    for provider, fn in (("triton", spectral_features), ("eager", spectral_features_reference)):
        Xg = X.detach().clone().requires_grad_()
        g = torch.randn_like(fn(X))

        def fwd(fn=fn) -> None:
            with torch.no_grad():
                fn(X)

        def both(fn=fn, Xg=Xg, g=g) -> None:
            torch.autograd.grad(fn(Xg), Xg, g)

        for kind, f in (("fwd", fwd), ("fwd+bwd", both)):
            row = {"op": "spectral_features", "shape": list(shape), "pass": kind, "provider": provider}
            row.update(timer.all(f, host=False))
            row.update(floor_fields(row, FLOOR_BYTES[("features", kind, None)] * X.numel(), copy_gbs))
            rows.append(row)


# --------------------------------------------------------------------------------------------
# tiers 3, 4: SAMB and SAMBlock
# --------------------------------------------------------------------------------------------
def reference_path():
    """Context: SAMB (and whatever builds on it) runs the spectral ops as plain PyTorch autograd."""
    return use_kernels("autograd", ops=SPECTRAL_OPS)


def _is_fft(kernel: str) -> bool:
    name = kernel.lower()
    return "fft" in name or "dft" in name


def _profile_fields(prefix: str, per_kernel: dict[str, float]) -> dict:
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1])[:6]
    return {
        f"{prefix}fft_ms": sum(v for k, v in per_kernel.items() if _is_fft(k)),
        f"{prefix}top_kernels": [[k[:90], round(v, 4)] for k, v in top],
    }


def block_module(name: str, dim: int, device: torch.device) -> torch.nn.Module:
    if name == "SAMBlock":
        from spectral3d.layers.samblock import SAMBlock

        module = SAMBlock(dim)
    else:
        module = SAMB(dim, fm_mode=name[5:-1])
    torch.manual_seed(0)
    module = module.to(device)
    with torch.no_grad():  # away from the identity init: every parameter matters
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module


def measure_block(name, shape, device, timer, rows, backend=None) -> None:
    """Forward + backward of one block, ops vs the reference path (``backend``: compiled, else eager)."""
    module = block_module(name, shape[1], device)
    x = torch.randn(shape, device=device, requires_grad=True)
    g = torch.randn(shape, device=device)
    params = [p for p in module.parameters() if p.requires_grad]
    results = {}
    for provider in ("ops", "reference"):
        context = reference_path() if provider == "reference" else use_kernels("triton", ops=SPECTRAL_OPS)
        with context:  # also around the calls: Dynamo reads the mode while tracing and guards on it
            counts = None
            fn = module
            if backend is not None:
                compile_counts.fresh()
                fn = torch.compile(module, backend=backend, dynamic=False)

            def step(fn=fn) -> None:
                torch.autograd.grad(fn(x), [x, *params], g)

            step()
            if backend is not None:
                counts = compile_counts.counts()
            device_ms, per_kernel = timer.device(step)
            results[provider] = {"ms": timer.wall(step), "device_ms": device_ms, **_profile_fields("", per_kernel)}
            if counts is not None:
                results[provider].update(counts)
    ops, ref = results["ops"], results["reference"]
    row = {
        "op": name,
        "shape": list(shape),
        "pass": "fwd+bwd",
        "provider": f"compiled ({backend})" if backend else "eager",
        "ms": ops["ms"],
        "reference_ms": ref["ms"],
        "speedup_vs_reference": ref["ms"] / ops["ms"],
        "ops": ops,
        "reference": ref,
    }
    if ops["device_ms"]:
        row["device_ms"] = ops["device_ms"]
        row["reference_device_ms"] = ref["device_ms"]
        row["speedup_vs_reference_device"] = ref["device_ms"] / ops["device_ms"]
        if ops["fft_ms"]:
            row["fft_ceiling_vs_reference"] = ref["device_ms"] / ops["fft_ms"]
    rows.append(row)


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def print_rows(rows: list[dict]) -> None:
    def fmt(v: object, spec: str = ".3f") -> str:
        return "-" if v is None else format(v, spec)

    print(f"\n{'op':<20}{'shape':<22}{'f_m':<8}{'pass':<9}{'provider':<10}{'wall ms':>9}{'dev ms':>9}{'graph ms':>9}"
          f"{'host us':>9}{'%fl wall':>9}{'%fl dev':>8}{'%fl gr':>8}{'x eager':>8}{'x comp':>7}")  # fmt: skip
    for r in rows:
        if r["op"] in ("spectral_modulation", "spectral_features"):
            print(
                f"{r['op']:<20}{str(tuple(r['shape'])):<22}{r.get('f_m') or '-':<8}{r['pass']:<9}{r['provider']:<10}"
                f"{fmt(r['ms'], '.4f'):>9}{fmt(r.get('device_ms'), '.4f'):>9}{fmt(r.get('graph_ms'), '.4f'):>9}"
                f"{fmt(r.get('host_us'), '.1f'):>9}{fmt(r.get('pct_floor_wall'), '.0f'):>9}"
                f"{fmt(r.get('pct_floor_device'), '.0f'):>8}{fmt(r.get('pct_floor_graph'), '.0f'):>8}"
                f"{fmt(r.get('speedup_vs_eager'), '.2f'):>8}{fmt(r.get('speedup_vs_compile'), '.2f'):>7}"
            )
        else:
            print(
                f"{r['op']:<20}{str(tuple(r['shape'])):<22}{'-':<8}{r['pass']:<9}{r['provider'][:10]:<10}"
                f"{fmt(r['ms']):>9}  reference {fmt(r['reference_ms'])} ms, x{fmt(r['speedup_vs_reference'], '.2f')};"
                f" device x{fmt(r.get('speedup_vs_reference_device'), '.2f')},"
                f" FFT ceiling x{fmt(r.get('fft_ceiling_vs_reference'), '.2f')}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes: checks the wiring, not speed")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT or benchmarks/results)")
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile checks or rows")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="skip any unit of work that would end past this many seconds (the JSON says what ran)",
    )
    args = parser.parse_args(argv)
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error(f"--budget-s: expected a positive number of seconds, got {args.budget_s}")

    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        print("no CUDA device: run with --smoke for the CPU wiring check", file=sys.stderr)
        return 2
    backend = None if args.skip_compile else "aot_eager" if args.smoke else "inductor"
    start = time.perf_counter()
    timer = Timer(device)
    copy_gbs = copy_bandwidth(device, timer, args.smoke)
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu-smoke"
    print(f"device: {card if device.type == 'cuda' else platform.processor() or 'cpu'}; copy {copy_gbs:.0f} GB/s")
    out_dir = args.out or Path(os.environ.get("OUT") or Path(__file__).parent / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in card.lower()).strip("-")
    path = out_dir / f"gpu_spectral_{slug}_{dt.date.today().isoformat()}.json"
    rows: list[dict] = []
    failures: list[str] = []
    checks: dict = {}
    skipped: list[str] = []
    done_tiers: list[str] = []

    def save(complete: bool = False) -> None:
        """Rewrite the JSON (atomically) with everything measured so far."""
        result = {
            "device": card,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "triton": _triton_version(),
            "smoke": args.smoke,
            "complete": complete and not skipped,
            "tiers_done": done_tiers,
            "skipped_over_budget": skipped,
            "budget_s": args.budget_s,
            "kernel_mode": "triton",
            "copy_bandwidth_gbs": copy_gbs,
            "checks": checks,
            "failures": failures,
            "rows": rows,
            "seconds": time.perf_counter() - start,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str))
        os.replace(tmp, path)

    def run(what: str, cost: str, fn: Callable[[], object]) -> None:
        elapsed = time.perf_counter() - start
        if args.budget_s is not None and elapsed + (0 if args.smoke else COST_S[cost]) > args.budget_s:
            skipped.append(what)
            print(f"[{elapsed:6.1f} s] over --budget-s {args.budget_s:g}: skipping {what}", flush=True)
            return
        fn()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"[{time.perf_counter() - start:6.1f} s] {what}", flush=True)
        save()

    shapes = SMOKE_SHAPES if args.smoke else TARGETED

    def measure_op(shape: tuple[int, ...], form: str) -> None:
        measure_modulation(shape, form, device, timer, copy_gbs, rows, failures)

    def measure_compiled_op(shape: tuple[int, ...], form: str) -> None:
        measure_compile_provider(shape, form, device, timer, copy_gbs, backend, rows)

    block_shapes = SMOKE_SAMB_SHAPES if args.smoke else SAMB_SHAPES

    def tier_checks() -> None:
        checks.update(check_opcheck(device, args.smoke, failures))
        checks.update(check_ticket_finish(device, args.smoke, failures))
        if backend is not None:
            checks.update(check_compiled(device, backend, args.smoke, failures))
        for name, value in checks.items():
            print(f"check {name}: {value}")

    run("checks", "checks", tier_checks)
    done_tiers.append("checks")
    for shape in shapes:
        for form in FORMS:
            run(f"ops {shape} {form}", "op", lambda s=shape, f=form: measure_op(s, f))
    done_tiers.append("ops")
    for shape in block_shapes:
        for name in ("SAMB[band]",) if args.smoke else ("SAMB[channel]", "SAMB[band]", "SAMBlock"):
            run(f"blocks {name} {shape}", "block", lambda n=name, s=shape: measure_block(n, s, device, timer, rows))
    done_tiers.append("blocks")
    if backend is not None:
        for name in ("SAMB[band]",) if args.smoke else ("SAMB[band]", "SAMBlock"):
            run(f"compiled blocks {name} {block_shapes[0]}", "compiled block",
                lambda n=name: measure_block(n, block_shapes[0], device, timer, rows, backend))  # fmt: skip
        done_tiers.append("compiled blocks")
        for shape in shapes:
            for form in FORMS:
                run(f"compile {shape} {form}", "compile", lambda s=shape, f=form: measure_compiled_op(s, f))
        done_tiers.append("compile")
    for shape in [] if args.smoke else REPORTED:
        for form in FORMS:
            run(f"extras ops {shape} {form}", "op", lambda s=shape, f=form: measure_op(s, f))
    for shape in shapes + ([] if args.smoke else REPORTED):
        run(f"extras features {shape}", "features", lambda s=shape: measure_features(s, device, timer, copy_gbs, rows))
    done_tiers.append("extras")

    print_rows(rows)
    save(complete=True)
    print(f"\nwrote {path} ({time.perf_counter() - start:.0f} s)")
    for failure in failures:
        print(f"CHECK FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


if __name__ == "__main__":
    with use_kernels("triton", ops=SPECTRAL_OPS):  # CUDA, or the interpreter for --smoke: never silently eager
        sys.exit(main())
