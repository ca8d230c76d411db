"""Roofline benchmark of the spectral ops and SAMB / SAMBlock on one GPU (DESIGN.md §3, PERF.md).

One command, from the source tree, under 8 minutes on an H100/H200 (torch 2.11 + Triton 3.6)::

    PYTHONPATH=. python benchmarks/gpu_spectral.py            # writes $OUT or benchmarks/results/
    PYTHONPATH=. python benchmarks/gpu_spectral.py --smoke    # CPU, tiny shapes (wiring check)

In one process it measures the device-to-device copy bandwidth, then for PERF.md's four shapes
and the three ``f_m`` forms, forward and forward+backward (gradients for X, f_m, f_e, alpha, beta):
the Triton op, the eager PyTorch reference, and ``torch.compile`` of the real-view reference. Each
row has ms (median of ``triton.testing.do_bench``), GB/s against the memory floor of PERF.md
(forward 24 B per spectrum element with a full ``f_m``, 20 B otherwise; forward+backward 64 / 52 B)
and % of the measured copy bandwidth; ratios vs eager and vs compile. ``spectral_features`` rows
(20 / 48 B) and SAMB / SAMBlock forward+backward (ops vs the reference path) follow. Before timing,
each Triton result is checked against a float64 evaluation (``max_rel_err``), the ops pass
``torch.library.opcheck`` on the GPU and ``torch.compile(SAMB, fullgraph=True)`` is compared with
eager. A benchmark records; only a failed correctness check makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from spectral3d.layers.samb import SAMB, band_index
from spectral3d.ops import (
    spectral_features,
    spectral_features_reference,
    spectral_modulation,
    spectral_modulation_reference,
    use_kernels,
)
from spectral3d.ops.testing import make_modulation_inputs, rel_err

SPECTRAL_OPS = ("spectral_modulation", "spectral_features")

SHAPES = [(8, 96, 32, 32, 32), (8, 192, 16, 16, 16), (2, 48, 64, 64, 64), (1, 32, 128, 128, 128)]
SMOKE_SHAPES = [(2, 1, 3, 4, 5)]
SAMB_SHAPES = [(8, 96, 32, 32, 32), (8, 192, 16, 16, 16)]
SMOKE_SAMB_SHAPES = [(1, 4, 6, 6, 6)]
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


def modulation_real_view(xr, f_m, f_e, alpha, beta, band):  # noqa: ANN001, ANN201
    """Eq. 2 on the real view ``(..., 2)`` of X: the formulation ``torch.compile`` fuses best."""
    R, I = xr[..., 0], xr[..., 1]  # noqa: E741
    phi = torch.sqrt(R * R + I * I)
    fm = f_m[:, :, band] if band is not None else f_m
    g = 1 + alpha.view(1, -1, 1, 1, 1) * (fm - 1)
    return torch.stack([R * g + beta.view(1, -1, 1, 1, 1) * f_e * phi, I * g], dim=-1)


def timer(device: torch.device):  # noqa: ANN201
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=25, rep=100, return_mode="median"))

    def cpu_bench(fn) -> float:  # noqa: ANN001
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return sorted(times)[1]

    return cpu_bench


def copy_bandwidth(device: torch.device, bench, smoke: bool) -> float:
    """GB/s of ``dst.copy_(src)`` counting bytes read + written."""
    n = (4 << 20) if smoke else (256 << 20)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


def make_inputs(shape, form: str, device: torch.device, seed: int = 0):  # noqa: ANN001, ANN201
    band = band_index(shape[2:], NUM_BANDS, device) if form == "band" else None
    return make_modulation_inputs(form, shape, num_bands=NUM_BANDS, device=device, band_index=band, seed=seed)


def check_against_float64(leaves, band, grad) -> float:  # noqa: ANN001
    """Largest norm-wise relative error of the op's output and five gradients vs float64."""
    ins = [t.detach().clone().requires_grad_() for t in leaves]
    out = spectral_modulation(*ins, band)
    grads = torch.autograd.grad(out, ins, grad)
    ref_in = [t.detach().to(torch.complex128 if t.is_complex() else torch.float64).requires_grad_() for t in leaves]
    ref = spectral_modulation_reference(*ref_in, band)
    ref_grads = torch.autograd.grad(ref, ref_in, grad.to(torch.complex128))
    errs = [rel_err(out, ref.detach())] + [rel_err(a, b) for a, b in zip(grads, ref_grads)]
    del ref_in, ref, ref_grads
    return max(errs)


