"""The ``spectral3d`` command line: synth, train, evaluate, predict, gradcam, compare, ablate, demo, models.

Each command is a thin layer over a Python function (``spectral3d.train.workflow``, ``.explain``,
``.compare``, ``.ablate``, ``spectral3d.data``, ``spectral3d.demo``) and owns two functions here:
``_add_<command>_parser(sub)`` (its flags) and ``_<command>(args)`` (its work). Flags carry the
library's argument names as ``dest``, so a library error (``patience: ...``) is shown with the flag.

A mistake (a bad flag value, a missing or corrupt file, a reused run directory, an unwritable output,
a missing optional package) is one line naming the flag or the file, exit status 2, no traceback,
before any work starts (``--skip-bad`` reports bad cases instead). ``SPECTRAL3D_DEBUG=1`` shows
tracebacks. ``--help`` imports no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

#: ``PreprocessConfig.nan_policy``'s values (``spectral3d.data.nifti.NAN_POLICIES``, equal by test: the
#: parser is built without importing the data package, which imports torch).
NAN_POLICIES = ("error", "min", "zero")


class CommandError(Exception):
    """A problem a command finds before it works (printed as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------- argument types
def _size(text: str) -> int | tuple[int, int, int]:
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",") if p]
    except ValueError:
        parts = []
    if len(parts) in (1, 3) and all(p > 0 for p in parts):
        return parts[0] if len(parts) == 1 else tuple(parts)  # type: ignore[return-value]
    raise argparse.ArgumentTypeError(f"expected N or D,H,W of positive ints (e.g. 32 or 32,64,64), got {text!r}")


def _int_at_least(minimum: int) -> type:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse  # type: ignore[return-value]


def _class_weights(text: str) -> str | list[float]:
    if text == "balanced":
        return text
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'balanced' or comma-separated numbers, one per class, got {text!r}"
        ) from None


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names (e.g. t1,t2,t2fs), got {text!r}")
    return names


# ---------------------------------------------------------------- shared checks
def _require(module: str, why: str) -> None:
    """A missing optional package is one line naming it and the ``pip install`` that brings it."""
    if importlib.util.find_spec(module) is None:
        raise CommandError(f"{why} needs {module}, which is not installed: pip install 'spectral3d[apps]'")


def _check_output_file(path: Path | None, flag: str = "out") -> None:
    from spectral3d.train.checkpoint import check_writable_dir

    if path is None:
        return
    if path.is_dir():
        raise CommandError(f"--{flag}: {path} is a directory; expected a file name")
    check_writable_dir(path.parent if str(path.parent) else Path("."), flag)


# ---------------------------------------------------------------- synth
def _add_synth_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("synth", help="write a synthetic multi-sequence NIfTI cohort")
    s.add_argument("--out", required=True, type=Path, help="cohort folder to create")
    s.add_argument("--task", choices=["spine", "spondylitis"], default="spine")
    s.add_argument("--cases", type=_int_at_least(1), default=48)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=_size, default=32, help="reference grid D,H,W in mm (default 32)")
    s.add_argument("--overwrite", action="store_true", help="replace a cohort already in --out")
    s.set_defaults(handler=_synth)


def _synth(args: argparse.Namespace) -> int:
    from spectral3d.data import write_synthetic_cohort
    from spectral3d.train.checkpoint import check_writable_dir

    check_writable_dir(args.out, "out")
    root = write_synthetic_cohort(
        args.out, task=args.task, cases=args.cases, seed=args.seed, size=args.size, overwrite=args.overwrite
    )
    print(f"wrote {args.cases} {args.task} cases to {root}")
    return 0


# ---------------------------------------------------------------- train
#: TrainConfig fields with a flag: (flag, help). Defaults and types come from the dataclass.
_TRAIN_FLAGS = {
    "epochs": ("--epochs", "training epochs"),
    "batch_size": ("--batch-size", "cases per batch (a last batch of one case joins the one before)"),
    "lr": ("--lr", "peak learning rate (AdamW; linear warm-up, then cosine)"),
    "weight_decay": ("--weight-decay", "AdamW weight decay (not on biases and norms)"),
    "warmup_epochs": ("--warmup-epochs", "epochs of linear warm-up"),
    "grad_accum": ("--grad-accum", "batches per optimizer step"),
    "class_weights": ("--class-weights", "'balanced' or comma-separated weights, one per class"),
    "patience": ("--patience", "early stopping after this many epochs without a better validation AUC (0: off)"),
    "seed": ("--seed", "seed of the initial weights, shuffling and augmentation"),
    "num_workers": ("--workers", "DataLoader worker processes"),
}


