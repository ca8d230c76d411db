"""Depthwise 3-D convolution on one GPU: correctness, the op against cuDNN and ATen, whole models (issue 14).

One command, from the source tree, under 8 minutes on an H100/H200 (torch 2.11 + Triton 3.6)::

    PYTHONPATH=. python benchmarks/gpu_depthwise.py --budget-s 300   # writes $OUT or benchmarks/results/gpu/
    PYTHONPATH=. TRITON_INTERPRET=1 python benchmarks/gpu_depthwise.py --smoke --out /tmp/dw   # CPU wiring

Tiers, each rewriting ``gpu_depthwise_<card>_<date>.json`` and ``.md`` before the next starts:

1. ``correctness``: for every op shape timed below, the Triton op's output and its three gradients
   against float64 ``F.conv3d(groups=C)`` on the same (rounded) inputs (relative error <= 1e-5 in fp32,
   2^-8 in bf16), the weight and bias gradients bitwise equal over two runs; ``torch.library.opcheck`` of
   both ops; ``torch.compile`` (fullgraph, inductor) of a Gated-CNN block (a channel-slice input) equal to
   eager; the autocast dtype. The shapes come from a census of each model's ``DepthwiseConv3d`` inputs on ``meta``.
2. ``must``: ``convnextv2_atto_3d``'s stage shapes at 96³ x 8 (C = 40, 80, 160, 320 on 24³ ... 3³), bf16
   channels-last, forward and forward+backward, ms, TMAC/s (nominal ``N C D H W k³`` MACs per pass) and %
   of the byte floor (2 tensor passes forward, 5 forward+backward, at the measured copy bandwidth) for
   cuDNN as dispatched, cuDNN with ``benchmark=True``, ATen's native kernel (cuDNN off) and the Triton op;
   then the atto train step and inference, stock (``use_kernels("autograd")``: ``F.conv3d``) vs Triton,
   calls interleaved, with MONAI's DenseNet121 (or ``densenet121_3d`` without MONAI) in the same run.
3. ``rest``: whole models ``mambaout_femto_3d``, ``samnet_tiny``, ``desamba_spine_tiny`` (96³ x 8), then
   ``desamba_spine`` at (3, 64, 96, 96) x 2 on its own budget (gradient checkpointing if it does not fit);
   atto's shapes in fp32 NCDHW (also the native-NCDHW kernels); the census shapes of ``mambaout_femto_3d``,
   ``samnet_tiny`` (SAMBlock's k = 3 included) and ``desamba_spine`` at its paper input, bf16, in the
   layout each model gives them.
4. ``sweep``: other tile configurations at two atto shapes, to tune ``forward_config`` / ``wgrad_config``.

``--budget-s`` stops starting new work in tiers 3-4 (the JSON says what was skipped). A benchmark records;
only a failed correctness check makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from gpu_timing import Timer, copy_bandwidth

import backbones3d
from spectral3d.flops import model_inputs
from spectral3d.layers import DepthwiseConv3d, GatedCNNBlock3d
from spectral3d.ops import depthwise_conv3d, use_kernels
from spectral3d.ops.testing import rel_err

BENCH_DIR = Path(__file__).resolve().parent
OP = {"depthwise_conv3d"}
RTOL = {torch.float32: 1e-5, torch.bfloat16: 2**-8, torch.float16: 2**-10}
ATTO = [(8, 40, 24, 24, 24), (8, 80, 12, 12, 12), (8, 160, 6, 6, 6), (8, 320, 3, 3, 3)]
SMOKE_ATTO = [(2, 8, 5, 4, 6), (2, 16, 3, 3, 3)]
CENSUS = {  # model -> (input (C, D, H, W), batch) of the census and of the model timings
    "mambaout_femto_3d": ((3, 96, 96, 96), 8),
    "samnet_tiny": ((3, 96, 96, 96), 8),
    "desamba_spine": ((3, 64, 96, 96), 2),
}
MODELS = ["convnextv2_atto_3d", "mambaout_femto_3d", "samnet_tiny", "desamba_spine_tiny"]
SWEEP = [(256, 8, 8), (512, 8, 8), (128, 8, 4), (128, 16, 8), (64, 32, 8), (128, 32, 8), (32, 32, 4)]
SWEEP_WGRAD = [(64, 8, 8), (32, 8, 4), (128, 8, 8), (32, 16, 8), (16, 32, 8)]


def _bench_conftest():
    """benchmarks/conftest.py (Workload, timing, memory) imported under its own name."""
    spec = importlib.util.spec_from_file_location("bench_conftest", BENCH_DIR / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# inputs, variants, measurements
# --------------------------------------------------------------------------------------------
def make_input(shape, layout: str, dtype: torch.dtype, device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(shape, device=device, generator=g).to(dtype)
    return x.to(memory_format=torch.channels_last_3d) if layout == "channels_last" else x.contiguous()


def stock_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return F.conv3d(x, w, b, padding=[k // 2 for k in w.shape[2:]], groups=x.shape[1])


def variants(device: torch.device) -> dict[str, tuple[Callable, Callable]]:
    """name -> (function, context factory). Stock ones are F.conv3d under cuDNN settings."""
    triton = (depthwise_conv3d, lambda: use_kernels("triton", ops=OP))
    if device.type != "cuda":
        return {"dispatched": (stock_conv, contextlib.nullcontext), "triton": triton}
    cudnn = torch.backends.cudnn
    return {
        "dispatched": (stock_conv, contextlib.nullcontext),
        "cudnn_benchmark": (stock_conv, lambda: cudnn.flags(enabled=True, benchmark=True, deterministic=False)),
        "aten_native": (stock_conv, lambda: cudnn.flags(enabled=False)),
        "triton": triton,
    }


def check_op(x, w, b, failures: list[str], label: str) -> dict:
    """The Triton op vs float64 (output, dx, dw, db) and bitwise-repeatable dw/db."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    g = torch.randn_like(x)
    with use_kernels("triton", ops=OP):
        y = depthwise_conv3d(*leaves)
        grads = torch.autograd.grad(y, leaves, g)
        again = torch.ops.spectral3d.depthwise_conv3d_backward(g, x, w, False, True, True)
    ref_in = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref = stock_conv(*ref_in)
    ref_grads = torch.autograd.grad(ref, ref_in, g.double())
    errs = [rel_err(y, ref.detach())] + [rel_err(a, r) for a, r in zip(grads, ref_grads)]
    bitwise = bool(torch.equal(grads[1], again[1]) and torch.equal(grads[2], again[2]))
    tol = RTOL[x.dtype]
    if not max(errs) <= tol:
        failures.append(f"{label}: max relative error {max(errs):.3g} > {tol:g} (y, dx, dw, db: {errs})")
    if not bitwise:
        failures.append(f"{label}: weight/bias gradients differ between two runs")
    fmt_ok = y.is_contiguous(memory_format=torch.channels_last_3d if not x.is_contiguous() else torch.contiguous_format)
    if not fmt_ok:
        failures.append(f"{label}: output strides {y.stride()} do not keep x's memory format")
    return {"max_rel_err": max(errs), "rel_errs": errs, "bitwise_repeatable": bitwise, "keeps_format": fmt_ok}


