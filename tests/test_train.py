"""The training loop: checkpoints, resume after a signal, DDP on gloo, and the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spectral3d.train import TrainConfig, fit, load_model_state, load_training_state, resolve_checkpoint
from spectral3d.train.checkpoint import save_checkpoint, update_pointer
from tests.helpers.toy_training import ToyDataset, ToyNet

ROOT = Path(__file__).resolve().parents[1]


def _fit(run: Path, train: ToyDataset, resume: bool = False, epochs: int = 3, **kw) -> object:
    torch.manual_seed(0)
    model = ToyNet()
    cfg = TrainConfig(epochs=epochs, batch_size=4, lr=5e-3, seed=1, progress=False, **kw)
    return fit(
        model,
        train,
        ToyDataset(8, seed=1),
        cfg,
        run,
        {"model": "toy"},
        resume=resume,
        num_classes=2,
        class_names=["a", "b"],
    )


def test_checkpoints_pointers_and_safe_loading(tmp_path: Path) -> None:
    result = _fit(tmp_path / "run", ToyDataset(), epochs=2)
    run = tmp_path / "run"
    assert result.epochs_done == 2 and sorted(p.name for p in run.glob("epoch_*")) == ["epoch_0001", "epoch_0002"]
    assert os.readlink(run / "last") == "epoch_0002" and (run / "best").is_symlink()
    state = load_training_state(run / "last")  # torch.load(weights_only=True) inside
    assert state["epoch"] == 2 and "optimizer" in state and "rng" in state
    cfg = json.loads((run / "last" / "config.json").read_text())
    assert cfg["model"] == "toy" and cfg["train"]["epochs"] == 2
    assert set(load_model_state(run / "last")) == set(ToyNet().state_dict())
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
    assert not list(run.glob(".tmp-*"))


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    _fit(tmp_path / "full", ToyDataset())
    full = load_model_state(tmp_path / "full" / "last")
    # SIGINT while loading the 6th item of epoch 2 (16 items per epoch): the step finishes, then it stops.
    part = _fit(tmp_path / "part", ToyDataset(interrupt_at=16 + 6))
    assert part.interrupted and os.readlink(tmp_path / "part" / "last") == "interrupted"
    assert load_training_state(tmp_path / "part" / "last")["batch_in_epoch"] == 2
    resumed = _fit(tmp_path / "part", ToyDataset(), resume=True)
    assert resumed.epochs_done == 3 and not resumed.interrupted
    assert not (tmp_path / "part" / "interrupted").exists()
    got = load_model_state(tmp_path / "part" / "last")
    for k in full:
        torch.testing.assert_close(got[k], full[k], rtol=0, atol=0)
    hist_full = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    hist_part = [json.loads(x) for x in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [h["val_auc"] for h in hist_full] == [h["val_auc"] for h in hist_part]


def test_gradient_accumulation_matches_a_larger_batch(tmp_path: Path) -> None:
    def run(name: str, batch: int, accum: int) -> dict:
        torch.manual_seed(0)
        model = ToyNet(dropout=0.0)
        cfg = TrainConfig(
            epochs=1, batch_size=batch, grad_accum=accum, lr=1e-2, seed=2, progress=False, clip_grad_norm=None
        )
        fit(model, ToyDataset(16), None, cfg, tmp_path / name, num_classes=2)
        return model.state_dict()

    a, b = run("big", 8, 1), run("accum", 4, 2)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_ddp_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        str(ROOT / "tests" / "helpers" / "ddp_worker.py"),
        str(tmp_path / "ddp"),
        "2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "helpers" / "ddp_worker.py"), str(tmp_path / "one"), "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    # Same global batch (2 processes × 2 = 4): the weights agree up to the order of float reductions.
    a, b = load_model_state(tmp_path / "ddp" / "last"), load_model_state(tmp_path / "one" / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    ma = json.loads((tmp_path / "ddp" / "last" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "one" / "last" / "metrics.json").read_text())
    assert ma["val_auc"] == pytest.approx(mb["val_auc"], abs=1e-6)
    assert ma["val_loss"] == pytest.approx(mb["val_loss"], rel=1e-4)


def test_atomic_save_replaces_and_cleans_stale_temporaries(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / ".tmp-epoch_0001-crashed").mkdir(parents=True)  # what a crash mid-write leaves behind
    state = {"w": torch.randn(3)}
    save_checkpoint(run, "epoch_0001", state, {"epoch": 1}, {"model": "x"})
    save_checkpoint(run, "epoch_0001", {"w": torch.ones(3)}, {"epoch": 1}, {"model": "x"})
    update_pointer(run, "last", "epoch_0001")
    assert not list(run.glob(".tmp-*"))
    torch.testing.assert_close(load_model_state(run)["w"], torch.ones(3))
    assert resolve_checkpoint(run) == (run / "epoch_0001").resolve()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        update_pointer(run, "best", "epoch_0009")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"class_weights": "inverse"}, "class_weights"),
        ({"class_weights": [1.0, -2.0]}, "class_weights"),
        ({"patience": -1}, "patience"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"warmup_epochs": -1.0}, "warmup_epochs"),
        ({"num_workers": -1}, "num_workers"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
    ],
)
def test_bad_training_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


class _BatchNormNet(ToyNet):
    """ToyNet with a BatchNorm after pooling: training on a batch of one case raises."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__(num_classes=num_classes, dropout=0.0)
        self.bn = torch.nn.BatchNorm1d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(torch.nn.functional.gelu(self.conv(x)).mean(dim=(2, 3, 4))))


