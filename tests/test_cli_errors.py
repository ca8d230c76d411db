"""Every user mistake and fault the CLI can meet, walked through ``spectral3d.cli.main`` in-process.

Each row of the table builds one bad input beside a tiny cohort (8 spondylitis cases at 16³) and a run
trained once (``test_resnet_3d``, one epoch). The command must answer with exit status 2 and exactly
one line on stderr that names the flag or the file, no traceback, and leave every existing run
byte for byte as it was (and no empty run directory behind).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pytest

from spectral3d.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


class Env(NamedTuple):
    cohort: Path
    run: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("cli_errors")
    cohort, run = root / "cohort", root / "run"
    argv = ["synth", "--out", str(cohort), "--task", "spondylitis", "--cases", "8", "--size", "16", "--seed", "1"]
    assert main(argv) == 0
    assert main(_train_argv(cohort, run)) == 0
    return Env(cohort, run)


def _train_argv(cohort: Path, out: Path, *extra: str, model: str = "test_resnet_3d") -> list[str]:
    base = ["train", "--model", model, "--data", str(cohort), "--out", str(out), "--epochs", "1"]
    return [*base, "--batch-size", "2", "--input-size", "16", "--no-progress", *extra]


def tree_digest(root: Path) -> dict[str, str]:
    """Every file's content hash and every symlink's target under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + str(p.readlink())
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _edit_cases(cohort: Path, edit: Callable[[dict[str, str]], None]) -> None:
    path = cohort / "cases.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        edit(row)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _first_case(cohort: Path, split: str = "train") -> Path:
    with open(cohort / "cases.csv", newline="") as fh:
        return cohort / next(r["case_id"] for r in csv.DictReader(fh) if r["split"] == split)


def _file_under_a_file(tmp: Path) -> Path:
    (tmp / "a_file").write_text("x")
    return tmp / "a_file" / "sub"


# ---------------------------------------------------------------- the table
# name -> builder(env, tmp) returning (argv, the flag or file the one line must name)


def _reused_run(env: Env, tmp: Path) -> tuple[list[str], str]:
    return _train_argv(env.cohort, env.run), "--out"


def _flag(*extra: str, names: str | None = None) -> Callable[[Env, Path], tuple[list[str], str]]:
    def build(env: Env, tmp: Path) -> tuple[list[str], str]:
        return _train_argv(env.cohort, tmp / "new_run", *extra), names or extra[0]

    return build


def _input_size_model_cannot_take(env: Env, tmp: Path) -> tuple[list[str], str]:
    return _train_argv(env.cohort, tmp / "new_run", model="test_convnextv2_3d"), "--input-size"


def _resume_nothing(env: Env, tmp: Path) -> tuple[list[str], str]:
    return _train_argv(env.cohort, tmp / "new_run", "--resume"), "--resume"


def _resume_other_model(env: Env, tmp: Path) -> tuple[list[str], str]:
    run = _copy(env.run, tmp / "run")
    return _train_argv(env.cohort, run, "--resume", "--input-size", "32", model="test_convnextv2_3d"), "config.json"


def _resume_other_classes(env: Env, tmp: Path) -> tuple[list[str], str]:
    run = _copy(env.run, tmp / "run")
    cohort = _copy(env.cohort, tmp / "cohort")
    _edit_cases(cohort, lambda row: row.update(label=row["label"].replace("pyogenic", "bacterial")))
    return _train_argv(cohort, run, "--epochs", "2", "--resume"), "config.json"


def _desamba_sequences_absent(env: Env, tmp: Path) -> tuple[list[str], str]:
    # test_desamba_3d's pretrained_cfg names t1, t2, t2fs; this cohort has no t2
    return _train_argv(env.cohort, tmp / "new_run", "--input-size", "32", model="test_desamba_3d"), "--sequences"


def _resume_damaged(file: str, damage: Callable[[Path], None]) -> Callable[[Env, Path], tuple[list[str], str]]:
    def build(env: Env, tmp: Path) -> tuple[list[str], str]:
        run = _copy(env.run, tmp / "run")
        damage(run / "epoch_0001" / file)
        return _train_argv(env.cohort, run, "--epochs", "2", "--resume"), file

    return build


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