def measure_modulation(shape, form, device, bench, copy_gbs, compile_backend, rows, failures) -> None:  # noqa: ANN001
    leaves, band = make_inputs(shape, form, device)
    X = leaves[0]
    elems = X.numel()
    grad = torch.randn_like(X)
    err = check_against_float64(leaves, band, grad)
    if not err <= 1e-5:
        failures.append(f"spectral_modulation {shape} {form}: max relative error {err:.3g} > 1e-5")

    xr = torch.view_as_real(X).detach().clone()
    real_leaves = [xr, *[t.detach().clone() for t in leaves[1:]]]
    grad_r = torch.view_as_real(grad).contiguous()
    providers = {
        "triton": (lambda *t: spectral_modulation(*t, band), leaves, grad),
        "eager": (lambda *t: spectral_modulation_reference(*t, band), leaves, grad),
    }
    if compile_backend is not None:
        # A fresh Dynamo cache per (shape, form): every variant compiles the same function, and past
        # Dynamo's recompile limit (8 graphs per code object) it silently runs eager instead — the
        # first H100 run (2026-11-26) timed eager code as "compile" from the 16³ shape on.
        torch._dynamo.reset()
        compiled = torch.compile(modulation_real_view, backend=compile_backend, dynamic=False)
        providers["compile"] = (lambda *t: compiled(*t, band), real_leaves, grad_r)
    results = {}
    for provider, (fn, ins, g) in providers.items():
        plain = [t.detach() for t in ins]
        trained = [t.detach().clone().requires_grad_() for t in ins]
        with torch.no_grad():
            results[(provider, "fwd")] = bench(lambda fn=fn, plain=plain: fn(*plain))
        results[(provider, "fwd+bwd")] = bench(
            lambda fn=fn, trained=trained, g=g: torch.autograd.grad(fn(*trained), trained, g)
        )
    for (provider, kind), ms in results.items():
        nbytes = FLOOR_BYTES[("modulation", kind, form)] * elems
        row = {
            "op": "spectral_modulation",
            "shape": list(shape),
            "f_m": form,
            "pass": kind,
            "provider": provider,
            "ms": ms,
            "floor_ms": nbytes / (copy_gbs * 1e9) * 1e3,
            "gbs": nbytes / (ms * 1e-3) / 1e9,
            "pct_copy": 100 * nbytes / (ms * 1e-3) / 1e9 / copy_gbs,
            "speedup_vs_eager": results[("eager", kind)] / ms,
            "speedup_vs_compile": results[("compile", kind)] / ms if ("compile", kind) in results else None,
        }
        if provider == "triton":
            row["max_rel_err"] = err
        rows.append(row)


def measure_features(shape, device, bench, copy_gbs, rows) -> None:  # noqa: ANN001
    (X, *_), _ = make_inputs(shape, "channel", device)
    elems = X.numel()
    for provider, fn in (("triton", spectral_features), ("eager", spectral_features_reference)):
        Xg = X.detach().clone().requires_grad_()
        out = fn(Xg)
        g = torch.randn_like(out)
        with torch.no_grad():
            fwd = bench(lambda fn=fn: fn(X))
        both = bench(lambda fn=fn, Xg=Xg, g=g: torch.autograd.grad(fn(Xg), Xg, g))
        for kind, ms in (("fwd", fwd), ("fwd+bwd", both)):
            nbytes = FLOOR_BYTES[("features", kind, None)] * elems
            rows.append(
                {
                    "op": "spectral_features",
                    "shape": list(shape),
                    "pass": kind,
                    "provider": provider,
                    "ms": ms,
                    "gbs": nbytes / (ms * 1e-3) / 1e9,
                    "pct_copy": 100 * nbytes / (ms * 1e-3) / 1e9 / copy_gbs,
                }
            )


def reference_path():  # noqa: ANN201
    """Context: SAMB (and whatever builds on it) runs the spectral ops as plain PyTorch autograd."""
    return use_kernels("autograd", ops=SPECTRAL_OPS)


def measure_module(name, module, shape, device, bench, rows) -> None:  # noqa: ANN001
    x = torch.randn(shape, device=device, requires_grad=True)
    g = torch.randn(shape, device=device)
    params = [p for p in module.parameters() if p.requires_grad]

    def step() -> None:
        torch.autograd.grad(module(x), [x, *params], g)

    ops_ms = bench(step)
    with reference_path():
        ref_ms = bench(step)
    rows.append(
        {
            "op": name,
            "shape": list(shape),
            "pass": "fwd+bwd",
            "provider": "ops",
            "ms": ops_ms,
            "reference_ms": ref_ms,
            "speedup_vs_reference": ref_ms / ops_ms,
        }
    )


def correctness_checks(device: torch.device, compile_backend, fm_modes, failures: list[str], smoke: bool) -> dict:  # noqa: ANN001
    """opcheck of the four ops on ``device`` and compiled (fullgraph) SAMB vs eager (``smoke``: fewer tests)."""
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
    for fm_mode in fm_modes if compile_backend is not None else ():
        torch.manual_seed(0)
        m = SAMB(16, fm_mode=fm_mode).to(device)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
        x = torch.randn(2, 16, 9, 10, 11, device=device, requires_grad=True)
        try:
            torch._dynamo.reset()
            y_c = torch.compile(m, fullgraph=True, backend=compile_backend)(x)
            (gx_c,) = torch.autograd.grad(y_c.square().sum(), x)
            y_e = m(x)
            (gx_e,) = torch.autograd.grad(y_e.square().sum(), x)
            err = max(rel_err(y_c, y_e.detach().double()), rel_err(gx_c, gx_e.double()))
            report[f"compile SAMB[{fm_mode}] fullgraph vs eager rel err"] = err
            if not err <= 1e-4:
                failures.append(f"compiled SAMB[{fm_mode}] differs from eager: {err:.3g}")
        except Exception as exc:  # noqa: BLE001
            report[f"compile SAMB[{fm_mode}]"] = f"FAILED: {exc}"
            failures.append(f"compile SAMB[{fm_mode}]: {exc}")
    return report


