"""The Triton kernels' numerics on CPU, through Triton's interpreter, in a process of their own.

``TRITON_INTERPRET=1`` must be set before the kernels are defined, so the checks
(``tests/_interpreter_checks.py``: forward and every gradient vs float64 over hypothesis-drawn
shapes, poisoned outputs, bitwise-reproducible gradients, SAMB through the kernels) run in a
subprocess; so does the benchmark's ``--smoke`` run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TRITON_INTERPRET": "1", "SPECTRAL3D_KERNEL": "triton", **env}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def test_kernels_match_float64_reference_in_interpreter():
    proc = _run([str(ROOT / "tests" / "_interpreter_checks.py")], timeout=600)
    assert proc.returncode == 0, f"interpreter checks failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    for name in ("modulation_launchers", "features_launchers", "public_ops", "half_precision", "samb_kernels"):
        assert f"ok check_{name}" in proc.stdout


def test_benchmark_smoke(tmp_path):
    proc = _run([str(ROOT / "benchmarks" / "gpu_spectral.py"), "--smoke", "--out", str(tmp_path)], timeout=300)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-6000:]}"
    (result,) = tmp_path.glob("gpu_spectral_*.json")
    data = json.loads(result.read_text())
    assert data["copy_bandwidth_gbs"] > 0
    rows = data["rows"]
    assert {r["f_m"] for r in rows if r["op"] == "spectral_modulation"} == {"channel", "full", "band"}
    assert all(r["ms"] > 0 and r["max_rel_err"] <= 1e-5 for r in rows if "max_rel_err" in r)