def measure_op(shape, k, dtype, layout, bench, copy_gbs, device, failures, tier, source, extra=None) -> list[dict]:
    """Correctness, then every variant forward and forward+backward at one shape."""
    N, C, D, H, W = shape
    ks = (k,) * 3 if isinstance(k, int) else tuple(k)
    x = make_input(shape, layout, dtype, device)
    w = (0.1 * torch.randn(C, 1, *ks, device=device)).to(dtype)
    b = torch.randn(C, device=device).to(dtype)
    label = f"{source} {tuple(shape)} k{ks} {str(dtype)[6:]} {layout}"
    check = check_op(x, w, b, failures, label)
    g = torch.randn_like(x)
    macs = N * C * D * H * W * math.prod(ks)
    numel_bytes = x.numel() * x.element_size()
    fns = dict(variants(device))
    fns.update(extra or {})
    times: dict[tuple[str, str], float] = {}
    for name, (fn, ctx) in fns.items():
        leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
        with ctx():
            with torch.no_grad():
                times[(name, "fwd")] = bench(lambda fn=fn: fn(x, w, b))
            times[(name, "fwd+bwd")] = bench(lambda fn=fn, lv=leaves: torch.autograd.grad(fn(*lv), lv, g))
    rows = []
    for (name, kind), ms in times.items():
        factor, passes = (2, 1) if kind == "fwd" else (5, 3)
        stock = [v for (n, p), v in times.items() if p == kind and not n.startswith("triton")]
        row = {
            "tier": tier, "source": source, "shape": list(shape), "kernel": list(ks), "dtype": str(dtype)[6:],
            "layout": layout, "pass": kind, "variant": name, "ms": ms,
            "tmacs": passes * macs / (ms * 1e-3) / 1e12,
            "pct_floor": 100 * (factor * numel_bytes / (copy_gbs * 1e9) * 1e3) / ms,
            "speedup_vs_best_stock": min(stock) / ms if stock else None,
        }  # fmt: skip
        if name == "triton":
            row.update(check)
        rows.append(row)
    return rows


