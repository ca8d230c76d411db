"""``spectral3d compare``, ``train --seeds`` and ``evaluate`` on ``RUN/seed_<k>/``, on tiny synthetic cohorts."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spectral3d.cli import main
from spectral3d.metrics import SCALAR_METRICS, delong_test, holm_adjust, mcnemar_test

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = ["--epochs", "1", "--batch-size", "4", "--input-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two cohorts (internal, external) and three runs: two single checkpoints and one of two seeds."""
    root = tmp_path_factory.mktemp("compare")
    paths = {"internal": root / "internal", "external": root / "external"}
    for seed, key in ((3, "internal"), (4, "external")):
        args = ["synth", "--out", str(paths[key]), "--task", "spondylitis", "--cases", "30", "--seed", str(seed)]
        assert main(args) == 0
    cache = ["--cache-dir", str(root / "cache")]
    for name, model, seed in (("a", "test_resnet_3d", ["--seed", "0"]), ("b", "test_resnet_3d", ["--seed", "5"])):
        paths[name] = root / name
        args = ["train", "--model", model, "--data", str(paths["internal"]), "--out", str(paths[name])]
        assert main([*args, *TRAIN, *cache, *seed]) == 0
    paths["s"] = root / "s"
    args = ["train", "--model", "test_resnet_3d", "--data", str(paths["internal"]), "--out", str(paths["s"])]
    assert main([*args, *TRAIN, *cache, "--seeds", "0", "1"]) == 0
    return paths


def _evaluate(run: Path, data: Path, out: Path) -> dict:
    args = ["evaluate", "--checkpoint", str(run), "--data", str(data), "--out", str(out), "--bootstrap", "30"]
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text())


def _probs(predictions_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = list(csv.DictReader(predictions_csv.open()))
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    y = np.array([classes.index(r["label"]) for r in rows])
    return y, np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])


