"""The spectral kernels compile for an H100 (sm_90) without a GPU, and the backward's ticket is ordered.

Triton's front end and ``ptxas`` run on any machine: this catches what the interpreter cannot (types,
constexpr specialisation of arguments equal to 1, int64 offsets) and checks the PTX of the in-kernel
finish: every thread's partial sums are stored before a CTA barrier, one thread then takes the ticket
with an acquire-release atomic at GPU scope, and the finishing program reads the partials through L2
(``ld.global.cg``). Whether that ordering holds under load is measured on a GPU
(``benchmarks/gpu_spectral.py``, checks tier).
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("triton.backends.nvidia")
if os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("compiles JIT kernels: run without TRITON_INTERPRET", allow_module_level=True)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from spectral3d.ops._triton import kernels  # noqa: E402
from spectral3d.ops._triton.launchers import BLOCK, NUM_WARPS, RBLOCK  # noqa: E402

H100 = GPUTarget("cuda", 90, 32)


def compile_ptx(fn, constexprs: dict, pointers: dict[str, str]) -> str:
    """PTX of ``fn`` for sm_90: ``*_ptr`` arguments float32 unless named in ``pointers``, other ones i32."""
    sig = {
        name: "constexpr" if name in constexprs else pointers.get(name, "*fp32" if name.endswith("_ptr") else "i32")
        for name in fn.arg_names
    }
    src = ASTSource(fn, sig, constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(src, target=H100, options={"num_warps": NUM_WARPS}).asm["ptx"]


@pytest.mark.parametrize(
    ("fn", "constexprs", "pointers"),
    [
        (kernels.modulation_fwd_contig_kernel, {"FM_FORM": 2, "NUM_BANDS": 8, "BLOCK": BLOCK}, {"band_ptr": "*i32"}),
        (
            kernels.modulation_fwd_kernel,
            {"FM_FORM": 1, "NUM_BANDS": 1, "SPATIAL_CONTIG": False, "BLOCK": BLOCK, "S": 1},
            {"fm_ptr": "*bf16", "fe_ptr": "*bf16"},
        ),
        (
            kernels.modulation_bwd_kernel,
            {"FM_FORM": 0, "NUM_BANDS": 1, "KP": 2, "SPATIAL_CONTIG": True, "BLOCK": BLOCK, "RBLOCK": RBLOCK},
            {"ticket_ptr": "*i32"},
        ),
        (kernels.features_bwd_contig_kernel, {"BLOCK": BLOCK, "C": 1}, {}),
    ],
    ids=["fwd-contig-band", "fwd-strided-full-bf16", "bwd-strided-channel", "features-bwd-contig"],
)
def test_kernels_compile_for_sm90(fn, constexprs, pointers) -> None:
    assert ".entry" in compile_ptx(fn, constexprs, pointers)


@pytest.mark.parametrize("ones", [(), ("N", "C", "S")], ids=["general", "N=C=S=1"])
def test_backward_ticket_is_ordered_after_the_partials(ones: tuple[str, ...]) -> None:
    constexprs = {"FM_FORM": 2, "NUM_BANDS": 8, "KP": 16, "BLOCK": BLOCK, "RBLOCK": RBLOCK, **dict.fromkeys(ones, 1)}
    ptx = compile_ptx(kernels.modulation_bwd_contig_kernel, constexprs, {"ticket_ptr": "*i32", "band_ptr": "*i64"})
    lines = [line.strip() for line in ptx.splitlines()]
    ticket = next(i for i, line in enumerate(lines) if "atom.global.gpu.acq_rel.add" in line)
    assert lines[ticket].startswith("@%p"), "one thread takes the ticket"
    before = lines[:ticket]
    last_store = max(i for i, line in enumerate(before) if "st.global" in line)
    assert any(line.startswith("bar.sync") for line in before[last_store:]), "no CTA barrier before the ticket"
    assert any("atom.global.gpu.relaxed.exch" in line for line in lines[ticket:]), "ticket not reset"
    assert any("ld.global.cg" in line for line in lines[ticket:]), "partials not read through L2"
