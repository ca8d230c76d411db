"""``spectral3d compare`` and multi-seed evaluation: the paper's Tables 1–2 with p-values, and Fig. 5.

A model is a checkpoint, a run directory (its ``best``) or a multi-seed directory ``RUN/seed_<k>/``
(:func:`load_model_run`). Statistics (:mod:`spectral3d.metrics`), each model against the reference
(the first) on the same cases: AUC by DeLong's test for two classes, else by the paired bootstrap of
the macro one-vs-rest AUC; accuracy by McNemar's test; p-values Holm-adjusted per metric and table.

Choices *(ours)*:
- Several seeds: a metric is the mean over seeds (as the paper's mean of 3 runs) ± sample sd; its
  95 % CI is the percentile bootstrap of that mean over resampled cases (one resample for every
  seed); paired tests use the mean of the seeds' probabilities.
- Models must share class names, class order and sequences, and predict the same case ids.
- Fig. 5: x = GMACs (``spectral3d.flops.count_model`` on the meta device at the checkpoint's input
  size, FFTs included), y = AUC or accuracy in %, marker area ∝ parameters.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spectral3d.metrics import (
    SCALAR_METRICS,
    TABLE_COLUMNS,
    bootstrap_ci_of_mean,
    classification_metrics,
    delong_test_ovr,
    holm_adjust,
    mcnemar_test,
    paired_bootstrap_auc,
)
from spectral3d.train.checkpoint import load_config, resolve_checkpoint, write_json

__all__ = [
    "TEST_NOTE",
    "ModelRun",
    "Predictions",
    "compare_models",
    "comparison_table",
    "efficiency_figure",
    "evaluate_runs",
    "evaluate_seeds",
    "load_model_run",
    "markdown_table",
    "metric_cell",
    "model_cost",
    "p_cell",
    "paired_tests",
    "predict_run",
    "require_matplotlib",
    "seed_runs",
    "seeds_table",
    "summarize",
]

_SEED_DIR = re.compile(r"seed_(\d+)")
TEST_NOTE = (
    "p AUC: DeLong (two classes) or paired bootstrap of the macro one-vs-rest AUC (more classes); "
    "p ACC: McNemar (exact below 25 discordant cases, chi-square with continuity correction above); "
    "both against the reference, Holm-adjusted within the table per metric. Several seeds: mean ± sd "
    "over seeds, CI of the mean by bootstrap over cases, tests on the mean of the seeds' probabilities."
)


def require_matplotlib() -> None:
    """Raise ``ImportError`` with the install command when matplotlib (the ``apps`` extra) is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError('matplotlib is needed for the figure: pip install "spectral3d[apps]" (or pass --no-figure)')


# ----- models ------------------------------------------------------------------------------------
@dataclasses.dataclass
class ModelRun:
    """One model to evaluate: one checkpoint per seed (``seeds = [None]`` for a single checkpoint)."""

    path: Path
    checkpoints: list[Path]
    seeds: list[int | None]
    config: dict[str, Any]
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.config["model"]


def seed_runs(path: str | os.PathLike) -> dict[int, Path]:
    """The ``seed_<k>`` run directories under ``path`` (seed → directory), ``{}`` for anything else."""
    p = Path(path)
    if not p.is_dir() or (p / "config.json").is_file():
        return {}
    found = {int(m.group(1)): d for d in p.iterdir() if d.is_dir() and (m := _SEED_DIR.fullmatch(d.name))}
    return dict(sorted(found.items()))


def _same_task(config: dict[str, Any], ref: dict[str, Any], where: str, ref_where: str) -> None:
    for key, what, order in (
        ("class_names", "class names", "class order"),
        ("sequences", "sequences", "sequence order"),
    ):
        if list(config[key]) != list(ref[key]):
            kind = order if sorted(config[key]) == sorted(ref[key]) else what
            raise ValueError(
                f"{where}: {kind} {list(config[key])} differs from {ref_where}'s {list(ref[key])}; "
                "compared models must share class names, class order and sequences"
            )