def _add_config_flags(
    parser: argparse.ArgumentParser, names: Sequence[str], seed_group: argparse._MutuallyExclusiveGroup | None = None
) -> None:
    """A flag per :class:`TrainConfig` field in ``names`` (:data:`_TRAIN_FLAGS`), its default and type the field's."""
    from spectral3d.train.config import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name in names:
        flag, text = _TRAIN_FLAGS[name]
        default = defaults[name]
        kind = _class_weights if name == "class_weights" else type(default)
        metavar = flag[2:].upper().replace("-", "_")
        (seed_group if name == "seed" and seed_group is not None else parser).add_argument(
            flag, dest=name, type=kind, default=default, metavar=metavar, help=f"{text} (default {default})"
        )


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a registered model on a NIfTI cohort")
    t.add_argument("--model", required=True, help="registered name, e.g. desamba_spine_tiny or resnet50_3d")
    t.add_argument("--data", required=True, type=Path, help="cohort folder (cases.csv + case folders)")
    t.add_argument("--out", required=True, type=Path, help="run directory for checkpoints and logs")
    seeds = t.add_mutually_exclusive_group()
    _add_config_flags(t, list(_TRAIN_FLAGS), seed_group=seeds)
    seeds.add_argument(
        "--seeds", type=_int_at_least(0), nargs="+", default=None, help="one run per seed, in OUT/seed_<k>/"
    )
    t.add_argument("--scale", choices=["paper", "small", "tiny"], default=None, help="DeSamba-family scale")
    t.add_argument("--fold", type=int, default=None, help="validate on this fold of the 'fold' column")
    t.add_argument("--input-size", type=_size, default=None, help="model grid (default: the model's)")
    t.add_argument("--spacing", type=float, default=1.0, help="model voxel size in mm")
    t.add_argument("--volume-index", type=int, default=None, help="volume to use from 4-D files")
    t.add_argument(
        "--nan-policy", choices=NAN_POLICIES, default="error", help="NaN/Inf voxels: an error, or set to the min or 0"
    )
    t.add_argument(
        "--sequences",
        type=_names,
        default=None,
        help="comma-separated sequences in channel order (default: the model's, else those of every case)",
    )
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--cache-dir", type=Path, default=None, help="cache of preprocessed volumes")
    again = t.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out: removes its epoch_*/ and interrupted/ checkpoints, the best and last "
        "pointers, log.jsonl and skipped.json (other files stay)",
    )
    t.add_argument("--skip-bad", action="store_true", help="skip cases that fail to load, and report them")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile the model (backend: inductor, or e.g. aot_eager)")  # fmt: skip
    t.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    if args.seeds is not None:
        return _train_seeds(args)
    from spectral3d.train.config import TrainConfig
    from spectral3d.train.workflow import train_on_cohort

    cfg = TrainConfig(
        **{name: getattr(args, name) for name in _TRAIN_FLAGS}, progress=not args.no_progress, compile=args.compile
    )
    result = train_on_cohort(
        args.model,
        args.data,
        args.out,
        cfg,
        model_kwargs={"scale": args.scale} if args.scale else {},
        fold=args.fold,
        input_size=args.input_size,
        spacing=args.spacing,
        volume_index=args.volume_index,
        nan_policy=args.nan_policy,
        augment=not args.no_augment,
        cache_dir=args.cache_dir,
        skip_bad=args.skip_bad,
        resume=args.resume,
        overwrite=args.overwrite,
        sequences=args.sequences,
    )
    state = (
        "interrupted (resume with --resume)"
        if result.interrupted
        else ("stopped early" if result.stopped_early else "done")
    )
    print(
        f"{state}: {result.epochs_done} epoch(s) in {result.run_dir}; best epoch {result.best_epoch} "
        f"(val AUC {result.best_auc})"
    )
    skipped = args.out / "skipped.json"
    if skipped.exists():
        print(f"skipped cases (see {skipped}):\n  " + "\n  ".join(json.loads(skipped.read_text())))
    return 130 if result.interrupted else 0


def _train_seeds(args: argparse.Namespace) -> int:
    """``train --seeds K...``: one run per seed in ``OUT/seed_<k>/`` (``--resume`` resumes the started ones)."""
    if len(set(args.seeds)) != len(args.seeds):
        raise CommandError(f"--seeds: expected distinct seeds, got {args.seeds}")
    for k in args.seeds:
        run = args.out / f"seed_{k}"
        resume = args.resume and (run / "last").exists()
        print(f"seed {k}: {run}")
        status = _train(argparse.Namespace(**{**vars(args), "seed": k, "seeds": None, "out": run, "resume": resume}))
        if status != 0:
            return status
    return 0


