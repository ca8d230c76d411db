"""``spectral3d ablate``: the paper's Table 3 (ablation) and Fig. 5 on your cohort, resumable row by row.

Every requested row (``backbones3d.desamba.ABLATION_ROWS``, registered as ``desamba_spine_ablation_<row>``
or, for two sequences, ``desamba_spondylitis_ablation_<row>``) is trained with one recipe (config, scale,
input size) per seed and evaluated on the test split: flags, parameters, MACs, ACC, F1, Top-3, AUC with
95 % CIs and p-values against ``full`` (as :mod:`spectral3d.train.compare`, Holm-adjusted across rows).

Layout of ``OUT``::

    ablation.json                    the recipe (a rerun with another recipe is refused)
    runs/<row>/seed_<k>/             one run directory per row and seed (+ done.json once finished)
    cache/                           preprocessed volumes, shared by the rows (default --cache-dir)
    table3.md  table3.json  fig5.png

Resuming *(ours)*: a row-seed with ``done.json`` is skipped, one with a ``last`` checkpoint resumes from
it (to the exact batch), the rest start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spectral3d.train.checkpoint import write_json
from spectral3d.train.compare import (
    TEST_NOTE,
    efficiency_figure,
    evaluate_runs,
    load_model_run,
    markdown_table,
    metric_cell,
    model_cost,
    p_cell,
    require_matplotlib,
)
from spectral3d.train.config import TrainConfig

if TYPE_CHECKING:
    from spectral3d.data import Cohort

__all__ = ["ROW_LABELS", "AblationResult", "ablation_model_name", "run_ablation"]

#: The paper's names of Table 3's rows, in its order.
ROW_LABELS = {
    "cnv2": "CNV2",
    "samnet": "SAMNet",
    "mo": "MO",
    "desn": "DeSN",
    "demo": "DeMO",
    "samba": "Samba",
    "tf": "w/ TF",
    "de_c": "w/ De (C)",
    "de_s": "w/ De (S)",
    "full": "DeSamba",
}
_FLAGS = ("TE", "CE", "FP", "ME", "De", "C", "S")
_TABLE3_METRICS = (("ACC", "accuracy"), ("F1", "f1"), ("Top3", "top3_accuracy"), ("AUC", "auc"))
# fields of TrainConfig that do not change what a row learns (not part of the recipe)
_NOT_RECIPE = ("seed", "progress", "num_workers", "keep_last")


@dataclasses.dataclass
class AblationResult:
    """What :func:`run_ablation` did: rows trained or skipped, whether it stopped early, the table."""

    out: Path
    rows: list[str]
    seeds: list[int]
    trained: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False
    table: str | None = None
    results: dict[str, Any] | None = None


def ablation_model_name(sequences: Sequence[str], row: str) -> str:
    """The registered preset of ``row`` for a cohort: the spondylitis presets for two sequences, else spine."""
    return f"desamba_{'spondylitis' if len(sequences) == 2 else 'spine'}_ablation_{row}"


def _check_rows(rows: Sequence[str] | None) -> list[str]:
    from backbones3d.desamba import ABLATION_ROWS

    rows = list(ABLATION_ROWS) if rows is None else list(rows)
    unknown = [r for r in rows if r not in ABLATION_ROWS]
    if unknown or not rows:
        raise ValueError(f"rows: expected rows among {list(ABLATION_ROWS)}, got {unknown or rows}")
    if len(set(rows)) != len(rows):
        raise ValueError(f"rows: each row once, got {rows}")
    return [r for r in ABLATION_ROWS if r in rows]  # Table 3's order


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds: expected distinct non-negative integers, got {seeds}")
    return seeds


def _recipe(data: Path, scale: str, cfg: TrainConfig, model_kwargs: Mapping[str, Any], input_size: Any) -> dict:
    train = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_RECIPE}
    size = list(input_size) if isinstance(input_size, (tuple, list)) else input_size
    return {"data": str(data), "scale": scale, "model_kwargs": dict(model_kwargs), "input_size": size, "train": train}


def _check_recipe(out: Path, recipe: dict[str, Any]) -> None:
    path = out / "ablation.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    diffs = [f"{k}: {old.get(k)!r} → {v!r}" for k, v in recipe.items() if k != "train" and old.get(k) != v]
    old_train = old.get("train", {})
    diffs += [f"{k}: {old_train.get(k)!r} → {v!r}" for k, v in recipe["train"].items() if old_train.get(k) != v]
    if diffs:
        raise ValueError(
            f"out: {out} holds an ablation with another recipe ({'; '.join(diffs[:3])}); "
            "rerun with the same options to resume it, or pass another --out"
        )


def _write_json(path: Path, data: Any) -> None:
    """:func:`write_json` through a temporary file and a rename (a marker is whole or absent)."""
    tmp = path.with_name(f".{path.name}.tmp")
    write_json(tmp, data)
    os.replace(tmp, path)


def run_ablation(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    rows: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    scale: str = "paper",
    cfg: TrainConfig | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    input_size: int | Sequence[int] | None = None,
    split: str = "test",
    n_bootstrap: int = 1000,
    cache_dir: str | os.PathLike | None = None,
    figure: bool = True,
    figure_metric: str = "auc",
    stop_after_steps: int | None = None,
) -> AblationResult:
    """Train the ablation rows on the cohort ``data`` and write Table 3 and Fig. 5 into ``out``.

    Everything is checked before training (TE rows need clinical columns, De rows two sequences).

    Args:
        data: the cohort folder (train/val/test splits in ``cases.csv``).
        out: the ablation folder (layout in the module docstring); rerun to resume.
        rows: Table 3 rows (default all ten); trained and listed in the paper's order.
        seeds: one run per seed and row.
        scale: ``"paper"``, ``"small"`` or ``"tiny"``.
        cfg: the training recipe (its ``seed`` is replaced by each of ``seeds``).
        model_kwargs: extra constructor arguments for every row (e.g. ``drop_rate``).
        input_size: the model grid (default: the preset's input size at ``scale``).
        split: the split the table reports.
        n_bootstrap: resamples for the CIs and the paired bootstrap.
        cache_dir: cache of preprocessed volumes (default ``out/cache``).
        figure: write ``fig5.png`` (needs matplotlib).
        figure_metric: ``"auc"`` or ``"accuracy"`` on the figure's y axis.
        stop_after_steps: stop after this many optimizer steps of this call, as an interrupt would
            (a deterministic stand-in for Ctrl-C in tests); a rerun resumes.

    Returns:
        An :class:`AblationResult` (``table``/``results`` are ``None`` when interrupted).

    Example::

        >>> run_ablation("cohort", "ablation", scale="tiny", rows=["cnv2", "full"])  # doctest: +SKIP
    """
    cfg = cfg or TrainConfig()
    model_kwargs = dict(model_kwargs or {})
    data, out = Path(data).resolve(), Path(out)
    rows, seeds, cohort = _check_ablation(data, rows, seeds, scale, split, figure, figure_metric, stop_after_steps)
    recipe = _recipe(data, scale, cfg, model_kwargs, input_size)
    _check_recipe(out, recipe)

    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "ablation.json", recipe)
    cache_dir = Path(cache_dir) if cache_dir is not None else out / "cache"
    result = AblationResult(out, rows, seeds)
    stop_when = _step_budget(stop_after_steps)
    for seed in seeds:  # seed-major: a run cut short still leaves whole tables for its first seeds
        for row in rows:
            run = _RowRun(ablation_model_name(cohort.sequences, row), row, seed, out / "runs" / row / f"seed_{seed}")
            if not _train_row(run, result, data, scale, cfg, model_kwargs, input_size, cache_dir, stop_when):
                result.interrupted = True
                return result
    result.results = _evaluate(data, out, rows, seeds, split, n_bootstrap)
    result.table = table3(result.results, with_ci=n_bootstrap > 0)
    write_json(out / "table3.json", result.results)
    (out / "table3.md").write_text(result.table + "\n\n" + result.results["note"] + "\n")
    if figure:
        _write_figure(result.results, out / "fig5.png", figure_metric, f"ablation rows, {split} split of {data.name}")
    return result


def _check_ablation(
    data: Path,
    rows: Sequence[str] | None,
    seeds: Sequence[int],
    scale: str,
    split: str,
    figure: bool,
    figure_metric: str,
    stop_after_steps: int | None,
) -> tuple[list[str], list[int], Cohort]:
    """The rows, seeds and cohort, once the arguments and the cohort are checked against the rows."""
    from backbones3d.desamba import ABLATION_ROWS, SCALES
    from spectral3d.data import Cohort

    rows, seeds = _check_rows(rows), _check_seeds(seeds)
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {sorted(SCALES)}, got {scale!r}")
    if figure_metric not in ("auc", "accuracy"):
        raise ValueError(f"figure_metric: expected 'auc' or 'accuracy', got {figure_metric!r}")
    if stop_after_steps is not None and stop_after_steps < 1:
        raise ValueError(f"stop_after_steps: expected a positive int or None, got {stop_after_steps}")
    cohort = Cohort.from_folder(data)
    need_te = [r for r in rows if ABLATION_ROWS[r][0]]
    if need_te and cohort.num_tabular == 0:
        raise ValueError(f"rows: {need_te} use the tabular encoder (TE) but {data} has no clinical columns")
    need_de = [r for r in rows if ABLATION_ROWS[r][4]]
    if need_de and len(cohort.sequences) < 2:
        raise ValueError(f"rows: {need_de} decouple sequences (De) but {data} has one sequence")
    for name in ("train", split):
        cohort.split(name)
    if figure:
        require_matplotlib()
    return rows, seeds, cohort


def _step_budget(stop_after_steps: int | None) -> Callable[[int], bool] | None:
    """``stop_when`` for :func:`~spectral3d.train.fit`: true at the ``stop_after_steps``-th step of this call."""
    if stop_after_steps is None:
        return None
    steps = [0]

    def stop_when(_step: int) -> bool:
        steps[0] += 1
        return steps[0] >= stop_after_steps

    return stop_when


@dataclasses.dataclass
class _RowRun:
    """One (row, seed) run: the registered model name and the run directory."""

    model: str
    row: str
    seed: int
    run_dir: Path

    @property
    def tag(self) -> str:
        return f"{self.row}/seed_{self.seed}"


def _train_row(
    run: _RowRun,
    result: AblationResult,
    data: Path,
    scale: str,
    cfg: TrainConfig,
    model_kwargs: dict[str, Any],
    input_size: int | Sequence[int] | None,
    cache_dir: Path,
    stop_when: Callable[[int], bool] | None,
) -> bool:
    """Train (or resume, or skip when done) one run; ``False`` when it was interrupted."""
    from spectral3d.train.workflow import train_on_cohort

    if (run.run_dir / "done.json").is_file():
        result.skipped.append(run.tag)
        return True
    resume = (run.run_dir / "last").exists()
    if run.run_dir.exists() and not resume:  # a start that saved nothing: ours to clear
        shutil.rmtree(run.run_dir)
    print(f"ablate: {'resuming' if resume else 'training'} {run.tag} ({run.model}, scale {scale})", flush=True)
    fit = train_on_cohort(
        run.model,
        data,
        run.run_dir,
        dataclasses.replace(cfg, seed=run.seed),
        model_kwargs={"scale": scale, **model_kwargs},
        input_size=input_size,
        cache_dir=cache_dir,
        resume=resume,
        stop_when=stop_when,
    )
    if fit.interrupted:
        return False
    done = {"epochs_done": fit.epochs_done, "best_epoch": fit.best_epoch, "best_val_auc": fit.best_auc}
    _write_json(run.run_dir / "done.json", done)
    result.trained.append(run.tag)
    return True


def _write_figure(results: dict[str, Any], path: Path, metric: str, title: str) -> None:
    """Fig. 5: each row's ``metric`` (%) against its parameters and MACs."""
    points = [
        {"label": ROW_LABELS[r], "params": e["params"], "macs": e["macs"], "value": 100 * e["metrics"][metric]}
        for r, e in results["rows"].items()
    ]
    efficiency_figure(points, path, "AUC (%)" if metric == "auc" else "accuracy (%)", title)


def _evaluate(data: Path, out: Path, rows: list[str], seeds: list[int], split: str, n_bootstrap: int) -> dict[str, Any]:
    from backbones3d.desamba import ABLATION_ROWS

    runs = [load_model_run(out / "runs" / row, seeds=seeds) for row in rows]
    for run, row in zip(runs, rows):
        run.label = row
    reference = rows.index("full") if "full" in rows else 0
    table = evaluate_runs(runs, data, split, n_bootstrap=n_bootstrap, reference=reference)
    results: dict[str, Any] = {"split": split, "n": table["n"], "seeds": seeds, "reference": rows[reference]}
    results["rows"] = {
        row: {
            "label": ROW_LABELS[row],
            "model": run.config["model"],
            "flags": dict(zip(_FLAGS, map(bool, ABLATION_ROWS[row]))),
            **model_cost(run.config),
            **table["models"][row],
        }
        for row, run in zip(rows, runs)
    }
    results["note"] = TEST_NOTE.replace("the reference", f"the reference ({ROW_LABELS[rows[reference]]})")
    return results


def table3(results: dict[str, Any], with_ci: bool = True) -> str:
    """Paper Table 3 from :func:`run_ablation`'s results: flags, size, cost, metrics, p against ``full``."""
    header = ["Model", *_FLAGS, "Params (M)", "GMACs", *(c for c, _ in _TABLE3_METRICS), "p AUC", "p ACC"]
    rows = []
    for entry in results["rows"].values():
        test = entry.get("tests")
        rows.append(
            [
                entry["label"],
                *("✓" if entry["flags"][f] else "" for f in _FLAGS),
                f"{entry['params'] / 1e6:.2f}",
                f"{entry['macs'] / 1e9:.3f}",
                *(metric_cell(entry["metrics"], key, with_ci) for _, key in _TABLE3_METRICS),
                p_cell(test["auc"] if test else None),
                p_cell(test["accuracy"] if test else None),
            ]
        )
    return markdown_table(header, rows)