def load_model_run(path: str | os.PathLike, seeds: Sequence[int] | None = None) -> ModelRun:
    """A checkpoint, a run directory or a multi-seed directory (``seeds``: only these ``seed_<k>``); raises
    ``FileNotFoundError`` (missing checkpoint or seed) or ``ValueError`` (the seeds' tasks differ)."""
    path = Path(path)
    runs = seed_runs(path)
    if not runs:
        if seeds is not None:
            raise FileNotFoundError(f"checkpoint: {path} holds no seed_<k> run directories")
        ckpt = resolve_checkpoint(path)
        return ModelRun(path, [ckpt], [None], load_config(ckpt))
    if seeds is not None:
        missing = [s for s in seeds if s not in runs]
        if missing:
            raise FileNotFoundError(f"checkpoint: {path} has no run for seed(s) {missing} (found {sorted(runs)})")
        runs = {s: runs[s] for s in seeds}
    ckpts = [resolve_checkpoint(d) for d in runs.values()]
    configs = [load_config(c) for c in ckpts]
    first = f"seed_{next(iter(runs))}"
    for seed, config in zip(runs, configs):
        if config["model"] != configs[0]["model"]:
            raise ValueError(f"checkpoint: {path}/seed_{seed} is a {config['model']}, {first} a {configs[0]['model']}")
        _same_task(config, configs[0], f"{path}/seed_{seed}", first)
    return ModelRun(path, ckpts, list(runs), configs[0])


def _label_runs(runs: list[ModelRun]) -> None:
    """Model names as labels; where two coincide, the paths' names (then the paths) tell them apart."""
    for attr in (lambda r: r.config["model"], lambda r: r.path.name, lambda r: str(r.path)):
        labels = [attr(r) for r in runs]
        if len(set(labels)) == len(labels):
            break
    for r, label in zip(runs, labels):
        r.label = label


# ----- predictions and metrics -------------------------------------------------------------------
@dataclasses.dataclass
class Predictions:
    """A model's probabilities on one split: ``probs (n_seeds, n, K)``, labels ``y (n,)``, case ids."""

    run: ModelRun
    y: np.ndarray
    probs: np.ndarray
    case_ids: list[str]

    @property
    def mean_probs(self) -> np.ndarray:
        """``(n, K)``: the mean of the seeds' probabilities (what the paired tests use)."""
        return self.probs.mean(axis=0)


def predict_run(
    run: ModelRun, data: str | os.PathLike, split: str = "test", fold: int | None = None, batch_size: int = 4
) -> Predictions:
    """Every seed's probabilities on ``split`` of the cohort ``data`` (the seeds must agree on the cases)."""
    from spectral3d.train.workflow import predict_split

    probs, y, ids = [], None, None
    for ckpt in run.checkpoints:
        yk, pk, idk, _, _ = predict_split(ckpt, data, split, fold, batch_size)
        if ids is not None and (idk != ids or not np.array_equal(yk, y)):
            raise ValueError(f"checkpoint: {ckpt} predicted other cases than {run.checkpoints[0]} on {data}")
        probs.append(pk)
        y, ids = yk, idk
    return Predictions(run, np.asarray(y), np.stack(probs), list(ids or []))


def summarize(
    pred: Predictions, n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95, per_seed_ci: bool = False
) -> dict[str, Any]:
    """The paper's metrics of a model: :func:`spectral3d.metrics.classification_metrics` for one checkpoint;
    for several seeds the means plus ``sd``, ``ci`` (of the mean), ``per_seed`` and ``seeds``."""
    names = list(pred.run.config["class_names"])
    if pred.probs.shape[0] == 1:
        return classification_metrics(pred.y, pred.probs[0], names, n_bootstrap=n_bootstrap, seed=seed, ci=ci)
    b = n_bootstrap if per_seed_ci else 0
    per_seed = {
        str(s): classification_metrics(pred.y, p, names, n_bootstrap=b, seed=seed, ci=ci)
        for s, p in zip(pred.run.seeds, pred.probs)
    }
    runs = list(per_seed.values())
    out: dict[str, Any] = {m: float(np.mean([r[m] for r in runs])) for m in SCALAR_METRICS}
    out["sd"] = {m: float(np.std([r[m] for r in runs], ddof=1)) for m in SCALAR_METRICS}
    out.update(class_names=names, n=int(len(pred.y)), seeds=list(pred.run.seeds), per_seed=per_seed)
    if n_bootstrap > 0:
        out["ci"] = bootstrap_ci_of_mean(pred.y, pred.probs, n_bootstrap, seed, ci)
        out.update(ci_level=ci, n_bootstrap=n_bootstrap)
    return out