# ---------------------------------------------------------------- evaluate
def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="the paper's metrics for a checkpoint on a cohort split")
    e.add_argument(
        "--checkpoint", required=True, type=Path, help="run directory (its best), checkpoint directory or a file in one"
    )
    e.add_argument("--data", required=True, type=Path)
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--fold", type=int, default=None)
    e.add_argument("--out", type=Path, default=None, help="folder for metrics.json, metrics.md, predictions.csv")
    e.add_argument(
        "--bootstrap",
        dest="n_bootstrap",
        type=_int_at_least(0),
        default=1000,
        help="bootstrap resamples for the 95%% CIs (0: none)",
    )
    e.add_argument("--skip-bad", action="store_true")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from spectral3d.train.compare import seed_runs

    if seed_runs(args.checkpoint):
        return _evaluate_seeds(args)
    from spectral3d.metrics import metrics_table
    from spectral3d.train.workflow import evaluate_checkpoint

    m = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        split=args.split,
        fold=args.fold,
        out=args.out,
        n_bootstrap=args.n_bootstrap,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
    )
    print(metrics_table({m["model"]: m}, with_ci=args.n_bootstrap > 0))
    print("confusion matrix (rows = true):", m["class_names"])
    for name, row in zip(m["class_names"], m["confusion_matrix"]):
        print(f"  {name:>12}: {row}")
    for s in m["skipped"]:
        print(f"skipped: {s}")
    return 0


def _evaluate_seeds(args: argparse.Namespace) -> int:
    from spectral3d.train.compare import evaluate_seeds, seeds_table

    if args.skip_bad:
        raise CommandError("--skip-bad: not available for a multi-seed directory (seed_<k>/)")
    m = evaluate_seeds(
        args.checkpoint, args.data, split=args.split, fold=args.fold, out=args.out, n_bootstrap=args.n_bootstrap
    )
    print(seeds_table(m, with_ci=args.n_bootstrap > 0))
    print("paired tests (spectral3d compare) use the mean of the seeds' probabilities")
    return 0


# ---------------------------------------------------------------- predict
def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("predict", help="class probabilities for case folders")
    pr.add_argument("--checkpoint", required=True, type=Path)
    pr.add_argument("cases", nargs="+", type=Path, metavar="CASE_DIR")
    pr.add_argument(
        "--tabular", dest="tabular_csv", type=Path, default=None, help="CSV with case_id and every clinical column"
    )
    pr.add_argument("--out", type=Path, default=None, help="write the predictions as JSON here")
    pr.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    from spectral3d.train.checkpoint import write_json
    from spectral3d.train.workflow import predict_cases

    _check_output_file(args.out)
    rows = predict_cases(args.checkpoint, args.cases, args.tabular_csv)
    for r in rows:
        probs = "  ".join(f"{k}={v:.3f}" for k, v in r["probabilities"].items())
        print(f"{r['case_id']}: {r['predicted']}  ({probs})")
    if args.out:
        write_json(args.out, rows)
    return 0


# ---------------------------------------------------------------- gradcam
def _add_gradcam_parser(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("gradcam", help="3D Grad-CAM maps per sequence, as NIfTI on the source grids and a PNG")
    g.add_argument("--checkpoint", required=True, type=Path)
    g.add_argument("case", type=Path, metavar="CASE_DIR")
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--method", choices=["gradcam", "gradcam++", "layercam"], default="gradcam")
    g.add_argument("--target-class", default=None, help="class name to explain (default: the predicted class)")
    g.add_argument(
        "--tabular", dest="tabular_csv", type=Path, default=None, help="CSV with case_id and every clinical column"
    )
    g.set_defaults(handler=_gradcam)


def _gradcam(args: argparse.Namespace) -> int:
    _require("matplotlib", "the Grad-CAM figure (PNG)")
    from spectral3d.train.checkpoint import check_writable_dir
    from spectral3d.train.explain import gradcam_case

    check_writable_dir(args.out, "out")
    result = gradcam_case(
        args.checkpoint,
        args.case,
        args.out,
        method=args.method,
        target_class=args.target_class,
        tabular_csv=args.tabular_csv,
    )
    print(
        f"{result['case_id']}: predicted {result['predicted']} (p = {result['probability']:.3f}); "
        f"maps for {result['explained_class']}:"
    )
    for path in result["files"]:
        print(f"  {path}")
    return 0


# ---------------------------------------------------------------- compare
def _add_figure_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap", dest="n_bootstrap", type=_int_at_least(0), default=1000, help="resamples (CIs, macro-AUC test)"
    )
    parser.add_argument("--metric", dest="figure_metric", choices=["auc", "accuracy"], default="auc", help="Fig. 5's y")
    parser.add_argument("--no-figure", action="store_true", help="no Fig. 5 PNG (no matplotlib needed)")


