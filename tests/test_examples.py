"""Every script in ``examples/`` runs as it is (``--quick``), on CPU and offline, and prints what it claims.

The scripts run in this process through ``runpy`` with ``__name__ == "__main__"`` and their own
``sys.argv`` — exactly what ``python examples/x.py --quick`` executes, without paying the
interpreter's torch/timm start-up five times.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> str:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(
        ["quickstart.py", "custom_network.py", "inflate_from_timm.py", "train_on_nifti.py", "compare_backbones.py"]
    )


def test_quickstart(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = run_example("quickstart.py", [], monkeypatch, capsys)
    assert "sequences: ['t1', 't2fs']" in out
    probs = [float(v) for v in re.search(r"probabilities: \[([^\]]*)\]", out).group(1).split(",")]
    assert "logits: (1, 2)" in out and abs(sum(probs) - 1) < 2e-3


def test_custom_network_trains(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = run_example("custom_network.py", ["--quick"], monkeypatch, capsys)
    losses = [float(v) for v in re.findall(r"loss ([0-9.]+)", out)]
    assert len(losses) == 2 and losses[1] < losses[0]


def test_inflate_from_timm_reproduces_2d_logits(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = run_example("inflate_from_timm.py", ["--quick"], monkeypatch, capsys)
    assert "complete = True" in out
    assert float(re.search(r"depth-1 volume: ([0-9.e+-]+)", out).group(1)) < 1e-4


def test_inflate_from_a_local_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model2d = timm.models.mambaout.MambaOut(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64), num_classes=10)
    save_file(model2d.state_dict(), str(tmp_path / "w.safetensors"))
    args = ["--quick", "--weights", str(tmp_path / "w.safetensors")]
    out = run_example("inflate_from_timm.py", args, monkeypatch, capsys)
    assert "2D weights from" in out and "complete = True" in out


def test_train_on_nifti(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = run_example("train_on_nifti.py", ["--quick", "--out", str(tmp_path)], monkeypatch, capsys)
    assert (tmp_path / "run" / "last" / "model.safetensors").is_file()
    assert (tmp_path / "eval" / "metrics.json").is_file() and "| test_convnextv2_3d |" in out
    assert re.search(r"case000 -> (pyogenic|tuberculous)", out)


def test_compare_backbones(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = run_example("compare_backbones.py", ["--quick"], monkeypatch, capsys)
    rows = [line.split() for line in out.splitlines() if line.startswith("test_")]
    assert [r[0] for r in rows] == ["test_resnet_3d", "test_convnextv2_3d", "test_mambaout_3d"]
    for r in rows:
        params, gflops, gmacs, speed = float(r[1]), float(r[2]), float(r[3]), float(r[-1])
        assert params > 0 and gflops > 0 and abs(gflops - 2 * gmacs) < 0.011 and speed > 0