class _Payload:
    """What an attacker would pickle: unpickling it would run code (it is never unpickled)."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def _pickle_in_place(path: Path) -> None:
    import torch

    torch.save({"epoch": 1, "payload": _Payload()}, path)


def _malformed_json(path: Path) -> None:
    path.write_text(path.read_text()[:-40])


def _out_under_a_file(env: Env, tmp: Path) -> tuple[list[str], str]:
    return _train_argv(env.cohort, _file_under_a_file(tmp)), "--out"


def _cache_under_a_file(env: Env, tmp: Path) -> tuple[list[str], str]:
    return _train_argv(env.cohort, tmp / "new_run", "--cache-dir", str(_file_under_a_file(tmp))), "--cache-dir"


def _cohort_edit(edit: Callable[[dict[str, str]], None]) -> Callable[[Env, Path], tuple[list[str], str]]:
    def build(env: Env, tmp: Path) -> tuple[list[str], str]:
        cohort = _copy(env.cohort, tmp / "cohort")
        _edit_cases(cohort, edit)
        return _train_argv(cohort, tmp / "new_run"), "cases.csv"

    return build


def _typo_in_test_label(row: dict[str, str]) -> None:
    if row["split"] == "test":
        row["label"] = "tuberculos"


def _one_label(row: dict[str, str]) -> None:
    row["label"] = "pyogenic"


def _zero_size_image(env: Env, tmp: Path) -> tuple[list[str], str]:
    cohort = _copy(env.cohort, tmp / "cohort")
    nib.save(nib.Nifti1Image(np.zeros((0, 16, 16), np.float32), np.eye(4)), _first_case(cohort) / "t1.nii.gz")
    return _train_argv(cohort, tmp / "new_run"), "t1.nii.gz"


def _truncated_image_with_workers(env: Env, tmp: Path) -> tuple[list[str], str]:
    cohort = _copy(env.cohort, tmp / "cohort")
    path = _first_case(cohort) / "t2fs.nii.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:400]))  # a valid gzip of half a header
    return _train_argv(cohort, tmp / "new_run", "--workers", "1"), "t2fs.nii.gz"


def _absent_sequence(env: Env, tmp: Path) -> tuple[list[str], str]:
    return _train_argv(env.cohort, tmp / "new_run", "--sequences", "t1,t3"), "--sequences"


def _evaluate(env: Env, checkpoint: Path, *extra: str) -> list[str]:
    return ["evaluate", "--checkpoint", str(checkpoint), "--data", str(env.cohort), "--no-progress", *extra]


def _evaluate_damaged(edit: Callable[[Path], None], names: str) -> Callable[[Env, Path], tuple[list[str], str]]:
    def build(env: Env, tmp: Path) -> tuple[list[str], str]:
        run = _copy(env.run, tmp / "run")
        edit(run / "epoch_0001")
        return _evaluate(env, run), names

    return build


def _other_head(ckpt: Path) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    config["model_kwargs"]["num_classes"] = 3
    config["class_names"] = ["a", "b", "c"]
    (ckpt / "config.json").write_text(json.dumps(config))


def _predict(env: Env, tmp: Path, table_rows: Callable[[list[str]], list[str]]) -> list[str]:
    lines = (env.cohort / "cases.csv").read_text().splitlines()
    (tmp / "clinical.csv").write_text("\n".join(table_rows(lines)) + "\n")
    case = _first_case(env.cohort)
    return ["predict", "--checkpoint", str(env.run), str(case), "--tabular", str(tmp / "clinical.csv")]


def _drop_column(lines: list[str]) -> list[str]:
    return [",".join(line.split(",")[:-1]) for line in lines]


def _evaluate_out_under_a_file(env: Env, tmp: Path) -> tuple[list[str], str]:
    return _evaluate(env, env.run, "--out", str(_file_under_a_file(tmp))), "--out"


def _predict_table_without(what: str) -> Callable[[Env, Path], tuple[list[str], str]]:
    def build(env: Env, tmp: Path) -> tuple[list[str], str]:
        return _predict(env, tmp, _drop_column if what == "column" else lambda lines: lines[:1]), "clinical.csv"

    return build


def _predict_out_a_directory(env: Env, tmp: Path) -> tuple[list[str], str]:
    return [*_predict(env, tmp, lambda lines: lines), "--out", str(tmp)], "--out"


def _no_matplotlib(env: Env, tmp: Path) -> tuple[list[str], str]:
    case = str(_first_case(env.cohort))
    return ["gradcam", "--checkpoint", str(env.run), case, "--out", str(tmp / "cam")], "matplotlib"


CASES: dict[str, Callable[[Env, Path], tuple[list[str], str]]] = {
    "train into an existing run": _reused_run,
    "--resume with --overwrite": _flag("--resume", "--overwrite", names="--overwrite"),
    "negative --patience": _flag("--patience", "-1"),
    "negative --weight-decay": _flag("--weight-decay", "-0.1"),
    "negative --warmup-epochs": _flag("--warmup-epochs", "-1"),
    "--class-weights not numbers": _flag("--class-weights", "foo"),
    "--class-weights of another length": _flag("--class-weights", "1,2,3"),
    "unknown --nan-policy": _flag("--nan-policy", "ignore"),
    "zero --epochs": _flag("--epochs", "0"),
    "zero --input-size": _flag("--input-size", "0"),
    "input size the model cannot take": _input_size_model_cannot_take,
    "--resume without a run": _resume_nothing,
    "--resume with another model": _resume_other_model,
    "--resume with another class set": _resume_other_classes,
    "a model's sequences absent from the cohort": _desamba_sequences_absent,
    "--resume, truncated model.safetensors": _resume_damaged("model.safetensors", _truncate),
    "--resume, corrupt training_state.pt": _resume_damaged("training_state.pt", _truncate),
    "--resume, a pickle as training_state.pt": _resume_damaged("training_state.pt", _pickle_in_place),
    "--resume, malformed config.json": _resume_damaged("config.json", _malformed_json),
    "unwritable --out": _out_under_a_file,
    "unwritable --cache-dir": _cache_under_a_file,
    "a label only in the test split": _cohort_edit(_typo_in_test_label),
    "a one-class cohort": _cohort_edit(_one_label),
    "a zero-size image": _zero_size_image,
    "a data error inside a DataLoader worker": _truncated_image_with_workers,
    "a sequence in no case": _absent_sequence,
    "evaluate, malformed config.json": _evaluate_damaged(lambda c: _malformed_json(c / "config.json"), "config.json"),
    "evaluate, a head of another size": _evaluate_damaged(_other_head, "model.safetensors"),
    "evaluate, unwritable --out": _evaluate_out_under_a_file,
    "evaluate, negative --bootstrap": lambda env, tmp: (_evaluate(env, env.run, "--bootstrap", "-1"), "--bootstrap"),
    "predict --tabular without a column": _predict_table_without("column"),
    "predict --tabular without the case": _predict_table_without("case"),
    "predict --out a directory": _predict_out_a_directory,
    "gradcam without matplotlib": _no_matplotlib,
    "synth into a cohort": lambda env, tmp: (["synth", "--out", str(env.cohort), "--cases", "8"], "--overwrite"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_mistake_is_one_line_exit_2_and_changes_nothing(
    name: str, env: Env, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    if name == "gradcam without matplotlib":
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # what find_spec reports for an absent package
    argv, names = CASES[name](env, tmp_path)
    before = {p: tree_digest(p) for p in (env.run, env.cohort, *(d for d in tmp_path.iterdir() if d.is_dir()))}
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert names in lines[0] and "Traceback" not in err and "unpickled!" not in err, err
    assert lines[0].startswith(f"spectral3d {argv[0]}: error: "), err
    for path, digest in before.items():
        assert tree_digest(path) == digest, f"{path} changed"
    assert not (tmp_path / "new_run").exists(), "a refused run left a directory behind"


# ---------------------------------------------------------------- what is not a mistake is handled quietly
ROOT = Path(__file__).resolve().parents[1]


def test_overwrite_removes_exactly_the_run_and_nothing_else(env: Env, tmp_path: Path) -> None:
    run = _copy(env.run, tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    (run / "mine").mkdir()
    (run / "mine" / "data.csv").write_text("1,2")
    old_log = (run / "log.jsonl").read_text()
    (run / "epoch_0007").mkdir()  # a later epoch of the old run: must not survive beside the new one
    assert main([*_train_argv(env.cohort, run), "--overwrite"]) == 0
    assert (run / "notes.txt").read_text() == "mine" and (run / "mine" / "data.csv").read_text() == "1,2"
    assert sorted(p.name for p in run.glob("epoch_*")) == ["epoch_0001"]
    assert len((run / "log.jsonl").read_text().splitlines()) == 1 and (run / "log.jsonl").read_text() != old_log


def test_log_and_metrics_are_strict_json_and_checkpoint_may_be_a_file(env: Env, tmp_path: Path) -> None:
    def strict(text: str) -> object:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))

    record = strict((env.run / "log.jsonl").read_text().splitlines()[0])
    assert record["val_auc"] is None  # one validation case: AUC undefined, written as null
    ckpt_file = env.run / "best" / "model.safetensors"
    assert main(_evaluate(env, ckpt_file, "--out", str(tmp_path / "ev"), "--bootstrap", "10")) == 0
    metrics = strict((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["auc"] is None and metrics["checkpoint"] == str((env.run / "epoch_0001").resolve())


def test_a_stray_file_is_ignored_with_one_note(env: Env, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cohort = _copy(env.cohort, tmp_path / "cohort")
    case = _first_case(cohort)
    shutil.copy(case / "t1.nii.gz", case / "t1_backup.nii.gz")
    capsys.readouterr()
    assert main([*_train_argv(cohort, tmp_path / "run"), "--skip-bad"]) == 0
    warnings_ = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings_) == 1 and f"{case.name}/t1_backup.nii.gz" in warnings_[0], warnings_
    config = json.loads((tmp_path / "run" / "last" / "config.json").read_text())
    assert config["sequences"] == ["t1", "t2fs"] and not (tmp_path / "run" / "skipped.json").exists()


def test_no_validation_split_and_no_clinical_values_are_warned(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cohort = _copy(env.cohort, tmp_path / "cohort")
    _edit_cases(cohort, lambda row: row.update(split="train") if row["split"] == "val" else None)
    capsys.readouterr()
    assert main(_train_argv(cohort, tmp_path / "run")) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "no validation cases" in err
    assert main(["predict", "--checkpoint", str(env.run), str(_first_case(env.cohort))]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clinical values are missing" in err[0] and "no tabular CSV" in err[0]


def test_skip_bad_scan_shows_progress(env: Env, capsys: pytest.CaptureFixture) -> None:
    from spectral3d.data import Cohort, PreprocessConfig

    capsys.readouterr()
    Cohort.from_folder(env.cohort).verify(PreprocessConfig(input_size=16), skip_bad=True, progress=True)
    assert "checking cases" in capsys.readouterr().err


def test_train_flags_take_their_defaults_from_train_config() -> None:
    from spectral3d.cli import _TRAIN_FLAGS, NAN_POLICIES, _parser
    from spectral3d.data.nifti import NAN_POLICIES as LIBRARY_NAN_POLICIES
    from spectral3d.train import TrainConfig

    args = _parser().parse_args(["train", "--model", "m", "--data", "d", "--out", "o"])
    default = TrainConfig()
    assert {n: getattr(args, n) for n in _TRAIN_FLAGS} == {n: getattr(default, n) for n in _TRAIN_FLAGS}
    assert NAN_POLICIES == LIBRARY_NAN_POLICIES


def test_help_imports_no_torch() -> None:
    code = (
        "import contextlib, io, sys\n"
        "from spectral3d.cli import main\n"
        "for argv in (['--help'], *([c, '--help'] for c in ('synth', 'train', 'evaluate', 'predict', 'gradcam', "
        "'demo', 'models'))):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(argv) == 0, argv\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'nibabel', 'scipy')))\n"
    )
    env_vars = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], env=env_vars, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ``None`` in sys.modules is what Python reports for an absent package: import fails, find_spec is None
_BLOCKER = "import sys\nsys.modules.update(sklearn=None, matplotlib=None)\n"


def test_demo_runs_on_a_plain_install_and_a_rerun_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``spectral3d demo --quick`` with scikit-learn and matplotlib made unimportable (a plain ``pip
    install spectral3d`` has neither), then again into the same folder: cohort and runs are reused."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_BLOCKER)
    env_vars = {"PYTHONPATH": f"{blocker}:{ROOT}", "PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"}
    demo = tmp_path / "demo"
    cmd = [sys.executable, "-m", "spectral3d.cli", "demo", "--quick", "--out", str(demo)]
    proc = subprocess.run(cmd, env=env_vars, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "desamba_spine_tiny" in proc.stdout and "convnextv2_atto_3d" in proc.stdout
    check = [sys.executable, "-c", "import sklearn"]
    assert subprocess.run(check, env=env_vars, capture_output=True).returncode != 0  # the blocker works
    results = json.loads((demo / "results.json").read_text())
    assert set(results["metrics"]) == {"desamba_spine_tiny", "convnextv2_atto_3d"}
    digest = tree_digest(demo / "runs")
    assert main(["demo", "--quick", "--out", str(demo)]) == 0
    out = capsys.readouterr().out
    assert "using the cohort already in" in out and out.count("] resuming ") == 2
    assert tree_digest(demo / "runs") == digest  # finished runs: only evaluated again
