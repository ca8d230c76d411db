"""``spectral3d`` end to end on a tiny synthetic cohort: synth → train → evaluate → predict, resume, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spectral3d.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: extra intra-op threads only spin on a busy machine


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "cohort"
    assert main(["synth", "--out", str(root), "--task", "spondylitis", "--cases", "12", "--seed", "3"]) == 0
    return root


@pytest.mark.parametrize("model", ["desamba_spondylitis_tiny", "test_resnet_3d"])
def test_train_evaluate_predict(cohort: Path, tmp_path: Path, model: str, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        "--model",
        model,
        "--data",
        str(cohort),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--input-size",
        "32",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    assert main(args) == 0
    assert (run / "best" / "model.safetensors").is_file() and (run / "last").resolve().name == "epoch_0002"
    config = json.loads((run / "last" / "config.json").read_text())
    assert config["model"] == model and config["sequences"] == ["t1", "t2fs"] and len(config["class_names"]) == 2

    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run),
                "--data",
                str(cohort),
                "--out",
                str(tmp_path / "ev"),
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in ("accuracy", "specificity", "sensitivity", "precision", "f1", "auc", "top2_accuracy", "ci"):
        assert key in metrics
    assert (tmp_path / "ev" / "metrics.md").read_text().startswith("| Model | ACC")
    assert len((tmp_path / "ev" / "predictions.csv").read_text().splitlines()) == metrics["n"] + 1

    case_dirs = sorted(p for p in cohort.iterdir() if p.is_dir())[:2]
    table = tmp_path / "clinical.csv"
    lines = (cohort / "cases.csv").read_text().splitlines()
    rows = {line.split(",")[0]: line for line in lines[1:]}
    table.write_text("\n".join([lines[0], *(rows[d.name] for d in case_dirs)]) + "\n")
    pred_args = ["predict", "--checkpoint", str(run), *map(str, case_dirs), "--tabular", str(table)]
    assert main([*pred_args, "--out", str(tmp_path / "pred.json")]) == 0
    pred = json.loads((tmp_path / "pred.json").read_text())
    assert [p["case_id"] for p in pred] == [d.name for d in case_dirs]
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in pred)
    assert all(p["clinical_from_csv"] for p in pred)


def test_resume_continues_a_finished_run(cohort: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    base = [
        "train",
        "--model",
        "test_resnet_3d",
        "--data",
        str(cohort),
        "--out",
        str(run),
        "--batch-size",
        "4",
        "--input-size",
        "32",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    assert main([*base, "--epochs", "1"]) == 0
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    assert sorted(p.name for p in run.glob("epoch_*")) == ["epoch_0001", "epoch_0002"]
    assert len((run / "log.jsonl").read_text().splitlines()) == 2


def test_data_errors_name_the_case_and_file_without_traceback(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(cohort, broken)
    victim = sorted(p for p in broken.iterdir() if p.is_dir())[0]
    (victim / "t2fs.nii.gz").unlink()
    args = [
        "train",
        "--model",
        "test_resnet_3d",
        "--data",
        str(broken),
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--input-size",
        "32",
        "--no-progress",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert victim.name in err and "t2fs" in err and "Traceback" not in err
    assert main([*args, "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped cases" in out and victim.name in out


def test_unknown_model_and_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--model", "desamba_spine_tinny", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "desamba_spine_tiny" in capsys.readouterr().err  # suggests the close name
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope"), "--data", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