def _check_cohorts(folders: Sequence[Path]) -> None:
    for d in folders:
        if not (d / "cases.csv").is_file():
            raise CommandError(f"--data: {d} is not a cohort folder (no cases.csv)")


def _add_compare_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "compare",
        help="several models on the same cases: paper Tables 1-2 with CIs and p-values against the first, Fig. 5",
    )
    c.add_argument(
        "models",
        nargs="+",
        type=Path,
        metavar="RUN_OR_CKPT",
        help="checkpoints or run dirs (also RUN/seed_<k>/); the first is the reference",
    )
    c.add_argument("--data", action="append", required=True, type=Path, help="cohort folder; repeat for several")
    c.add_argument("--split", default="test", choices=["train", "val", "test"])
    c.add_argument("--fold", type=int, default=None)
    c.add_argument("--out", type=Path, default=Path("compare"), help="folder for compare.json, compare.md, PNGs")
    c.add_argument("--batch-size", dest="batch_size", type=_int_at_least(1), default=4)
    _add_figure_flags(c)
    c.add_argument("--overwrite", action="store_true", help="replace an earlier comparison in --out")
    c.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace) -> int:
    from spectral3d.train.checkpoint import check_writable_dir
    from spectral3d.train.compare import compare_models

    if len(args.models) < 2:
        raise CommandError(f"RUN_OR_CKPT: expected at least 2 models, got {len(args.models)}")
    _check_cohorts(args.data)
    if not args.no_figure:
        _require("matplotlib", "the Fig. 5 PNG (or pass --no-figure)")
    check_writable_dir(args.out, "out")
    result = compare_models(
        args.models,
        args.data,
        args.out,
        split=args.split,
        fold=args.fold,
        n_bootstrap=args.n_bootstrap,
        batch_size=args.batch_size,
        figure=not args.no_figure,
        figure_metric=args.figure_metric,
        overwrite=args.overwrite,
    )
    print((args.out / "compare.md").read_text())
    print(f"wrote {args.out / 'compare.json'} ({len(result['cohorts'])} cohort(s), reference {result['reference']})")
    return 0


# ---------------------------------------------------------------- ablate
#: TrainConfig fields ``ablate`` sets (the rest keep their defaults): a subset of train's flags.
_ABLATE_FLAGS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "num_workers")


def _add_ablate_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("ablate", help="train the Table 3 ablation rows with one recipe; Table 3 and Fig. 5")
    a.add_argument("--data", required=True, type=Path, help="cohort folder (train/val/test splits)")
    a.add_argument("--out", required=True, type=Path, help="ablation folder; rerun the same command to resume")
    a.add_argument("--scale", choices=["paper", "small", "tiny"], default="paper")
    a.add_argument(
        "--rows", nargs="+", default=None, help="rows among cnv2 samnet mo desn demo samba tf de_c de_s full (all)"
    )
    a.add_argument("--seeds", type=_int_at_least(0), nargs="+", default=[0], help="one run per row and seed")
    _add_config_flags(a, _ABLATE_FLAGS)
    a.add_argument("--drop-rate", type=float, default=0.0, help="dropout before the classifier")
    a.add_argument("--input-size", type=_size, default=None, help="model grid (default: the preset's)")
    a.add_argument("--split", default="test", choices=["train", "val", "test"], help="the split Table 3 reports")
    a.add_argument("--cache-dir", type=Path, default=None, help="cache of preprocessed volumes (OUT/cache)")
    _add_figure_flags(a)
    a.add_argument("--no-progress", action="store_true")
    a.set_defaults(handler=_ablate)