def test_compare_equals_evaluate_per_model_and_tests_the_evaluated_predictions(runs: dict, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(runs["internal"]), "--data", str(runs["external"]), "--out", str(out)]
    assert main([*args, "--bootstrap", "30", str(runs["a"]), str(runs["b"])]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert [c["name"] for c in result["cohorts"]] == ["internal", "external"] and result["reference"] == "a"
    for cohort in result["cohorts"]:
        data = runs[cohort["name"]]
        evaluated = {k: _evaluate(runs[k], data, tmp_path / f"ev_{cohort['name']}_{k}") for k in "ab"}
        for k in "ab":
            got = cohort["models"][k]["metrics"]
            for m in SCALAR_METRICS:
                assert got[m] == evaluated[k][m], (cohort["name"], k, m)
                assert got["ci"][m] == evaluated[k]["ci"][m]
        # the tests, recomputed from evaluate's predictions.csv files (6 decimals)
        y, pa = _probs(tmp_path / f"ev_{cohort['name']}_a" / "predictions.csv")
        _, pb = _probs(tmp_path / f"ev_{cohort['name']}_b" / "predictions.csv")
        tests = cohort["models"]["b"]["tests"]
        assert "tests" not in cohort["models"]["a"]
        assert tests["auc"]["method"] == "delong"
        assert tests["auc"]["p_value"] == pytest.approx(delong_test(y, pb[:, 1], pa[:, 1])["p_value"], abs=1e-4)
        assert {k: v for k, v in tests["accuracy"].items() if k != "p_holm"} == mcnemar_test(
            y, pb.argmax(1), pa.argmax(1)
        )
        assert tests["auc"]["p_holm"] == tests["auc"]["p_value"]  # one comparison: Holm changes nothing
    md = (out / "compare.md").read_text()
    assert md.count("| Model | ACC | Spe | Sen | P | F1 | AUC | Top2 | Top3 | p AUC | p ACC |") == 2
    assert "| a | " in md and " ref | ref |" in md
    for name in ("internal", "external"):
        assert (out / f"fig5_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*args, str(runs["a"]), str(runs["b"])]) == 2  # a reused --out is refused


def test_seeds_train_evaluate_and_compare_use_the_mean(runs: dict, tmp_path: Path) -> None:
    s = runs["s"]
    assert sorted(p.name for p in s.iterdir()) == ["seed_0", "seed_1"]
    configs = [json.loads((s / f"seed_{k}" / "last" / "config.json").read_text()) for k in (0, 1)]
    assert [c["train"]["seed"] for c in configs] == [0, 1]
    summary = _evaluate(s, runs["internal"], tmp_path / "ev_s")
    each = [_evaluate(s / f"seed_{k}", runs["internal"], tmp_path / f"ev_s{k}") for k in (0, 1)]
    assert summary["seeds"] == [0, 1] and set(summary["per_seed"]) == {"0", "1"}
    for m in SCALAR_METRICS:
        values = [e[m] for e in each]
        assert summary[m] == pytest.approx(np.mean(values))
        assert summary["sd"][m] == pytest.approx(np.std(values, ddof=1))
        assert summary["per_seed"]["1"][m] == each[1][m] and summary["per_seed"]["1"]["ci"][m] == each[1]["ci"][m]
    _, p_mean = _probs(tmp_path / "ev_s" / "predictions.csv")
    y, p0 = _probs(tmp_path / "ev_s0" / "predictions.csv")
    _, p1 = _probs(tmp_path / "ev_s1" / "predictions.csv")
    np.testing.assert_allclose(p_mean, (p0 + p1) / 2, atol=2e-6)
    assert "seed 0" in (tmp_path / "ev_s" / "metrics.md").read_text()

    out = tmp_path / "cmp"
    args = ["compare", "--data", str(runs["internal"]), "--out", str(out), "--bootstrap", "0", "--no-figure"]
    assert main([*args, str(runs["a"]), str(s), str(runs["b"])]) == 0
    cohort = json.loads((out / "compare.json").read_text())["cohorts"][0]
    assert list(cohort["models"]) == ["a", "s", "b"]  # same model name: labelled by path
    multi = cohort["models"]["s"]
    assert multi["metrics"]["auc"] == pytest.approx(summary["auc"])
    raw = [cohort["models"][k]["tests"]["auc"]["p_value"] for k in ("s", "b")]
    assert [cohort["models"][k]["tests"]["auc"]["p_holm"] for k in ("s", "b")] == pytest.approx(holm_adjust(raw))
    assert multi["tests"]["accuracy"]["accuracy_a"] == pytest.approx((p_mean.argmax(1) == y).mean())
    assert not list(out.glob("*.png"))


def _with_config(src: Path, dst: Path, **changes) -> Path:
    ckpt = (src / "best").resolve()
    shutil.copytree(ckpt, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_compare_refuses_another_class_order_or_sequences(
    runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = json.loads(((runs["a"] / "best").resolve() / "config.json").read_text())
    flipped = _with_config(runs["b"], tmp_path / "flipped", class_names=config["class_names"][::-1])
    other = _with_config(runs["b"], tmp_path / "other", sequences=["t2fs", "t1"])
    renamed = _with_config(runs["b"], tmp_path / "renamed", class_names=["x", "y"])
    for bad, words in ((flipped, "class order ['"), (other, "sequence order ['t2fs'"), (renamed, "class names ['x'")):
        args = ["compare", "--data", str(runs["internal"]), "--out", str(tmp_path / "cmp"), str(runs["a"]), str(bad)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert words in err and str(bad) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "cmp").exists()  # refused before any work


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bootstrap", "-1"], "--bootstrap"),
        (["--data", "/nonexistent"], "not a cohort folder"),
    ],
)
def test_compare_user_mistakes(runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture, argv, message) -> None:
    base = ["compare", "--data", str(runs["internal"]), "--out", str(tmp_path / "c")]
    assert main([*base, *argv, str(runs["a"]), str(runs["b"])]) == 2
    assert main([*base, str(runs["a"])]) == 2  # one model: nothing to compare
    err = capsys.readouterr().err
    assert message in err and "at least 2 models" in err and "Traceback" not in err
    # argparse: --seed and --seeds exclude each other
    assert main(["train", "--model", "test_resnet_3d", "--data", "x", "--out", "y", "--seed", "1", "--seeds", "0"]) == 2
    assert "not allowed with argument --seed" in capsys.readouterr().err


def test_missing_matplotlib_is_one_line_before_any_work(runs: dict, tmp_path: Path) -> None:
    """A Python without matplotlib (``sys.modules["matplotlib"] = None`` makes it unimportable)."""
    code = (
        "import sys; sys.modules['matplotlib'] = None; from spectral3d.cli import main; "
        f"sys.exit(main(['compare', '--data', {str(runs['internal'])!r}, '--out', {str(tmp_path / 'c')!r}, "
        f"{str(runs['a'])!r}, {str(runs['b'])!r}]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "matplotlib" in proc.stderr and "pip install 'spectral3d[apps]'" in proc.stderr
    assert "--no-figure" in proc.stderr and not (tmp_path / "c").exists()