def paired_tests(pred: Predictions, ref: Predictions, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``pred`` against ``ref`` on the same cases: ``{"auc", "accuracy"}`` tests (module docstring), each
    with ``method`` and ``p_value`` (``auc`` for K > 2 adds ``per_class`` one-vs-rest DeLong tests)."""
    if pred.case_ids != ref.case_ids:
        raise ValueError(f"{pred.run.label}: predicted other cases than the reference {ref.run.label}")
    y, pa, pb = ref.y, pred.mean_probs, ref.mean_probs
    names = list(ref.run.config["class_names"])
    if pa.shape[1] == 2:  # DeLong on class 1 (NaN when a class has fewer than 2 cases)
        auc = {"method": "delong", **delong_test_ovr(y, pa, pb, names)[names[1]]}
    elif n_bootstrap > 0:
        auc = {"method": "paired_bootstrap", **paired_bootstrap_auc(y, pa, pb, n_bootstrap, seed)}
        auc["per_class"] = delong_test_ovr(y, pa, pb, names)
    else:  # the macro AUC's test needs resamples
        auc = {"method": "paired_bootstrap", "p_value": math.nan, "n_bootstrap": 0}
        auc["per_class"] = delong_test_ovr(y, pa, pb, names)
    acc = mcnemar_test(y, pa.argmax(axis=1), pb.argmax(axis=1))
    return {"auc": auc, "accuracy": acc}


def _holm_per_metric(tests: dict[str, dict[str, Any]]) -> None:
    """Adds ``p_holm`` to each metric's test, adjusting across the models of one table."""
    for metric in ("auc", "accuracy"):
        labels = list(tests)
        adjusted = holm_adjust([tests[k][metric]["p_value"] for k in labels]) if labels else []
        for k, p in zip(labels, adjusted):
            tests[k][metric]["p_holm"] = float(p)


# ----- costs and the figure ----------------------------------------------------------------------
def model_cost(config: dict[str, Any]) -> dict[str, float]:
    """``params``, ``macs`` (FFTs included) and ``macs_without_fft`` of a checkpoint's model at its input size.

    Counted with :func:`spectral3d.flops.count_model` on the meta device (DESIGN.md §10); the paper's
    "FLOPs" are most likely multiply-adds without the FFT, hence the second count.
    """
    from spectral3d.flops import count_model

    size = config.get("preprocess", {}).get("input_size")
    input_size = (len(config["sequences"]), *size) if size else None
    rep = count_model(config["model"], input_size=input_size, **config["model_kwargs"])
    fft = sum(v for op, v in rep.by_op.items() if "_fft_" in op)
    return {"params": float(rep.params or 0), "macs": float(rep.macs), "macs_without_fft": float(rep.macs - fft / 2)}


def efficiency_figure(
    points: Sequence[dict[str, Any]], path: str | os.PathLike, ylabel: str = "AUC (%)", title: str = ""
) -> Path:
    """Fig. 5: one labelled point per model at ``(gmacs, value)``, marker area ∝ ``params``; a PNG.

    Args:
        points: dicts with ``label``, ``macs``, ``params`` and ``value`` (in %).
        path: the PNG to write.
        ylabel: the y-axis label.
        title: the figure's title.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    largest = max((p["params"] for p in points), default=1.0) or 1.0
    for i, p in enumerate(points):
        area = 40 + 1400 * p["params"] / largest
        ax.scatter(p["macs"] / 1e9, p["value"], s=area, alpha=0.5, color=f"C{i % 10}", edgecolors="k")
        radius = 0.5 * math.sqrt(area)  # points
        ax.annotate(
            f"{p['label']} ({p['params'] / 1e6:.2f} M)",
            (p["macs"] / 1e9, p["value"]),
            xytext=(radius + 3, 0),
            textcoords="offset points",
            fontsize=7,
            va="center",
        )
    ax.set_xlabel('multiply-adds per case, GMACs (FFTs included; the paper\'s "FLOPs" are multiply-adds)')
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}; marker area ∝ parameters" if title else "marker area ∝ parameters", fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    path = Path(path)
    fig.savefig(path, dpi=130)
    return path


# ----- tables ------------------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{100 * v:.2f}"


def metric_cell(m: dict[str, Any], key: str, with_ci: bool = True) -> str:
    """``"83.67 [73.4–93.9]"`` (or ``"83.67 ± 2.10 [...]"`` over several seeds), in %."""
    cell = _pct(m.get(key, math.nan))
    if "sd" in m and cell != "n/a":
        cell += f" ± {100 * m['sd'][key]:.2f}"
    if with_ci and "ci" in m and key in m["ci"] and not math.isnan(m["ci"][key][0]):
        lo, hi = m["ci"][key]
        cell += f" [{100 * lo:.1f}–{100 * hi:.1f}]"
    return cell


def p_cell(test: dict[str, Any] | None) -> str:
    """The Holm-adjusted p-value of a test (``"ref"`` for the reference)."""
    if test is None:
        return "ref"
    p = test.get("p_holm", test["p_value"])
    return "n/a" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table from a header and rows of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_table(table: dict[str, Any], with_ci: bool = True) -> str:
    """Paper Tables 1–2 for one cohort of :func:`compare_models`' result, p-values against the reference."""
    header = ["Model", *(c for c, _ in TABLE_COLUMNS), "p AUC", "p ACC"]
    rows = []
    for label, entry in table["models"].items():
        test = entry.get("tests")
        rows.append(
            [
                label,
                *(metric_cell(entry["metrics"], key, with_ci) for _, key in TABLE_COLUMNS),
                p_cell(test["auc"] if test else None),
                p_cell(test["accuracy"] if test else None),
            ]
        )
    return markdown_table(header, rows)


# ----- the command -------------------------------------------------------------------------------
def evaluate_runs(
    runs: list[ModelRun],
    data: str | os.PathLike,
    split: str = "test",
    fold: int | None = None,
    n_bootstrap: int = 1000,
    batch_size: int = 4,
    reference: int = 0,
) -> dict[str, Any]:
    """Predict every model on one cohort's split; metrics per model, tests against ``runs[reference]``."""
    preds = [predict_run(r, data, split, fold, batch_size) for r in runs]
    ref = preds[reference]
    models: dict[str, Any] = {}
    tests: dict[str, Any] = {}
    for i, pred in enumerate(preds):
        if pred.case_ids != ref.case_ids:
            raise ValueError(f"{pred.run.label}: predicted other cases than {ref.run.label} on {data}")
        models[pred.run.label] = {"metrics": summarize(pred, n_bootstrap)}
        if i != reference:
            tests[pred.run.label] = paired_tests(pred, ref, n_bootstrap)
    _holm_per_metric(tests)
    for label, t in tests.items():
        models[label]["tests"] = t
    return {"data": str(Path(data).resolve()), "split": split, "n": len(ref.y), "models": models}


def _check_data(data: Sequence[str | os.PathLike], run: ModelRun, split: str, fold: int | None) -> None:
    from spectral3d.data import Cohort

    for d in data:
        cfg = run.config
        cohort = Cohort.from_folder(d, sequences=cfg["sequences"], classes=cfg["class_names"])
        cohort.split(split, fold)


def compare_models(
    models: Sequence[str | os.PathLike],
    data: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    split: str = "test",
    fold: int | None = None,
    n_bootstrap: int = 1000,
    batch_size: int = 4,
    figure: bool = True,
    figure_metric: str = "auc",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate ``models`` (the first is the reference) on the same cases of each cohort in ``data``.

    Everything is checked before any prediction. Writes ``out/compare.json``, ``out/compare.md`` and,
    with ``figure``, ``out/fig5_<cohort>.png``.

    Args:
        models: checkpoints, run directories or multi-seed directories; at least two.
        data: cohort folders (e.g. internal and external test cohorts).
        out: output folder (refused when it holds a ``compare.json``, unless ``overwrite``).
        split: the split of every cohort to evaluate.
        fold: with ``split="val"``, the fold (as ``evaluate``).
        n_bootstrap: resamples for the CIs and the paired bootstrap.
        batch_size: prediction batch size.
        figure: write the Fig. 5 PNGs (needs matplotlib).
        figure_metric: ``"auc"`` or ``"accuracy"`` on the figure's y axis.
        overwrite: replace an earlier comparison in ``out``.

    Returns:
        The ``compare.json`` content: ``reference``, ``split``, ``models`` (label → path, model,
        seeds, params, macs) and ``cohorts`` (one entry per cohort: ``models`` → metrics and tests).

    Example::

        >>> compare_models(["runs/desamba", "runs/resnet"], ["internal", "external"], "cmp")  # doctest: +SKIP
    """
    runs = _checked_runs(models, data, Path(out), split, fold, figure, figure_metric, overwrite)
    costs = {r.label: model_cost(r.config) for r in runs}
    result: dict[str, Any] = {
        "reference": runs[0].label,
        "split": split,
        "models": {
            r.label: {
                "path": str(r.path),
                "model": r.config["model"],
                "seeds": r.seeds,
                "checkpoints": [str(c) for c in r.checkpoints],
                **costs[r.label],
            }
            for r in runs
        },
        "cohorts": [],
        "notes": TEST_NOTE,
    }
    for name, d in zip(_cohort_names(data), data):
        table = evaluate_runs(runs, d, split, fold, n_bootstrap, batch_size)
        result["cohorts"].append({"name": name, **table})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "compare.json", result)
    _write_report(result, costs, out, n_bootstrap, figure_metric if figure else None)
    return result


def _checked_runs(
    models: Sequence[str | os.PathLike],
    data: Sequence[str | os.PathLike],
    out: Path,
    split: str,
    fold: int | None,
    figure: bool,
    figure_metric: str,
    overwrite: bool,
) -> list[ModelRun]:
    """The labelled runs, once the arguments, ``out``, the runs' task and every cohort are checked."""
    if len(models) < 2:
        raise ValueError(f"models: expected at least 2 models to compare, got {len(models)}")
    if not data:
        raise ValueError("data: expected at least one cohort folder")
    if figure_metric not in ("auc", "accuracy"):
        raise ValueError(f"figure_metric: expected 'auc' or 'accuracy', got {figure_metric!r}")
    if (out / "compare.json").exists() and not overwrite:
        raise FileExistsError(f"out: {out} already holds a compare.json; pass --overwrite or another --out")
    if figure:
        require_matplotlib()
    runs = [load_model_run(m) for m in models]
    for run in runs[1:]:
        _same_task(run.config, runs[0].config, str(run.path), f"the reference {runs[0].path}")
    _label_runs(runs)
    _check_data(data, runs[0], split, fold)
    return runs


def _write_report(
    result: dict[str, Any], costs: dict[str, dict[str, Any]], out: Path, n_bootstrap: int, figure_metric: str | None
) -> None:
    """``out/compare.md`` (a table per cohort) and, with a ``figure_metric``, ``out/fig5_<cohort>.png``."""
    split, sections = result["split"], []
    for cohort in result["cohorts"]:
        head = f"## {cohort['name']} ({split} split, n = {cohort['n']}; reference {result['reference']})"
        sections.append(f"{head}\n\n{comparison_table(cohort, with_ci=n_bootstrap > 0)}")
        if figure_metric is not None:
            points = [
                {"label": label, **costs[label], "value": 100 * entry["metrics"][figure_metric]}
                for label, entry in cohort["models"].items()
            ]
            ylabel = "AUC (%)" if figure_metric == "auc" else "accuracy (%)"
            efficiency_figure(points, out / f"fig5_{cohort['name']}.png", ylabel, f"{cohort['name']}, {split} split")
    (out / "compare.md").write_text("\n\n".join(sections) + f"\n\n{TEST_NOTE}\n")


def _cohort_names(data: Sequence[str | os.PathLike]) -> list[str]:
    names = [Path(d).resolve().name or "cohort" for d in data]
    return [n if names.count(n) == 1 else f"{n}_{i + 1}" for i, n in enumerate(names)]


def evaluate_seeds(
    run_dir: str | os.PathLike,
    data: str | os.PathLike,
    split: str = "test",
    fold: int | None = None,
    out: str | os.PathLike | None = None,
    n_bootstrap: int = 1000,
    batch_size: int = 4,
) -> dict[str, Any]:
    """``evaluate`` on ``RUN/seed_<k>/``: each seed's metrics, their mean ± sd and the mean's CI; writes
    ``metrics.json``, ``metrics.md`` and ``predictions.csv`` (mean probabilities) into ``out``."""
    from spectral3d.train.workflow import write_predictions

    run = load_model_run(run_dir)
    pred = predict_run(run, data, split, fold, batch_size)
    metrics = summarize(pred, n_bootstrap, per_seed_ci=True)
    metrics.update(model=run.config["model"], checkpoints=[str(c) for c in run.checkpoints], split=split)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", metrics)
        (out / "metrics.md").write_text(seeds_table(metrics, with_ci=n_bootstrap > 0) + "\n")
        write_predictions(out / "predictions.csv", pred.case_ids, pred.y, pred.mean_probs, run.config["class_names"])
    return metrics


def seeds_table(metrics: dict[str, Any], with_ci: bool = True) -> str:
    """One row per seed and a last row with the mean ± sd, from :func:`evaluate_seeds`' result."""
    header = ["Model", *(c for c, _ in TABLE_COLUMNS)]
    rows = [
        [f"{metrics['model']} seed {s}", *(metric_cell(m, key, with_ci) for _, key in TABLE_COLUMNS)]
        for s, m in metrics["per_seed"].items()
    ]
    rows.append([f"{metrics['model']} mean ± sd", *(metric_cell(metrics, key, with_ci) for _, key in TABLE_COLUMNS)])
    return markdown_table(header, rows)
