"""How the chunked selective scan's time grows with the number of tokens (issue 4: "time grows linearly").

Times :func:`spectral3d.ops.selective_scan.selective_scan_chunked` at Vim-S's mixer width
(``D = 2 · 384``, ``N = 16``, batch 1, float32, ``delta_softplus``, gate and skip on) for
``L = 512, 2048, 8192`` tokens, forward (under ``no_grad``) and forward + backward, and writes
``benchmarks/results/vim_scan_scaling.json`` with the machine, versions, date, the median times and
the ratios ``t(L) / t(512)`` next to ``L / 512``. It also times the sequential reference (forward
only) at the same sizes and a ``chunk_size`` sweep at ``L = 2048``, for context.

Timing *(ours)*: median of ``--repeats`` calls after one warm-up, with ``--threads`` CPU threads
(default 1), on two clocks: wall time (``*_s``) and the process's CPU time (``*_cpu_s``). On a
shared machine the wall time depends on what else runs; with one thread the CPU time is the work
this process did, so its ratios are the repeatable ones. It measures; it asserts nothing.

Usage::

    python benchmarks/vim_scan_scaling.py [--threads 1] [--repeats 3] [--device cpu] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from spectral3d.ops.selective_scan import selective_scan_chunked, selective_scan_reference

LENGTHS = (512, 2048, 8192)
DIM, STATE, BATCH = 2 * 384, 16, 1
CHUNK_SIZE = 16  # selective_scan_chunked's default
CHUNK_SWEEP = (8, 16, 32, 64)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "vim_scan_scaling.json"


def _inputs(length: int, device: torch.device, requires_grad: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(length)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device).requires_grad_(requires_grad)

    return dict(
        u=rnd(BATCH, DIM, length),
        delta=rnd(BATCH, DIM, length),
        A=(-torch.exp(torch.randn(DIM, STATE, generator=g))).to(device).requires_grad_(requires_grad),
        B=rnd(BATCH, STATE, length),
        C=rnd(BATCH, STATE, length),
        D=rnd(DIM),
        z=rnd(BATCH, DIM, length),
        delta_bias=rnd(DIM),
    )


def _median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float]:
    """Median wall-clock and median process-CPU seconds of ``repeats`` calls after one warm-up."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def _forward(length: int, device: torch.device, chunk_size: int = CHUNK_SIZE) -> Callable[[], object]:
    kw = _inputs(length, device, requires_grad=False)

    def run() -> object:
        with torch.no_grad():
            return selective_scan_chunked(**kw, delta_softplus=True, chunk_size=chunk_size)

    return run


def _forward_backward(length: int, device: torch.device) -> Callable[[], object]:
    kw = _inputs(length, device, requires_grad=True)

    def run() -> object:
        out = selective_scan_chunked(**kw, delta_softplus=True, chunk_size=CHUNK_SIZE)
        return torch.autograd.grad(out.sum(), list(kw.values()))

    return run


def _reference_forward(length: int, device: torch.device) -> Callable[[], object]:
    kw = _inputs(length, device, requires_grad=False)

    def run() -> object:
        with torch.no_grad():
            return selective_scan_reference(**kw, delta_softplus=True)

    return run


def measure(threads: int, repeats: int, device: torch.device) -> dict[str, object]:
    """Run every timing and return the JSON payload."""
    torch.set_num_threads(threads)
    rows = []
    for length in LENGTHS:
        row: dict[str, float] = {"tokens": length}
        for name, factory in (
            ("forward", _forward),
            ("forward_backward", _forward_backward),
            ("reference_forward", _reference_forward),
        ):
            row[f"{name}_s"], row[f"{name}_cpu_s"] = _median_seconds(factory(length, device), repeats, device)
            wall, cpu = row[f"{name}_s"], row[f"{name}_cpu_s"]
            print(f"L={length:5d} {name:18s} wall {wall:.4f} s  cpu {cpu:.4f} s", flush=True)
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["tokens_ratio"] = row["tokens"] / base["tokens"]
        for name in ("forward", "forward_backward", "reference_forward"):
            for clock in ("_s", "_cpu_s"):
                row[f"{name}{clock.replace('_s', '_ratio')}"] = row[f"{name}{clock}"] / base[f"{name}{clock}"]
    sweep = []
    for chunk_size in CHUNK_SWEEP:
        seconds, cpu_seconds = _median_seconds(_forward(2048, device, chunk_size), repeats, device)
        sweep.append({"chunk_size": chunk_size, "tokens": 2048, "forward_s": seconds, "forward_cpu_s": cpu_seconds})
        print(f"chunk_size={chunk_size:3d} L=2048 forward wall {seconds:.4f} s  cpu {cpu_seconds:.4f} s", flush=True)
    return {
        "op": "selective_scan_chunked",
        "shape": {"batch": BATCH, "D": DIM, "N": STATE, "dtype": "float32", "chunk_size": CHUNK_SIZE},
        "machine": {
            "device": device.type,
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "threads": threads,
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "host": platform.node(),
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "timing": f"median of {repeats} calls after one warm-up; *_s wall clock, *_cpu_s process CPU time",
        "rows": rows,
        "chunk_size_sweep": sweep,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per size (median)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    args = parser.parse_args()
    payload = measure(args.threads, args.repeats, torch.device(args.device))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
