"""Whole-model ``torch.compile`` against eager: train step and inference, calls interleaved, with Dynamo's counts.

Runs where compiled rows run (``--bench-compile``, ``--bench-backends ...compile``, or full mode on CUDA).
Full mode (a GPU): ``desamba_spine_tiny``, ``convnextv2_atto_3d`` and ``samnet_tiny`` at batch 8, 96³,
and ``desamba_spine`` at its paper input (its ``pretrained_cfg`` size) at batch 2, inductor; quick mode:
``test_samnet_3d`` and ``test_desamba_3d`` at batch 2, 32³, with ``aot_eager`` on CPU (tracing and
autograd without code generation: the wiring, in seconds). ``--bench-models`` narrows the list (fnmatch).

For each model and phase one module is timed eager and compiled (``torch.compile`` of the module and
of ``forward_with_aux``, Dynamo reset first), each round one eager call then one compiled call. Rows:
``{phase}_throughput`` for both (``backend`` eager / compile) and ``{phase}_compile_speedup_vs_eager``
(> 1: compiled is faster), every compiled row with ``graphs``, ``graph_breaks``, ``recompiles`` and
``failed_frames`` (``compile_counts``), so that a model that fell back to eager shows.
"""

from __future__ import annotations

import pytest
import torch

FULL_MODELS = {  # model: (batch, input (C, D, H, W) or None for the model's pretrained_cfg size), in run order
    "desamba_spine_tiny": (8, (3, 96, 96, 96)),
    "convnextv2_atto_3d": (8, (3, 96, 96, 96)),
    "samnet_tiny": (8, (3, 96, 96, 96)),
    "desamba_spine": (2, None),
}
QUICK_MODELS = {"test_samnet_3d": (2, (3, 32, 32, 32)), "test_desamba_3d": (2, (3, 32, 32, 32))}


def models(full: bool) -> dict[str, tuple[int, tuple[int, int, int, int] | None]]:
    """The models of this file (``conftest.pytest_generate_tests`` parametrizes ``compile_model`` with them)."""
    return FULL_MODELS if full else QUICK_MODELS


@pytest.mark.parametrize("phase", ["train", "infer"])
def test_compile_vs_eager(compile_model, phase, settings, record, bench_tools):
    backbones3d = pytest.importorskip("backbones3d")
    batch, size = models(settings.full)[compile_model]
    if size is None:
        size = tuple(backbones3d.get_pretrained_cfg(compile_model)["input_size"])
    compile_backend = "inductor" if settings.cuda else "aot_eager"
    context = {"input": list(size), "batch": batch, "device": settings.device.type, "dtype": settings.dtype_name}
    try:
        eager = bench_tools.build_workload(compile_model, batch, size, settings)
        compiled = bench_tools.build_workload(
            eager.model, batch, size, settings, backend="compile", name=compile_model, compile_backend=compile_backend
        )
        steps = {"eager": getattr(eager, f"{phase}_step"), "compile": getattr(compiled, f"{phase}_step")}
        for _ in range(max(2, settings.warmup)):  # the first compiled calls compile
            steps["compile"]()
            steps["eager"]()
        counts = bench_tools.compile_counts()
        times: dict[str, list[float]] = {"eager": [], "compile": []}
        for _ in range(settings.rounds):  # interleaved, so machine noise hits both alike
            for backend, step in steps.items():
                times[backend].append(bench_tools.time_call(step, settings.device, 1, 0))
        counts_after = bench_tools.compile_counts()
    except torch.cuda.OutOfMemoryError:
        record(compile_model, f"{phase}_compile_speedup_vs_eager", None, "x", note="out of memory", **context)
        pytest.skip(f"{compile_model}: out of GPU memory at batch {batch}, {size}")
    speed = {k: batch / sorted(v)[len(v) // 2] for k, v in times.items()}
    compile_context = {**context, "compile_backend": compile_backend, **counts}
    compile_context["recompiles_while_timed"] = counts_after["recompiles"] - counts["recompiles"]
    record(compile_model, f"{phase}_throughput", speed["eager"], "volumes/s", backend="eager", **context)
    record(compile_model, f"{phase}_throughput", speed["compile"], "volumes/s", backend="compile", **compile_context)
    ratio = speed["compile"] / speed["eager"]
    record(compile_model, f"{phase}_compile_speedup_vs_eager", ratio, "x", **compile_context)
