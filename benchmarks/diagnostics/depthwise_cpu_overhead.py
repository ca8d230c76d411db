"""CPU cost of ``DepthwiseConv3d`` (the custom op around ``F.conv3d``) against the ``nn.Conv3d`` it replaces.

Interleaved calls in one process, one intra-op thread, medians of many rounds; prints a markdown table
(the ratio is what means something on a shared machine). ``python benchmarks/diagnostics/depthwise_cpu_overhead.py``
"""

from __future__ import annotations

import platform
import statistics
import time

import torch
from torch import nn

from spectral3d.layers import DepthwiseConv3d

SHAPES = [(2, 40, 12, 12, 12, 7), (2, 160, 6, 6, 6, 7), (2, 48, 12, 12, 12, 3), (1, 16, 4, 4, 4, 3)]
ROUNDS = 41


def step(module: nn.Module, x: torch.Tensor, backward: bool) -> None:
    out = module(x)
    if backward:
        out.square().mean().backward()


def main() -> None:
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, {ROUNDS} rounds\n")
    print("| shape (N, C, D, H, W) | k | pass | nn.Conv3d ms | DepthwiseConv3d ms | ratio (nn / ours) | diff µs |")
    print("|---|---|---|---:|---:|---:|---:|")
    for N, C, D, H, W, k in SHAPES:
        torch.manual_seed(0)
        layer = DepthwiseConv3d(C, k)
        plain = nn.Conv3d(C, C, k, padding=k // 2, groups=C)
        plain.load_state_dict(layer.state_dict())
        for backward in (False, True):
            x = torch.randn(N, C, D, H, W, requires_grad=backward)
            times: dict[str, list[float]] = {"plain": [], "layer": []}
            for r in range(ROUNDS + 2):
                for name, m in (("plain", plain), ("layer", layer)) if r % 2 else (("layer", layer), ("plain", plain)):
                    start = time.perf_counter()
                    with torch.set_grad_enabled(backward):
                        step(m, x, backward)
                    if r >= 2:
                        times[name].append(time.perf_counter() - start)
            a, b = statistics.median(times["plain"]), statistics.median(times["layer"])
            kind = "fwd+bwd" if backward else "fwd"
            cells = f"{a * 1e3:.3f} | {b * 1e3:.3f} | {a / b:.3f} | {(b - a) * 1e6:.0f}"
            print(f"| {(N, C, D, H, W)} | {k} | {kind} | {cells} |")


if __name__ == "__main__":
    main()
