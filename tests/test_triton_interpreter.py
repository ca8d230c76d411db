"""The Triton kernels' numerics on CPU, through Triton's interpreter, in a process of their own.

``TRITON_INTERPRET=1`` must be set before the kernels are defined, so ``tests/interpreter/`` (ordinary
pytest tests: forward and every gradient vs float64 over hypothesis-drawn shapes, poisoned outputs,
bitwise-reproducible gradients, the public ops and layers through the kernels) runs in a subprocess;
so does the benchmark's ``--smoke`` run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("SPECTRAL3D_KERNEL", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.interpreter
def test_interpreter_suite_passes():
    proc = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/interpreter"], timeout=900)
    tail = proc.stdout[-8000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, f"interpreter tests failed:\n{tail}"
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 8 and "skipped" not in proc.stdout, tail


@pytest.mark.interpreter
def test_benchmark_smoke(tmp_path):
    proc = _run([str(ROOT / "benchmarks" / "gpu_spectral.py"), "--smoke", "--out", str(tmp_path)], timeout=300)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-6000:]}"
    (result,) = tmp_path.glob("gpu_spectral_*.json")
    data = json.loads(result.read_text())
    assert data["copy_bandwidth_gbs"] > 0
    rows = data["rows"]
    assert {r["f_m"] for r in rows if r["op"] == "spectral_modulation"} == {"channel", "full", "band"}
    assert all(r["ms"] > 0 and r["max_rel_err"] <= 1e-5 for r in rows if "max_rel_err" in r)


@pytest.mark.interpreter
def test_depthwise_benchmark_smoke(tmp_path):
    """``benchmarks/gpu_depthwise.py --smoke``: every tier runs, rows carry their checks, JSON and markdown written."""
    proc = _run([str(ROOT / "benchmarks" / "gpu_depthwise.py"), "--smoke", "--out", str(tmp_path)], timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    (result,) = tmp_path.glob("gpu_depthwise_*.json")
    data = json.loads(result.read_text())
    assert data["complete"] and not data["failures"], data["skipped"] or data["failures"]
    assert data["tiers_done"] == ["correctness+ops(atto bf16)", "must", "rest", "sweep"]
    triton_rows = [r for r in data["op_rows"] if r["variant"] == "triton"]
    assert {r["layout"] for r in triton_rows} == {"channels_last", "contiguous"}
    assert all(r["ms"] > 0 and r["max_rel_err"] <= 1e-5 and r["bitwise_repeatable"] for r in triton_rows)
    assert {(r["phase"], r["kernel"]) for r in data["model_rows"]} == {
        (p, k) for p in ("train", "infer") for k in ("triton", "stock")
    }
    assert data["sweep_rows"] and result.with_suffix(".md").read_text().startswith("# gpu_depthwise")