def print_table(rows: list[dict], copy_gbs: float) -> None:
    print(f"\ncopy bandwidth: {copy_gbs:.1f} GB/s")
    head = f"{'op':<20}{'shape':<22}{'f_m':<8}{'pass':<9}{'provider':<9}{'ms':>9}{'GB/s':>9}{'%copy':>7}"
    print(head + f"{'x eager':>9}{'x compile':>10}")
    for r in rows:
        if "gbs" in r:
            line = (
                f"{r['op']:<20}{str(tuple(r['shape'])):<22}{r.get('f_m') or '-':<8}{r['pass']:<9}{r['provider']:<9}"
                f"{r['ms']:>9.4f}{r['gbs']:>9.1f}{r['pct_copy']:>6.0f}%"
            )
            if "speedup_vs_eager" in r:
                line += f"{r['speedup_vs_eager']:>9.2f}"
                line += f"{r['speedup_vs_compile']:>10.2f}" if r["speedup_vs_compile"] else f"{'-':>10}"
            print(line)
        else:
            print(
                f"{r['op']:<20}{str(tuple(r['shape'])):<22}{'-':<8}{r['pass']:<9}{'ops':<9}{r['ms']:>9.3f}"
                f"   reference path {r['reference_ms']:.3f} ms, x{r['speedup_vs_reference']:.2f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes: checks the wiring, not speed")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT or benchmarks/results)")
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile rows or compiled-SAMB check")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no new shape after this many seconds (the JSON, rewritten after every shape, says what ran)",
    )
    args = parser.parse_args(argv)
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error(f"--budget-s: expected a positive number of seconds, got {args.budget_s}")

    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        print("no CUDA device: run with --smoke for the CPU wiring check", file=sys.stderr)
        return 2
    compile_backend = None if args.skip_compile else "aot_eager" if args.smoke else "inductor"
    bench = timer(device)
    start = time.perf_counter()
    copy_gbs = copy_bandwidth(device, bench, args.smoke)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'cpu'}")
    rows: list[dict] = []
    failures: list[str] = []
    checks = correctness_checks(device, compile_backend, ("band",) if args.smoke else FORMS_SAMB, failures, args.smoke)
    for name, value in checks.items():
        print(f"check {name}: {value}")

    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu-smoke"
    out_dir = args.out or Path(os.environ.get("OUT") or Path(__file__).parent / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in card.lower()).strip("-")
    path = out_dir / f"gpu_spectral_{slug}_{dt.date.today().isoformat()}.json"
    skipped: list[str] = []

    def save(complete: bool) -> None:
        """Rewrite the JSON (atomically) with everything measured so far."""
        result = {
            "device": card,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "triton": _triton_version(),
            "smoke": args.smoke,
            "complete": complete,
            "skipped_over_budget": skipped,
            "kernel_mode": "triton",
            "copy_bandwidth_gbs": copy_gbs,
            "checks": checks,
            "failures": failures,
            "rows": rows,
            "seconds": time.perf_counter() - start,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, path)

    def over_budget(what: str) -> bool:
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            skipped.append(what)
            print(f"[{time.perf_counter() - start:6.1f} s] over --budget-s {args.budget_s:g}: skipping {what}")
            return True
        return False

    for shape in SMOKE_SHAPES if args.smoke else SHAPES:
        if over_budget(f"spectral ops {shape}"):
            continue
        for form in FORMS:
            measure_modulation(shape, form, device, bench, copy_gbs, compile_backend, rows, failures)
            print(f"[{time.perf_counter() - start:6.1f} s] spectral_modulation {shape} {form}", flush=True)
        measure_features(shape, device, bench, copy_gbs, rows)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        save(complete=False)

    for shape in SMOKE_SAMB_SHAPES if args.smoke else SAMB_SHAPES:
        if over_budget(f"SAMB/SAMBlock {shape}"):
            continue
        for fm_mode in ("band",) if args.smoke else ("channel", "band"):
            measure_module(f"SAMB[{fm_mode}]", SAMB(shape[1], fm_mode=fm_mode).to(device), shape, device, bench, rows)
        from spectral3d.layers.samblock import SAMBlock

        measure_module("SAMBlock", SAMBlock(shape[1]).to(device), shape, device, bench, rows)
        print(f"[{time.perf_counter() - start:6.1f} s] SAMB/SAMBlock {shape}", flush=True)
        save(complete=False)

    print_table(rows, copy_gbs)
    save(complete=not skipped)
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
