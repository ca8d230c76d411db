"""Parameters, FLOPs and MACs of every registered model at its ``pretrained_cfg`` input size.

Counted on the ``meta`` device with :func:`spectral3d.flops.count_model` (no compute), batch 1
(DESIGN.md §10). ``fft_flops`` is the FFT share (DeSamba's spectral branch): subtract it to
compare with MAC counts that ignore FFTs, like the paper's.
"""

from __future__ import annotations

import pytest

from spectral3d import flops


def test_params_flops_macs(model_name, record):
    backbones3d = pytest.importorskip("backbones3d")
    cfg = backbones3d.get_pretrained_cfg(model_name)
    rep = flops.count_model(model_name)
    assert rep.flops > 0, f"{model_name}: no counted op ran (uncounted: {sorted(rep.uncounted)})"
    context = {"input": list(cfg["input_size"]), "batch": 1, "device": "meta"}
    fft = sum(v for op, v in rep.by_op.items() if "_fft_" in op)
    record(model_name, "params", rep.params, "count", **context)
    record(model_name, "flops", rep.flops, "FLOP", **context)
    record(model_name, "macs", rep.macs, "MAC", **context)
    record(model_name, "fft_flops", fft, "FLOP", **context)
    record(model_name, "uncounted_ops", len(rep.uncounted), "distinct ops", **context)