class _Seen(ToyDataset):
    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.seen: list[int] = []

    def __getitem__(self, i: int):
        self.seen.append(i)
        return super().__getitem__(i)


@pytest.mark.parametrize(("n", "batch"), [(9, 4), (5, 2), (7, 3)])
def test_a_last_batch_of_one_joins_the_previous_and_no_case_is_dropped(tmp_path: Path, n: int, batch: int) -> None:
    """n ≡ 1 (mod batch): plain batching ends each epoch with one case, which a train-mode BatchNorm rejects."""
    data = _Seen(n)
    cfg = TrainConfig(epochs=2, batch_size=batch, lr=1e-2, seed=0, progress=False)
    result = fit(_BatchNormNet(), data, None, cfg, tmp_path / "run", num_classes=2)
    assert result.epochs_done == 2
    assert sorted(data.seen) == sorted(list(range(n)) * 2)  # every case, every epoch


def test_fit_refuses_a_run_dir_in_use_and_warns_for_classes_without_training_cases(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fit(run, ToyDataset(), epochs=1)
    with pytest.raises(FileExistsError, match="resume=True"):
        _fit(run, ToyDataset(), epochs=1)
    cfg = TrainConfig(epochs=1, batch_size=4, seed=1, progress=False)
    with pytest.warns(UserWarning, match=r"classes \['c'\] have no training case"):
        fit(ToyNet(num_classes=3), ToyDataset(), None, cfg, tmp_path / "three", num_classes=3, class_names="abc")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"'balanced'.*\['c'\]"):
        cfg = TrainConfig(epochs=1, class_weights="balanced", progress=False)
        fit(ToyNet(num_classes=3), ToyDataset(), None, cfg, tmp_path / "bal", num_classes=3, class_names="abc")


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_checkpoints_honour_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        ckpt = save_checkpoint(tmp_path / "run", "epoch_0001", {"w": torch.randn(2)}, {"epoch": 1}, {"model": "x"})
    finally:
        os.umask(old)
    assert ckpt.stat().st_mode & 0o777 == 0o777 & ~umask
    assert {f.name: f.stat().st_mode & 0o777 for f in ckpt.iterdir()} == dict.fromkeys(
        ["model.safetensors", "training_state.pt", "config.json"], 0o666 & ~umask
    )


def test_initial_weights_depend_on_the_seed_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs with one seed start from the same weights whatever the process drew before them."""
    from spectral3d.data import write_synthetic_cohort
    from spectral3d.train import workflow

    cohort = write_synthetic_cohort(tmp_path / "cohort", task="spondylitis", cases=6, seed=0, size=16)
    starts = []

    def fake_fit(model, *args, **kwargs):  # records, trains nothing
        starts.append({k: v.clone() for k, v in model.state_dict().items()})

    monkeypatch.setattr(workflow, "fit", fake_fit)
    for draw in (1, 2):
        torch.manual_seed(draw)  # a different global RNG state before each run
        torch.randn(10)
        cfg = TrainConfig(seed=3)
        workflow.train_on_cohort(
            "test_desamba_3d", cohort, tmp_path / f"run{draw}", cfg, input_size=32, sequences=("t1", "t2fs")
        )
    assert starts[0].keys() == starts[1].keys()
    assert all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])


def test_compiled_training_checkpoints_resume_into_eager_and_compiled(tmp_path: Path) -> None:
    """``TrainConfig(compile=...)`` (aot_eager here): checkpoints carry the model's own keys and equal an
    eager run's; they resume into eager and compiled models, and a ``torch.compile``-d model saves the same keys."""

    def run(name: str, compile: str | None, epochs: int = 1, resume: bool = False, wrap: bool = False) -> dict:
        torch.manual_seed(0)
        model = ToyNet(dropout=0.0)
        model = torch.compile(model, backend="aot_eager") if wrap else model
        cfg = TrainConfig(epochs=epochs, batch_size=8, lr=5e-3, seed=1, progress=False, compile=compile)
        fit(model, ToyDataset(16), ToyDataset(8, seed=1), cfg, tmp_path / name, resume=resume, num_classes=2)
        return load_model_state(tmp_path / name / "last")

    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = run("compiled", "aot_eager")
    assert counters["stats"]["unique_graphs"] >= 1, "the training step was not compiled"
    eager = run("eager", None)
    assert set(compiled) == set(ToyNet().state_dict())
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "compiled" / "last" / "config.json").read_text())["train"]["compile"] == "aot_eager"
    assert set(run("compiled", None, epochs=2, resume=True)) == set(compiled)  # compiled run -> eager
    assert set(run("eager", "aot_eager", epochs=2, resume=True)) == set(compiled)  # eager run -> compiled
    assert set(run("wrapped", None, wrap=True)) == set(compiled)  # a torch.compile-d model: no "_orig_mod."


def test_compile_backend_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match=r"compile: expected a torch.compile backend such as .*'inductor'.*got 'fast'"):
        TrainConfig(compile="fast")
    assert TrainConfig(compile=True).compile == "inductor" and TrainConfig(compile=False).compile is None
    from spectral3d.cli import main

    argv = ["train", "--model", "test_desamba_3d", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    assert main([*argv, "--compile", "fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compile: expected a torch.compile backend" in err[0]
    assert not (tmp_path / "run").exists()
