"""``spectral3d.ops.use_kernels`` and ``SPECTRAL3D_KERNEL``: which implementation each op runs."""

from __future__ import annotations

import pytest
import torch

from spectral3d.ops import KERNEL_MODES, OPS, kernel_mode, spectral_modulation, use_kernels
from spectral3d.ops.testing import make_modulation_inputs


def test_env_default_and_per_op_entries(monkeypatch):
    monkeypatch.delenv("SPECTRAL3D_KERNEL", raising=False)
    assert {op: kernel_mode(op) for op in OPS} == dict.fromkeys(OPS, "auto")
    monkeypatch.setenv("SPECTRAL3D_KERNEL", "reference, depthwise_conv3d=autograd")
    assert kernel_mode("depthwise_conv3d") == "autograd"
    assert kernel_mode("spectral_features") == "reference"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", r"SPECTRAL3D_KERNEL: expected a mode in"),
        ("conv=reference", r"SPECTRAL3D_KERNEL: unknown op\(s\) \['conv'\]"),
        ("spectral_features=eager", r"SPECTRAL3D_KERNEL \(spectral_features\): expected a mode"),
    ],
)
def test_bad_env_names_the_variable(monkeypatch, value, message):
    monkeypatch.setenv("SPECTRAL3D_KERNEL", value)
    with pytest.raises(ValueError, match=message):
        kernel_mode("spectral_features")


def test_context_manager_overrides_env_nests_and_restores(monkeypatch):
    monkeypatch.setenv("SPECTRAL3D_KERNEL", "reference")
    with use_kernels("autograd", ops={"spectral_modulation"}):
        assert kernel_mode("spectral_modulation") == "autograd"
        assert kernel_mode("spectral_features") == "reference"
        with use_kernels("auto"):
            assert {kernel_mode(op) for op in OPS} == {"auto"}
        assert kernel_mode("spectral_modulation") == "autograd"
    assert kernel_mode("spectral_modulation") == "reference"
    with pytest.raises(RuntimeError), use_kernels("triton"):
        raise RuntimeError("restored on error too")
    assert kernel_mode("spectral_modulation") == "reference"


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"mode: expected a mode in \('auto', 'triton', 'reference', 'autograd'\)"):
        use_kernels("eager").__enter__()
    with pytest.raises(ValueError, match=r"ops: unknown op\(s\) \['fft'\]"):
        use_kernels("auto", ops={"fft"}).__enter__()
    assert KERNEL_MODES == ("auto", "triton", "reference", "autograd")


def test_autograd_mode_bypasses_the_custom_op():
    leaves, band = make_modulation_inputs("band", (2, 3, 4, 5, 6), num_bands=4, dtype=torch.float64)

    def graph_ops() -> set[str]:
        out = spectral_modulation(*[t.requires_grad_() for t in leaves], band)
        names, stack = set(), [out.grad_fn]
        while stack:
            fn = stack.pop()
            if fn is not None:
                names.add(type(fn).__name__)
                stack.extend(f for f, _ in fn.next_functions)
        return names

    assert any("CppFunction" in n or "spectral" in n.lower() for n in graph_ops())  # the custom op's node
    with use_kernels("autograd", ops={"spectral_modulation"}):
        names = graph_ops()
    assert not any("CppFunction" in n or "spectral" in n.lower() for n in names)
    assert "ComplexBackward0" in names


def test_first_call_compiled_under_an_unseen_env_value(monkeypatch):
    """A ``SPECTRAL3D_KERNEL`` value first read while Dynamo traces: no guard failure, no recompile after eager."""
    from torch._dynamo.utils import counters

    from spectral3d.layers.samb import SAMB

    monkeypatch.setenv("SPECTRAL3D_KERNEL", "auto, selective_scan=auto, spectral_features=auto")  # not parsed yet
    torch._dynamo.reset()
    counters.clear()
    m, x = SAMB(4), torch.randn(1, 4, 5, 6, 7)
    compiled = torch.compile(m, backend="eager")
    compiled(x)
    m(x)  # eager: now the value is cached
    torch.testing.assert_close(compiled(x), m(x))
    assert counters["stats"]["unique_graphs"] == 1
