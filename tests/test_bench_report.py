"""``benchmarks/report.py``: the model table keeps every model and one line per timed input size."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"


def _report():  # the benchmarks folder is not a package
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_table_lines() -> None:
    rows = [
        # counted only (paper scale on a CPU run)
        {"model": "big", "metric": "params", "value": 4.2e8, "unit": "parameters"},
        {"model": "big", "metric": "macs", "value": 3.0e11, "unit": "MAC", "input": [3, 64, 96, 96]},
        # timed at two sizes, no params row (a throughput-only run)
        *[
            {"model": "small", "metric": m, "value": v, "unit": "volumes/s", "input": [3, s, s, s], "batch": b}
            for m, v, s, b in (
                ("train_throughput", 10.0, 96, 8),
                ("infer_throughput", 40.0, 96, 8),
                ("train_throughput", 5.0, 128, 4),
                ("infer_throughput", 20.0, 128, 4),
            )
        ],
        {
            "model": "small",
            "metric": "train_throughput",
            "value": 99.0,
            "unit": "volumes/s",
            "input": [3, 96, 96, 96],
            "batch": 8,
            "backend": "compile",
        },
    ]
    table = _report().model_table(rows)
    lines = [ln for ln in table.splitlines() if ln.startswith("| `")]
    assert [ln.split("|")[1].strip() for ln in lines] == ["`big`", "`small`", "`small`"]
    big, small96, small128 = (ln.split("|") for ln in lines)
    assert big[2].strip() == "420.00" and big[6].strip() == "" and big[7].strip() == "n/a"
    assert small96[2].strip() == "n/a" and small96[6].strip() == "96×96×96 × 8"
    assert (small96[7].strip(), small96[9].strip()) == ("10.00", "40.00")  # eager, not the compiled 99
    assert (small128[6].strip(), small128[7].strip(), small128[9].strip()) == ("128×128×128 × 4", "5.00", "20.00")


def test_a_plain_benchmark_run_leaves_the_committed_results_alone():
    """``pytest benchmarks/`` writes to a git-ignored folder; only ``--bench-save`` (or an explicit
    ``--bench-results``) writes over the committed ``benchmarks/results/bench_*``."""
    import shutil
    import subprocess

    from benchmarks.conftest import RESULTS_DIR, SCRATCH_DIR, _results_dir

    class Config:
        def __init__(self, **options: object) -> None:
            self.options = {f"--{k.replace('_', '-')}": v for k, v in options.items()}

        def getoption(self, name: str, default: object = None) -> object:
            return self.options.get(name, default)

    assert _results_dir(Config()) == SCRATCH_DIR != RESULTS_DIR
    assert _results_dir(Config(bench_save=True)) == RESULTS_DIR
    assert str(_results_dir(Config(bench_save=True, bench_results="elsewhere"))) == "elsewhere"
    git = shutil.which("git")
    if git and (RESULTS_DIR.parents[1] / ".git").exists():

        def ignored(folder: object) -> bool:
            cmd = [git, "check-ignore", "-q", f"{folder}/bench_cpu_quick.json"]
            return subprocess.run(cmd, cwd=RESULTS_DIR).returncode == 0

        assert ignored(SCRATCH_DIR) and not ignored(RESULTS_DIR)
