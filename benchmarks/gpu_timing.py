"""Timing shared by the GPU benchmark scripts: wall clock (``do_bench``), CUDA-graph replay, profiler
device time and host time of one call, and the device-to-device copy bandwidth (PERF.md)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import torch


class Timer:
    """The four measurements of a call on CUDA; on CPU (``--smoke``) wall clock only."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.flush_buf = torch.empty(256 << 20, dtype=torch.uint8, device=device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(1000)
            start.record()
            torch.cuda._sleep(1_000_000)
            end.record()
            torch.cuda.synchronize()
            self.cycles_per_ms = 1_000_000 / max(start.elapsed_time(end), 1e-3)

    def wall(self, fn: Callable[[], object]) -> float:
        """Median ms of ``triton.testing.do_bench`` (L2 flushed before each call)."""
        if not self.cuda:
            fn()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1e3)
            return sorted(times)[1]
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))

    def graph(self, fn: Callable[[], object]) -> float | None:
        """Median ms per call of ``triton.testing.do_bench_cudagraph`` (no host time, L2 not flushed)."""
        if not self.cuda:
            return None
        from triton.testing import do_bench_cudagraph

        return float(do_bench_cudagraph(fn, rep=25, return_mode="median"))

    def device(self, fn: Callable[[], object], iters: int = 10) -> tuple[float | None, dict[str, float]]:
        """ms of device work per call (profiler kernel sums, L2 flushed between calls) and ms per kernel name."""
        if not self.cuda:
            return None, {}
        from torch.profiler import ProfilerActivity, profile

        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(iters):
                self.flush_buf.fill_(7)  # a uint8 fill: its kernel is left out below
                fn()
            torch.cuda.synchronize()
        per: dict[str, float] = collections.defaultdict(float)
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA and "unsigned char" not in e.name:
                per[e.name] += e.time_range.elapsed_us() / 1e3 / iters
        return sum(per.values()), dict(per)

    def host(self, fn: Callable[[], object], calls: int = 20) -> tuple[float | None, bool | None]:
        """µs of host time per call, timed while ``torch.cuda._sleep`` keeps the GPU busy; and whether it was."""
        if not self.cuda:
            return None, None
        fn()
        torch.cuda.synchronize()
        torch.cuda._sleep(int(self.cycles_per_ms * 150))
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        done = torch.cuda.Event()
        done.record()
        busy = not done.query()
        torch.cuda.synchronize()
        return elapsed / calls * 1e6, busy

    def all(self, fn: Callable[[], object], host: bool = True) -> dict:
        device_ms, _ = self.device(fn)
        host_us, busy = self.host(fn) if host else (None, None)
        wall, graph = self.wall(fn), self.graph(fn)
        return {"ms": wall, "device_ms": device_ms, "graph_ms": graph, "host_us": host_us, "gpu_busy": busy}


def copy_bandwidth(device: torch.device, timer: Timer, smoke: bool) -> float:
    """GB/s of ``dst.copy_(src)`` counting bytes read + written."""
    n = (4 << 20) if smoke else (256 << 20)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = timer.wall(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9