def _ablate(args: argparse.Namespace) -> int:
    from spectral3d.train.ablate import run_ablation
    from spectral3d.train.checkpoint import check_writable_dir
    from spectral3d.train.config import TrainConfig

    _check_cohorts([args.data])
    if not args.no_figure:
        _require("matplotlib", "the Fig. 5 PNG (or pass --no-figure)")
    cfg = TrainConfig(
        **{name: getattr(args, name) for name in _ABLATE_FLAGS}, progress=not args.no_progress, keep_last=1
    )
    check_writable_dir(args.out, "out")
    result = run_ablation(
        args.data,
        args.out,
        rows=args.rows,
        seeds=args.seeds,
        scale=args.scale,
        cfg=cfg,
        model_kwargs={"drop_rate": args.drop_rate} if args.drop_rate else None,
        input_size=args.input_size,
        split=args.split,
        n_bootstrap=args.n_bootstrap,
        cache_dir=args.cache_dir,
        figure=not args.no_figure,
        figure_metric=args.figure_metric,
    )
    if result.interrupted:
        print(f"interrupted; rerun the same command to resume (done: {', '.join(result.trained) or 'nothing new'})")
        return 130
    print(result.table)
    print(f"wrote {args.out / 'table3.md'}, table3.json" + ("" if args.no_figure else ", fig5.png"))
    return 0


# ---------------------------------------------------------------- demo
def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="synthesise a cohort, train DeSamba-tiny and a baseline, evaluate both")
    d.add_argument(
        "--out", type=Path, default=Path("spectral3d-demo"), help="demo folder (a rerun reuses and resumes it)"
    )
    d.add_argument("--cases", type=_int_at_least(1), default=None)
    d.add_argument("--epochs", type=_int_at_least(1), default=None)
    d.add_argument("--baseline", default=None, help="baseline model name")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quick", action="store_true", help="a few seconds' smoke run instead of minutes")
    d.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from spectral3d.demo import run_demo
    from spectral3d.train.checkpoint import check_writable_dir

    check_writable_dir(args.out, "out")
    run_demo(args.out, cases=args.cases, epochs=args.epochs, baseline=args.baseline, seed=args.seed, quick=args.quick)
    return 0


# ---------------------------------------------------------------- models
def _add_models_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("models", help="list registered models")
    m.add_argument("filter", nargs="?", default="", help="fnmatch pattern, e.g. 'desamba*'")
    m.set_defaults(handler=_models)


def _models(args: argparse.Namespace) -> int:
    import backbones3d

    for name in backbones3d.list_models(args.filter):
        cfg = backbones3d.get_pretrained_cfg(name)
        print(f"{name:40s} input {tuple(cfg['input_size'])}  classes {cfg['num_classes']}")
    return 0


# ---------------------------------------------------------------- main
_ADD_PARSERS = (
    _add_synth_parser,
    _add_train_parser,
    _add_evaluate_parser,
    _add_predict_parser,
    _add_gradcam_parser,
    _add_compare_parser,
    _add_ablate_parser,
    _add_demo_parser,
    _add_models_parser,
)


def _parser() -> argparse.ArgumentParser:
    from spectral3d import __version__

    p = _Parser(prog="spectral3d", description="DeSamba and 3D backbones for multi-sequence MRI.")
    p.add_argument("--version", action="version", version=f"spectral3d {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _ADD_PARSERS:
        add(sub)
    return p


def _with_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """Name flags instead of library arguments: ``dest: ...`` -> ``--flag: ...``, ``dest=True`` and a
    bare ``dest=`` -> ``--flag``, ``dest=value`` -> ``--flag value`` (for every flag of the command)."""
    flags = {a.dest: a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest != "help"}
    if not flags:
        return message
    names = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))
    message = re.sub(rf"^({names}):", lambda m: f"{flags[m[1]]}:", message)
    message = re.sub(rf"\b({names})=(True\b|(?=[\s),;]|$))", lambda m: flags[m[1]], message)
    return re.sub(rf"\b({names})=", lambda m: f"{flags[m[1]]} ", message)


def _one_line_warnings(command: str):  # a showwarning hook
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"spectral3d {command}: warning: {message}", file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spectral3d`` command; returns the exit status (0, 2 for a mistake, 130
    when interrupted)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version or a usage error (already printed, one line)
        return int(stop.code or 0)
    command_parser = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
    debug = os.environ.get("SPECTRAL3D_DEBUG", "0") not in ("", "0")
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(args.command)
        try:
            return args.handler(args)
        except (CommandError, ValueError, TypeError, OSError) as err:  # DataError, CheckpointError are ValueErrors
            if debug:
                raise
            print(f"spectral3d {args.command}: error: {_with_flags(str(err), command_parser)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"spectral3d {args.command}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
