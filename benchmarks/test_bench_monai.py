"""MONAI's 3D DenseNet121 and ResNet50 timed beside ``densenet121_3d`` / ``resnet50_3d``.

Same process, same inputs, calls interleaved (PERF.md: time a ratio in one run). Quick mode:
inference at batch 1, 32³; full mode: train and inference at the PERF.md sizes. MONAI's nets are
used with their defaults, as a user would pick them (MONAI's ``resnet50`` keeps a stride-1 stem,
``conv1_t_stride=1``, so it runs on 8× the voxels after the stem: compare the MACs rows too).
Rows: ``<metric>`` for both, and ``<metric>_ratio_ours_vs_monai`` (> 1: ours is faster).
"""

from __future__ import annotations

import pytest
import torch

from spectral3d import flops

PAIRS = {"densenet121_3d": "DenseNet121", "resnet50_3d": "resnet50"}


def _monai_model(kind: str, in_chans: int, num_classes: int) -> torch.nn.Module:
    nets = pytest.importorskip("monai.networks.nets")
    if kind == "DenseNet121":
        return nets.DenseNet121(spatial_dims=3, in_channels=in_chans, out_channels=num_classes)
    return nets.resnet50(spatial_dims=3, n_input_channels=in_chans, num_classes=num_classes)


@pytest.mark.parametrize("ours", list(PAIRS))
def test_ours_vs_monai(ours, settings, record, bench_tools):
    backbones3d = pytest.importorskip("backbones3d")
    if not backbones3d.is_model(ours):
        pytest.skip(f"{ours} is not registered")
    cfg = backbones3d.get_pretrained_cfg(ours)
    channels, classes = int(cfg["input_size"][0]), int(cfg["num_classes"])
    monai_name = f"monai_{PAIRS[ours]}"
    monai_model = _monai_model(PAIRS[ours], channels, classes)
    shapes = settings.shapes(cfg["input_size"]) if settings.full else [(1, (channels, 32, 32, 32))]
    phases = ("train", "infer") if settings.full else ("infer",)
    for batch, size in shapes:
        context = {"input": list(size), "batch": batch, "device": settings.device.type, "dtype": settings.dtype_name}
        ours_work = bench_tools.build_workload(ours, batch, size, settings)
        monai_work = bench_tools.build_workload(monai_model, batch, size, settings, name=monai_name)
        params = [sum(p.numel() for p in w.model.parameters()) for w in (ours_work, monai_work)]
        with torch.device("meta"):
            monai_meta = _monai_model(PAIRS[ours], channels, classes)
        macs = [
            flops.count_model(ours, input_size=size).macs,
            flops.count(monai_meta, torch.randn(1, *size, device="meta")).macs,
        ]
        for name, p, m in zip((ours, monai_name), params, macs):
            record(name, "params", p, "count", **context)
            record(name, "macs_bench_input", m, "MAC", **{**context, "batch": 1})
        for phase in phases:
            ours_step = getattr(ours_work, f"{phase}_step")
            monai_step = getattr(monai_work, f"{phase}_step")
            for _ in range(settings.warmup):
                ours_step()
                monai_step()
            times = {ours: [], monai_name: []}
            for _ in range(settings.rounds):  # interleaved, so machine noise hits both alike
                times[ours].append(bench_tools.time_call(ours_step, settings.device, 1, 0))
                times[monai_name].append(bench_tools.time_call(monai_step, settings.device, 1, 0))
            speed = {k: batch / sorted(v)[len(v) // 2] for k, v in times.items()}
            for name, value in speed.items():
                record(name, f"{phase}_throughput", value, "volumes/s", backend="eager", **context)
            record(ours, f"{phase}_throughput_ratio_ours_vs_monai", speed[ours] / speed[monai_name], "x", **context)
