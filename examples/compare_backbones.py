"""Compare backbones: parameters, FLOPs (counted on the meta device) and CPU throughput.

FLOPs follow DESIGN.md §10: one multiply-add = 2 FLOPs (``torch.utils.flop_counter``'s
convention), MACs beside (what fvcore, thop and the paper report), FFTs counted as
2.5·n·log2(n) per real transform; elementwise ops and norms are not counted. Counting runs on
the meta device, so even paper-scale models cost no compute. Throughput is measured on CPU in
eval mode (volumes per second, median of a few batches) at a small input.

    python examples/compare_backbones.py                        # three paper-size baselines
    python examples/compare_backbones.py --quick                # the tiny test configurations
    python examples/compare_backbones.py --models resnet50_3d convnextv2_atto_3d --size 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import backbones3d
from spectral3d.flops import count_model

DEFAULT = ["resnet50_3d", "convnextv2_atto_3d", "mambaout_femto_3d"]
QUICK = ["test_resnet_3d", "test_convnextv2_3d", "test_mambaout_3d"]


def throughput(model: torch.nn.Module, input_size: tuple[int, ...], batch: int, repeats: int) -> float:
    """Volumes per second of ``model`` in eval mode on CPU (median over ``repeats`` batches)."""
    x = torch.randn(batch, *input_size)
    times = []
    with torch.inference_mode():
        model(x)  # warm-up: allocator, oneDNN primitive selection
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None, help=f"registered names (default {DEFAULT})")
    parser.add_argument("--size", type=int, default=32, help="cube edge of the throughput input")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help=f"the tiny test models {QUICK}, one timed batch")
    args = parser.parse_args(argv)
    names = args.models or (QUICK if args.quick else DEFAULT)
    repeats = 1 if args.quick else args.repeats

    print(f"{'model':<22} {'params (M)':>10} {'GFLOPs':>9} {'GMACs':>8}  {'at input':<18} {'vol/s (CPU)':>11}")
    for name in names:
        # FLOPs at the model's own default input size (its pretrained_cfg), batch 1, on meta.
        report = count_model(name)
        cfg_size = tuple(backbones3d.get_pretrained_cfg(name)["input_size"])
        model = backbones3d.create_model(name).eval()
        channels = cfg_size[0]
        speed = throughput(model, (channels, args.size, args.size, args.size), args.batch, repeats)
        print(
            f"{name:<22} {report.params / 1e6:>10.2f} {report.flops / 1e9:>9.2f} {report.macs / 1e9:>8.2f}  "
            f"{str(cfg_size):<18} {speed:>11.1f}"
        )
    print(f"throughput: batch {args.batch} of {args.size}³ volumes, {torch.get_num_threads()} CPU threads")


if __name__ == "__main__":
    main()
