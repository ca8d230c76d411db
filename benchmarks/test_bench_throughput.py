"""Train-step and inference throughput (volumes/s) and peak memory of the selected models.

``--bench-models`` selects the models (fnmatch patterns); quick mode times them at their
``pretrained_cfg`` size capped to 32³, batch 1; ``--bench-full`` at the PERF.md sizes. Train =
one AdamW step (cross-entropy, or Eq. 5 for DeSamba), with and without gradient checkpointing;
inference = one forward under ``torch.inference_mode``. On CUDA: bf16 autocast, channels-last-3d
for convolutional families, eager and (full mode or ``--bench-compile``) ``torch.compile``.
Nothing here asserts a speed.
"""

from __future__ import annotations

import pytest
import torch

from spectral3d import flops

CASES = [("train", False), ("train", True), ("infer", False)]


@pytest.mark.parametrize(("phase", "checkpointing"), CASES, ids=["train", "train-ckpt", "infer"])
def test_throughput(bench_model, shape_index, phase, checkpointing, backend, settings, benchmark, record, bench_tools):
    backbones3d = pytest.importorskip("backbones3d")
    cfg = backbones3d.get_pretrained_cfg(bench_model)
    batch, size = settings.shapes(cfg["input_size"])[shape_index]
    context = {
        "input": list(size),
        "batch": batch,
        "device": settings.device.type,
        "dtype": settings.dtype_name,
        "backend": backend,
        "checkpointing": checkpointing,
    }
    try:
        work = bench_tools.build_workload(bench_model, batch, size, settings, checkpointing, backend)
    except NotImplementedError as err:  # set_grad_checkpointing missing or unsupported
        pytest.skip(f"{bench_model}: {err}")
    step = work.train_step if phase == "train" else work.infer_step
    try:
        seconds = bench_tools.time_with_benchmark(benchmark, step, settings)
        peak = bench_tools.peak_extra_memory(step, settings.device)
    except torch.cuda.OutOfMemoryError:
        record(bench_model, f"{phase}_throughput", None, "volumes/s", note="out of memory", **context)
        pytest.skip(f"{bench_model}: out of GPU memory at batch {batch}, {size}")
    if backend == "compile":  # graphs, breaks, recompiles: a silent fall-back to eager shows
        context.update(bench_tools.compile_counts())
    record(bench_model, f"{phase}_throughput", batch / seconds, "volumes/s", **context)
    record(bench_model, f"{phase}_peak_mem", peak, "bytes", **context)
    if phase == "train" and not checkpointing:
        record(bench_model, "train_state_mem", bench_tools.state_bytes(work.model), "bytes", **context)
    if phase == "infer" and backend == "eager":
        record(bench_model, "params", sum(p.numel() for p in work.model.parameters()), "parameters")
        rep = flops.count_model(bench_model, input_size=size)
        record(bench_model, "macs_bench_input", rep.macs, "MAC", **{**context, "batch": 1})
