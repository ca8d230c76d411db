"""``spectral3d ablate`` on a tiny cohort: Table 3, Fig. 5, and a stopped run that resumes to the same table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import backbones3d
from spectral3d.cli import main
from spectral3d.train import TrainConfig, load_training_state
from spectral3d.train.ablate import run_ablation

pytestmark = pytest.mark.usefixtures("one_thread")
ARGS = ["--scale", "tiny", "--rows", "full", "cnv2", "--epochs", "1", "--batch-size", "4", "--bootstrap", "40"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ablate") / "cohort"
    assert main(["synth", "--out", str(root), "--task", "spondylitis", "--cases", "30", "--seed", "3"]) == 0
    return root  # 20 train, 5 val, 5 test cases at 32³


def test_ablate_end_to_end_then_stopped_mid_row_resumes_to_the_same_table(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    whole = tmp_path / "whole"
    assert main(["ablate", "--data", str(cohort), "--out", str(whole), *ARGS, "--no-progress"]) == 0
    table = (whole / "table3.md").read_text()
    lines = table.splitlines()
    header = "| Model | TE | CE | FP | ME | De | C | S | Params (M) | GMACs | ACC | F1 | Top3 | AUC | p AUC | p ACC |"
    assert lines[0] == header
    assert lines[2].startswith("| CNV2 |  | ✓ |  |  |  |  |  |") and lines[3].startswith("| DeSamba | ✓ | ✓ | ✓ |")
    assert lines[3].endswith("| ref | ref |") and not lines[2].endswith("| ref | ref |")
    results = json.loads((whole / "table3.json").read_text())
    assert list(results["rows"]) == ["cnv2", "full"] and results["reference"] == "full" and results["n"] == 5
    for row, entry in results["rows"].items():
        model = backbones3d.create_model(f"desamba_spondylitis_ablation_{row}", scale="tiny", num_tabular=8)
        assert entry["params"] == sum(p.numel() for p in model.parameters())
        assert entry["model"] == f"desamba_spondylitis_ablation_{row}" and entry["macs"] > 0
    assert results["rows"]["full"]["macs"] > results["rows"]["cnv2"]["macs"]
    assert (whole / "fig5.png").read_bytes()[:4] == b"\x89PNG"
    # finished rows are skipped on a rerun; another recipe in the same folder is refused
    capsys.readouterr()
    assert main(["ablate", "--data", str(cohort), "--out", str(whole), *ARGS, "--no-progress"]) == 0
    assert "training" not in capsys.readouterr().out
    assert main(["ablate", "--data", str(cohort), "--out", str(whole), *ARGS, "--epochs", "2"]) == 2
    assert "another recipe (epochs: 1 → 2)" in capsys.readouterr().err

    # the same command stopped after 7 optimizer steps: cnv2 takes 5 (20 cases, batch 4), so full stops at its 2nd
    part = tmp_path / "part"
    cfg = TrainConfig(epochs=1, batch_size=4, progress=False, keep_last=1)  # what the CLI builds from ARGS
    stopped = run_ablation(
        cohort, part, rows=["full", "cnv2"], scale="tiny", cfg=cfg, n_bootstrap=40, stop_after_steps=7
    )
    assert stopped.interrupted and stopped.trained == ["cnv2/seed_0"] and stopped.table is None
    assert (part / "runs" / "full" / "seed_0" / "last").resolve().name == "interrupted"
    assert load_training_state(part / "runs" / "full" / "seed_0" / "last")["batch_in_epoch"] == 2
    assert not (part / "runs" / "full" / "seed_0" / "done.json").exists() and not (part / "table3.md").exists()
    capsys.readouterr()
    assert main(["ablate", "--data", str(cohort), "--out", str(part), *ARGS, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resuming full/seed_0" in out and "cnv2/seed_0" not in out
    assert (part / "table3.md").read_text() == (whole / "table3.md").read_text()
    for row in ("cnv2", "full"):  # the resumed weights are the uninterrupted ones, bit for bit
        a = (whole / "runs" / row / "seed_0" / "last" / "model.safetensors").read_bytes()
        assert (part / "runs" / row / "seed_0" / "last" / "model.safetensors").read_bytes() == a


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rows", "full", "bogus"], "rows: expected rows among"),
        (["--seeds", "1", "1"], "seeds: expected distinct"),
        (["--epochs", "0"], "epochs: expected a positive integer"),
        (["--bootstrap", "-5"], "--bootstrap"),
        (["--split", "val", "--data", "/nonexistent"], "not a cohort folder"),
    ],
)
def test_ablate_user_mistakes_are_one_line_before_any_work(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    out = tmp_path / "abl"
    assert main(["ablate", "--data", str(cohort), "--out", str(out), "--scale", "tiny", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_help_lists_every_row(capsys: pytest.CaptureFixture) -> None:
    from backbones3d.desamba import ABLATION_ROWS

    assert main(["ablate", "--help"]) == 0
    assert " ".join(ABLATION_ROWS) in " ".join(capsys.readouterr().out.split())


def test_tabular_rows_need_clinical_columns(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    lines = (cohort / "cases.csv").read_text().splitlines()
    (bare / "cases.csv").write_text("\n".join(",".join(x.split(",")[:5]) for x in lines) + "\n")
    for case in cohort.iterdir():
        if case.is_dir():
            (bare / case.name).symlink_to(case)
    assert main(["ablate", "--data", str(bare), "--out", str(tmp_path / "a"), "--rows", "cnv2", "tf", "full"]) == 2
    assert "['tf', 'full'] use the tabular encoder (TE)" in capsys.readouterr().err