def census(
    name: str, input_size: tuple[int, ...], batch: int
) -> list[tuple[tuple[int, ...], tuple[int, ...], str, int]]:
    """``(input shape, kernel, layout, count)`` of every DepthwiseConv3d call in one forward, on ``meta``."""
    try:
        with torch.device("meta"):
            model = backbones3d.create_model(name)
    except NotImplementedError:  # a constructor that reads tensor values: build on CPU
        model = backbones3d.create_model(name).to("meta")
    args, _ = model_inputs(model.pretrained_cfg, input_size, batch, device="meta")
    seen: Counter = Counter()

    def hook(module, inputs, output) -> None:
        x = inputs[0]
        layout = "contiguous" if x.is_contiguous() else "channels_last"
        seen[(tuple(x.shape), tuple(module.kernel_size), layout)] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, DepthwiseConv3d)]
    with torch.no_grad():
        model.eval()(*args)
    for h in handles:
        h.remove()
    return [(s, k, lay, n) for (s, k, lay), n in sorted(seen.items())]


def measure_model(bc, name, batch, size, settings, rounds, rows, tier, modes=("triton", "stock"), module=None) -> None:
    """Train step (AdamW) and inference, stock (F.conv3d) vs Triton interleaved, vol/s and peak memory."""
    ctx = {"triton": lambda: use_kernels("triton", ops=OP), "stock": lambda: use_kernels("autograd", ops=OP)}
    # conftest's build_workload: bf16 autocast and, for the convolutional families, channels-last on CUDA
    work = bc.build_workload(module if module is not None else name, batch, size, settings, name=name)
    for phase in ("train", "infer"):
        step = getattr(work, f"{phase}_step")
        for mode in modes:  # warm-up (compiles the kernels, autotunes nothing)
            with ctx[mode]():
                bc.time_call(step, settings.device, 1, 1)
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(rounds):
            for mode in modes:
                with ctx[mode]():
                    times[mode].append(bc.time_call(step, settings.device, 1, 0))
        peaks = {}
        for mode in modes:
            with ctx[mode]():
                peaks[mode] = bc.peak_extra_memory(step, settings.device)
        med = {m: sorted(v)[len(v) // 2] for m, v in times.items()}
        for mode in modes:
            rows.append(
                {
                    "tier": tier,
                    "model": name,
                    "batch": batch,
                    "input": list(size),
                    "phase": phase,
                    "kernel": mode if len(modes) > 1 else "stock",
                    "ms": med[mode] * 1e3,
                    "vol_s": batch / med[mode],
                    "peak_mib": peaks[mode] / 2**20 if peaks[mode] is not None else None,
                    "speedup_vs_stock": med["stock"] / med[mode] if "stock" in med else None,
                    "checkpointing": bool(getattr(work.model, "grad_checkpointing", False)),
                }  # fmt: skip
            )
    del work


# --------------------------------------------------------------------------------------------
# checks beyond the op shapes
# --------------------------------------------------------------------------------------------
def extra_checks(device: torch.device, failures: list[str], smoke: bool) -> dict:
    report: dict = {}
    x = make_input((2, 8, 5, 6, 7), "channels_last", torch.float32, device).requires_grad_()
    w = torch.randn(8, 1, 3, 5, 7, device=device, requires_grad=True)
    b = torch.randn(8, device=device, requires_grad=True)
    with use_kernels("triton", ops=OP):
        for name, op, args in (
            ("opcheck depthwise_conv3d", torch.ops.spectral3d.depthwise_conv3d.default, (x, w, b)),
            (
                "opcheck depthwise_conv3d_backward",
                torch.ops.spectral3d.depthwise_conv3d_backward.default,
                (torch.randn_like(x), x.detach(), w.detach(), True, True, True),
            ),
        ):
            try:
                utils = ("test_schema", "test_faketensor") if smoke else None
                torch.library.opcheck(op, args, **({"test_utils": utils} if utils else {}))
                report[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - recorded, reported, exit status set
                report[name] = f"FAILED: {exc}"
                failures.append(f"{name}: {exc}")
        with torch.autocast(device.type, dtype=torch.bfloat16):
            dtype_op, dtype_ref = depthwise_conv3d(x, w, b).dtype, stock_conv(x, w, b).dtype
        report["autocast dtype (op, F.conv3d)"] = [str(dtype_op), str(dtype_ref)]
        if dtype_op != dtype_ref:
            failures.append(f"autocast: the op gives {dtype_op}, F.conv3d {dtype_ref}")
        if smoke:
            return report
        for label, block, shape in (("GatedCNNBlock3d", GatedCNNBlock3d(24), (2, 24, 9, 10, 11)),):
            torch.manual_seed(0)
            block = block.to(device)
            xin = make_input(shape, "channels_last", torch.float32, device).requires_grad_()
            try:
                torch._dynamo.reset()
                y_c = torch.compile(block, fullgraph=True)(xin)
                (gx_c,) = torch.autograd.grad(y_c.square().sum(), xin)
                y_e = block(xin)
                (gx_e,) = torch.autograd.grad(y_e.square().sum(), xin)
                err = max(rel_err(y_c, y_e.detach().double()), rel_err(gx_c, gx_e.double()))
                report[f"compile {label} fullgraph vs eager rel err"] = err
                if not err <= 1e-4:
                    failures.append(f"compiled {label} differs from eager: {err:.3g}")
            except Exception as exc:  # noqa: BLE001
                report[f"compile {label}"] = f"FAILED: {exc}"
                failures.append(f"compile {label}: {exc}")
    return report


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    lines = [
        f"# gpu_depthwise: {result['device']}, {result['date'][:10]}",
        "",
        f"torch {result['torch']}, Triton {result['triton']}, commit {result['git']}; copy bandwidth "
        f"{result['copy_bandwidth_gbs']:.0f} GB/s; tiers done: {', '.join(result['tiers_done']) or 'none'}; "
        f"skipped: {', '.join(result['skipped']) or 'nothing'}; failures: {len(result['failures'])}.",
        "",
        "## The op (ms; Triton TMAC/s and % of the byte floor; speed-up of Triton over the best stock variant)",
        "",
        "| source | shape | k | dtype, layout | pass | dispatched | cudnn bench | ATen native | Triton | other "
        "| TMAC/s | % floor | x best stock | max rel err |",
        "|---|---|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    groups: dict[tuple, dict[str, dict]] = {}
    for r in result["op_rows"]:
        key = (r["source"], tuple(r["shape"]), tuple(r["kernel"]), r["dtype"], r["layout"], r["pass"])
        groups.setdefault(key, {})[r["variant"]] = r
    for (source, shape, k, dtype, layout, kind), vs in groups.items():
        t = vs.get("triton", {})

        def ms(name: str, vs=vs) -> str:
            return f"{vs[name]['ms']:.3f}" if name in vs else "-"

        others = ", ".join(f"{n} {v['ms']:.3f}" for n, v in vs.items() if n.startswith("triton_"))
        err = t.get("max_rel_err")
        lines.append(
            f"| {source} | {shape} | {k} | {dtype}, {layout} | {kind} | {ms('dispatched')} | {ms('cudnn_benchmark')} "
            f"| {ms('aten_native')} | {ms('triton')} | {others or '-'} | {t.get('tmacs', 0):.2f} "
            f"| {t.get('pct_floor', 0):.0f} | {t.get('speedup_vs_best_stock') or 0:.1f} "
            f"| {f'{err:.1e}' if err is not None else '-'} |"
        )
    lines += [
        "",
        "## Models (bf16 autocast; stock = F.conv3d, calls interleaved)",
        "",
        "| model | batch x input | phase | kernel | ms | vol/s | peak MiB | x stock |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in result["model_rows"]:
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "n/a"
        sp = f"{r['speedup_vs_stock']:.2f}" if r["speedup_vs_stock"] else "-"
        ck = " (ckpt)" if r["checkpointing"] else ""
        lines.append(
            f"| {r['model']}{ck} | {r['batch']} x {tuple(r['input'])} | {r['phase']} | {r['kernel']} | {r['ms']:.1f} "
            f"| {r['vol_s']:.1f} | {peak} | {sp} |"
        )
    if result["sweep_rows"]:
        lines += ["", "## Tile sweep (ms; the default config marked)", "", "| kernel | shape | config | ms |"]
        lines.append("|---|---|---|---:|")
        for r in result["sweep_rows"]:
            mark = " (default)" if r["default"] else ""
            lines.append(f"| {r['kernel']} | {tuple(r['shape'])} | {tuple(r['config'])}{mark} | {r['ms']:.3f} |")
    lines += ["", "## Checks", ""] + [f"- {k}: {v}" for k, v in result["checks"].items()]
    lines += [f"- FAILED: {f}" for f in result["failures"]]
    return "\n".join(lines) + "\n"


def _git() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:  # noqa: C901, PLR0915 - one linear script of tiers
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU through TRITON_INTERPRET=1, tiny shapes")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: $OUT or benchmarks/results/gpu)"
    )
    parser.add_argument("--budget-s", type=float, default=420, help="start no new work of tiers 3-4 after this")
    parser.add_argument("--paper-budget-s", type=float, default=90, help="time reserved for desamba_spine")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed steps per model and mode")
    args = parser.parse_args(argv)
    if args.budget_s <= 0 or args.paper_budget_s < 0 or args.rounds < 1:
        parser.error("--budget-s must be > 0, --paper-budget-s >= 0 and --rounds >= 1")
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        print("no CUDA device: run with --smoke (and TRITON_INTERPRET=1) for the CPU wiring check", file=sys.stderr)
        return 2
    if args.smoke and os.environ.get("TRITON_INTERPRET") != "1":
        print("--smoke runs the kernels in Triton's interpreter: set TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    start = time.perf_counter()
    timer = Timer(device)
    bench = timer.wall if cuda else _once  # the smoke run checks wiring, not speed
    bc = _bench_conftest()
    settings = bc.BenchSettings(
        full=True, device=device, patterns=("*",), exclude=(), backends=("eager",),
        rounds=args.rounds, warmup=1, results_dir=args.out or BENCH_DIR / "results" / "gpu",
    )  # fmt: skip
    card = torch.cuda.get_device_name() if cuda else "cpu-smoke"
    out_dir = args.out or Path(os.environ.get("OUT") or BENCH_DIR / "results" / "gpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in card.lower()).strip("-")
    path = out_dir / f"gpu_depthwise_{slug}_{dt.date.today().isoformat()}.json"
    result = {
        "device": card, "machine": platform.node(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "triton": _triton_version(), "git": _git(), "smoke": args.smoke,
        "budget_s": args.budget_s, "complete": False, "tiers_done": [], "skipped": [], "checks": {}, "failures": [],
        "census": {}, "op_rows": [], "model_rows": [], "sweep_rows": [], "copy_bandwidth_gbs": 0.0,
    }  # fmt: skip
    failures: list[str] = result["failures"]

    def elapsed() -> float:
        return time.perf_counter() - start

    def save() -> None:
        result["seconds"] = elapsed()
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, path)
        path.with_suffix(".md").write_text(markdown(result))

    def log(msg: str) -> None:
        print(f"[{elapsed():6.1f} s] {msg}", flush=True)

    def over(what: str, reserve: float = 0.0) -> bool:
        if elapsed() + reserve > args.budget_s:
            result["skipped"].append(what)
            log(f"over --budget-s {args.budget_s:g}: skipping {what}")
            return True
        return False

    result["copy_bandwidth_gbs"] = copy_bandwidth(device, timer, args.smoke)
    log(f"device {card}, copy bandwidth {result['copy_bandwidth_gbs']:.0f} GB/s")

    # ---- shapes: atto's stages, and a census of the other models' depthwise inputs
    atto = SMOKE_ATTO if args.smoke else ATTO
    other: list[tuple[str, tuple, tuple, str]] = []
    if not args.smoke:
        for name, (size, batch) in CENSUS.items():
            found = census(name, size, batch)
            result["census"][name] = [[list(s), list(k), lay, n] for s, k, lay, n in found]
            other += [(name, s, k, lay) for s, k, lay, _ in found]
    else:
        other = [("smoke_samblock", (1, 4, 3, 4, 5), (3, 3, 3), "contiguous")]

    # ---- tier 1 (inside each measurement) + extra checks; tier 2: atto bf16 channels-last, atto train step
    result["checks"] = extra_checks(device, failures, args.smoke)
    log(f"checks: {result['checks']}")
    save()
    half = torch.float32 if args.smoke else torch.bfloat16
    k7 = 3 if args.smoke else 7  # the interpreter runs 27 taps in seconds, 343 in tens of seconds
    for shape in atto:
        result["op_rows"] += measure_op(shape, k7, half, "channels_last", bench, result["copy_bandwidth_gbs"], device,
                                        failures, "must", "atto")  # fmt: skip
        log(f"atto {shape} {str(half)[6:]} channels_last")
        save()
    result["tiers_done"].append("correctness+ops(atto bf16)")
    rounds = 1 if args.smoke else args.rounds
    if args.smoke:  # a 3x3x3 ConvNeXtV2: seconds per step in the interpreter
        tiny = backbones3d.create_model("test_convnextv2_3d", kernel_size=3)
        measure_model(bc, "test_convnextv2_3d", 1, (3, 32, 32, 32), settings, 1, result["model_rows"], "must",
                      module=tiny)  # fmt: skip
    else:
        measure_model(bc, "convnextv2_atto_3d", 8, (3, 96, 96, 96), settings, rounds, result["model_rows"], "must")
    log("model atto")
    save()
    if not args.smoke:
        try:
            from monai.networks.nets import DenseNet121

            dense, dense_name = DenseNet121(spatial_dims=3, in_channels=3, out_channels=2), "monai_DenseNet121"
        except ImportError:
            dense, dense_name = None, "densenet121_3d"
        measure_model(bc, dense_name, 8, (3, 96, 96, 96), settings, rounds, result["model_rows"], "must",
                      modes=("stock",), module=dense)  # fmt: skip
        log(f"model {dense_name}")
    result["tiers_done"].append("must")
    save()

    # ---- tier 3: the rest (models first: their ratios are the headline)
    for name in [] if args.smoke else MODELS[1:]:
        if over(f"model {name}", reserve=args.paper_budget_s):
            continue
        measure_model(bc, name, 8, (3, 96, 96, 96), settings, rounds, result["model_rows"], "rest")
        log(f"model {name}")
        save()
    if not args.smoke and not over("desamba_spine (3, 64, 96, 96) x 2", reserve=args.paper_budget_s / 2):
        size, batch = CENSUS["desamba_spine"]
        for checkpointing in (False, True):
            try:
                measure_model(bc, "desamba_spine", batch, size, settings, 2, result["model_rows"], "paper",
                              module=_paper_model(checkpointing))  # fmt: skip
                break
            except torch.cuda.OutOfMemoryError as exc:
                result["checks"][f"desamba_spine checkpointing={checkpointing}"] = f"out of memory: {exc}"[:300]
                torch.cuda.empty_cache()
        log("desamba_spine paper scale")
        save()
    for shape in atto[:1] if args.smoke else atto:
        if over(f"atto fp32 contiguous {shape}"):
            continue
        native = {"triton_nc_native": (_native_nc, lambda: use_kernels("triton", ops=OP))}
        result["op_rows"] += measure_op(shape, k7, torch.float32, "contiguous", bench, result["copy_bandwidth_gbs"],
                                        device, failures, "rest", "atto", extra=native)  # fmt: skip
        log(f"atto {shape} fp32 contiguous")
        save()
    for source, shape, k, layout in other:
        if over(f"{source} {shape} k{k}"):
            continue
        result["op_rows"] += measure_op(shape, k, half, layout, bench, result["copy_bandwidth_gbs"], device,
                                        failures, "rest", source)  # fmt: skip
        log(f"{source} {shape} k{k} {layout}")
        save()
    result["tiers_done"].append("rest")
    save()

    # ---- tier 4: tile sweep
    sweep_shapes = atto[:1] if args.smoke else [ATTO[0], ATTO[2]]
    for shape in sweep_shapes:
        if over(f"sweep {shape}"):
            continue
        result["sweep_rows"] += sweep(shape, k7, device, bench, args.smoke)
        log(f"sweep {shape}")
        save()
    result["tiers_done"].append("sweep")
    result["complete"] = not result["skipped"]
    save()
    print(markdown(result))
    print(f"wrote {path} and {path.with_suffix('.md')} ({elapsed():.0f} s)")
    for failure in failures:
        print(f"CHECK FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _once(fn: Callable[[], object]) -> float:
    """Milliseconds of one call (``--smoke``: the interpreter makes every call slow)."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def _paper_model(checkpointing: bool) -> torch.nn.Module:
    with torch.device("cuda"):  # 430 M parameters: initialised on the GPU, not the host
        model = backbones3d.create_model("desamba_spine")
    if checkpointing:
        model.set_grad_checkpointing(True)
    return model


def _native_nc(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The op's autograd with the native-NCDHW kernels (``nc_via_cl=False``) instead of the channels-last copy."""
    return _NativeNC.apply(x, w, b)


class _NativeNC(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        from spectral3d.ops._triton import depthwise

        ctx.save_for_backward(x, w)
        return depthwise.forward(x, w, b, wrap=False, nc_via_cl=False)

    @staticmethod
    def backward(ctx, g):
        from spectral3d.ops._triton import depthwise

        x, w = ctx.saved_tensors
        return depthwise.backward(g, x, w, True, True, True, wrap=False, nc_via_cl=False)


def sweep(shape, k: int, device, bench, smoke: bool) -> list[dict]:
    """Forward and weight-gradient kernels at other tiles (bf16 channels-last), the default marked."""
    from spectral3d.ops._triton import depthwise

    dtype = torch.float32 if smoke else torch.bfloat16
    x = make_input(shape, "channels_last", dtype, device)
    C, S = shape[1], math.prod(shape[2:])
    w = (0.1 * torch.randn(C, 1, k, k, k, device=device)).to(dtype)
    g = torch.randn_like(x)
    rows = []
    default_f = depthwise.forward_config(shape[0], C, S, True, interpret=smoke)
    default_w = depthwise.wgrad_config(C, S, k, True, interpret=smoke)
    for kind, configs, default in (("forward", SWEEP, default_f), ("wgrad", SWEEP_WGRAD, default_w)):
        configs = [default] + [depthwise.TileConfig(*c) for c in configs if depthwise.TileConfig(*c) != default]
        for cfg in configs[: 2 if smoke else None]:
            if kind == "forward":
                fn = lambda cfg=cfg: depthwise.forward(x, w, None, wrap=False, config=cfg)  # noqa: E731
            else:
                fn = lambda cfg=cfg: depthwise.backward(g, x, w, False, True, False, wrap=False, wgrad=cfg)  # noqa: E731
            try:
                ms = bench(fn)
            except Exception as exc:  # noqa: BLE001 - a config that does not compile is recorded, not fatal
                ms, cfg_err = float("nan"), str(exc)[:200]
            else:
                cfg_err = None
            rows.append({"kernel": kind, "shape": list(shape), "config": list(cfg), "ms": ms,
                         "default": cfg == default, "error": cfg_err})  # fmt: skip
    return rows


if __name__ == "__main__":
    sys.exit(main())
