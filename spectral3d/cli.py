"""The ``spectral3d`` command line: synth, train, evaluate, predict, gradcam, compare, ablate, demo, models.

Every command is a thin layer over a Python function (``spectral3d.data.write_synthetic_cohort``,
``spectral3d.train.workflow``, ``spectral3d.gradcam.gradcam_case``, ``spectral3d.train.compare``,
``spectral3d.train.ablate``, ``spectral3d.demo.run_demo``).
Data problems (a missing file, a corrupt NIfTI, a label outside the classes, …) are reported as one
line naming the case and the file, with exit status 2 and no traceback; ``--skip-bad`` turns them
into a report of every skipped case instead. ``SPECTRAL3D_DEBUG=1`` shows tracebacks.

Run ``spectral3d COMMAND --help`` for the options of each command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _size(text: str) -> int | tuple[int, int, int]:
    parts = [int(p) for p in text.replace("x", ",").split(",") if p]
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 3:
        return tuple(parts)  # type: ignore[return-value]
    raise argparse.ArgumentTypeError(f"expected N or D,H,W (e.g. 32 or 32,64,64), got {text!r}")


def _parser() -> argparse.ArgumentParser:
    from spectral3d import __version__

    p = argparse.ArgumentParser(prog="spectral3d", description="DeSamba and 3D backbones for multi-sequence MRI.")
    p.add_argument("--version", action="version", version=f"spectral3d {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("synth", help="write a synthetic multi-sequence NIfTI cohort")
    s.add_argument("--out", required=True, type=Path, help="cohort folder to create")
    s.add_argument("--task", choices=["spine", "spondylitis"], default="spine")
    s.add_argument("--cases", type=int, default=48)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=_size, default=32, help="reference grid D,H,W in mm (default 32)")
    s.add_argument("--overwrite", action="store_true")

    t = sub.add_parser("train", help="train a registered model on a NIfTI cohort")
    t.add_argument("--model", required=True, help="registered name, e.g. desamba_spine_tiny or resnet50_3d")
    t.add_argument("--data", required=True, type=Path, help="cohort folder (cases.csv + case folders)")
    t.add_argument("--out", required=True, type=Path, help="run directory for checkpoints and logs")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--warmup-epochs", type=float, default=1.0)
    t.add_argument("--grad-accum", type=int, default=1, help="batches per optimizer step")
    t.add_argument("--class-weights", default=None, help="'balanced' or comma-separated weights")
    t.add_argument("--patience", type=int, default=0, help="early stopping on validation AUC (0: off)")
    t.add_argument("--scale", choices=["paper", "small", "tiny"], default=None, help="DeSamba-family scale")
    t.add_argument("--fold", type=int, default=None, help="validate on this fold of the 'fold' column")
    t.add_argument("--input-size", type=_size, default=None, help="model grid (default: the model's)")
    t.add_argument("--spacing", type=float, default=1.0, help="model voxel size in mm")
    t.add_argument("--volume-index", type=int, default=None, help="volume to use from 4-D files")
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--cache-dir", type=Path, default=None, help="cache of preprocessed volumes")
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    seed = t.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=int, default=0)
    seed.add_argument("--seeds", type=int, nargs="+", default=None, help="one run per seed, in OUT/seed_<k>/")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--skip-bad", action="store_true", help="skip cases that fail to load, and report them")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("evaluate", help="the paper's metrics for a checkpoint on a cohort split")
    e.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory or run directory (best)")
    e.add_argument("--data", required=True, type=Path)
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--fold", type=int, default=None)
    e.add_argument("--out", type=Path, default=None, help="folder for metrics.json, metrics.md, predictions.csv")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs (0: none)")
    e.add_argument("--skip-bad", action="store_true")

    pr = sub.add_parser("predict", help="class probabilities for case folders")
    pr.add_argument("--checkpoint", required=True, type=Path)
    pr.add_argument("cases", nargs="+", type=Path, metavar="CASE_DIR")
    pr.add_argument("--tabular", type=Path, default=None, help="CSV with case_id and clinical columns")
    pr.add_argument("--out", type=Path, default=None, help="write the predictions as JSON here")

    g = sub.add_parser("gradcam", help="3D Grad-CAM maps per sequence, as NIfTI on the source grids and a PNG")
    g.add_argument("--checkpoint", required=True, type=Path)
    g.add_argument("case", type=Path, metavar="CASE_DIR")
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--method", choices=["gradcam", "gradcam++", "layercam"], default="gradcam")
    g.add_argument("--target-class", default=None, help="class name to explain (default: the predicted class)")
    g.add_argument("--tabular", type=Path, default=None, help="CSV with case_id and clinical columns")

    d = sub.add_parser("demo", help="synthesise a cohort, train DeSamba-tiny and a baseline, evaluate both")
    d.add_argument("--out", type=Path, default=Path("spectral3d-demo"))
    d.add_argument("--cases", type=int, default=None)
    d.add_argument("--epochs", type=int, default=None)
    d.add_argument("--baseline", default=None, help="baseline model name")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quick", action="store_true", help="a few seconds' smoke run instead of minutes")

    _add_compare_parser(sub)
    _add_ablate_parser(sub)

    m = sub.add_parser("models", help="list registered models")
    m.add_argument("filter", nargs="?", default="", help="fnmatch pattern, e.g. 'desamba*'")
    return p


def _train(args: argparse.Namespace) -> int:
    if args.seeds is not None:
        return _train_seeds(args)
    from spectral3d.train import TrainConfig
    from spectral3d.train.workflow import train_on_cohort

    weights = args.class_weights
    if weights is not None and weights != "balanced":
        weights = [float(w) for w in weights.split(",")]
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        grad_accum=args.grad_accum,
        class_weights=weights,
        patience=args.patience,
        seed=args.seed,
        num_workers=args.workers,
        progress=not args.no_progress,
    )
    kwargs = {"scale": args.scale} if args.scale else {}
    result = train_on_cohort(
        args.model,
        args.data,
        args.out,
        cfg,
        model_kwargs=kwargs,
        fold=args.fold,
        input_size=args.input_size,
        spacing=args.spacing,
        volume_index=args.volume_index,
        augment=not args.no_augment,
        cache_dir=args.cache_dir,
        skip_bad=args.skip_bad,
        resume=args.resume,
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
        n_bootstrap=args.bootstrap,
        skip_bad=args.skip_bad,
    )
    print(metrics_table({m["model"]: m}, with_ci=args.bootstrap > 0))
    print("confusion matrix (rows = true):", m["class_names"])
    for name, row in zip(m["class_names"], m["confusion_matrix"]):
        print(f"  {name:>12}: {row}")
    for s in m["skipped"]:
        print(f"skipped: {s}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from spectral3d.train.workflow import predict_cases

    rows = predict_cases(args.checkpoint, args.cases, args.tabular)
    for r in rows:
        probs = "  ".join(f"{k}={v:.3f}" for k, v in r["probabilities"].items())
        print(f"{r['case_id']}: {r['predicted']}  ({probs})")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _gradcam(args: argparse.Namespace) -> int:
    from spectral3d.gradcam import gradcam_case

    result = gradcam_case(
        args.checkpoint,
        args.case,
        args.out,
        method=args.method,
        target_class=args.target_class,
        tabular_csv=args.tabular,
    )
    print(
        f"{result['case_id']}: predicted {result['predicted']} (p = {result['probability']:.3f}); "
        f"maps for {result['explained_class']}:"
    )
    for path in result["files"]:
        print(f"  {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from spectral3d.demo import run_demo

    run_demo(args.out, cases=args.cases, epochs=args.epochs, baseline=args.baseline, seed=args.seed, quick=args.quick)
    return 0


def _models(args: argparse.Namespace) -> int:
    import backbones3d

    for name in backbones3d.list_models(args.filter):
        cfg = backbones3d.get_pretrained_cfg(name)
        print(f"{name:40s} input {tuple(cfg['input_size'])}  classes {cfg['num_classes']}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from spectral3d.data import write_synthetic_cohort

    root = write_synthetic_cohort(
        args.out, task=args.task, cases=args.cases, seed=args.seed, size=args.size, overwrite=args.overwrite
    )
    print(f"wrote {args.cases} {args.task} cases to {root}")
    return 0


def _usage_error(command: str, message: object) -> int:
    print(f"spectral3d {command}: error: {message}", file=sys.stderr)
    return 2


def _train_seeds(args: argparse.Namespace) -> int:
    """``train --seeds K...``: one run per seed in ``OUT/seed_<k>/`` (``--resume`` resumes the started ones)."""
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        return _usage_error("train", f"--seeds: expected distinct non-negative integers, got {args.seeds}")
    for k in args.seeds:
        run = args.out / f"seed_{k}"
        resume = args.resume and (run / "last").exists()
        print(f"seed {k}: {run}")
        status = _train(argparse.Namespace(**{**vars(args), "seed": k, "seeds": None, "out": run, "resume": resume}))
        if status != 0:
            return status
    return 0


def _evaluate_seeds(args: argparse.Namespace) -> int:
    from spectral3d.train.compare import evaluate_seeds, seeds_table

    if args.skip_bad:
        return _usage_error("evaluate", "--skip-bad: not available for a multi-seed directory (seed_<k>/)")
    m = evaluate_seeds(
        args.checkpoint, args.data, split=args.split, fold=args.fold, out=args.out, n_bootstrap=args.bootstrap
    )
    print(seeds_table(m, with_ci=args.bootstrap > 0))
    print("paired tests (spectral3d compare) use the mean of the seeds' probabilities")
    return 0


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
    c.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (CIs, macro-AUC test)")
    c.add_argument("--batch-size", type=int, default=4)
    c.add_argument("--metric", choices=["auc", "accuracy"], default="auc", help="y axis of Fig. 5")
    c.add_argument("--no-figure", action="store_true", help="no Fig. 5 PNG (no matplotlib needed)")
    c.add_argument("--overwrite", action="store_true", help="replace an earlier comparison in --out")


def _check_common(command: str, args: argparse.Namespace) -> str | None:
    """The checks compare and ablate share; the message of the first failure."""
    from spectral3d.train.compare import require_matplotlib

    if args.bootstrap < 0:
        return f"--bootstrap: expected a non-negative integer, got {args.bootstrap}"
    if getattr(args, "batch_size", 1) < 1:
        return f"--batch-size: expected a positive integer, got {args.batch_size}"
    for d in args.data if isinstance(args.data, list) else [args.data]:
        if not (d / "cases.csv").is_file():
            return f"--data: {d} is not a cohort folder (no cases.csv)"
    if not args.no_figure:
        try:
            require_matplotlib()
        except ImportError as err:
            return str(err)
    return None


def _compare(args: argparse.Namespace) -> int:
    from spectral3d.train.compare import compare_models

    problem = _check_common("compare", args)
    if problem:
        return _usage_error("compare", problem)
    if len(args.models) < 2:
        return _usage_error("compare", f"RUN_OR_CKPT: expected at least 2 models, got {len(args.models)}")
    result = compare_models(
        args.models,
        args.data,
        args.out,
        split=args.split,
        fold=args.fold,
        n_bootstrap=args.bootstrap,
        batch_size=args.batch_size,
        figure=not args.no_figure,
        figure_metric=args.metric,
        overwrite=args.overwrite,
    )
    print((args.out / "compare.md").read_text())
    print(f"wrote {args.out / 'compare.json'} ({len(result['cohorts'])} cohort(s), reference {result['reference']})")
    return 0


def _add_ablate_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("ablate", help="train the Table 3 ablation rows with one recipe; Table 3 and Fig. 5")
    a.add_argument("--data", required=True, type=Path, help="cohort folder (train/val/test splits)")
    a.add_argument("--out", required=True, type=Path, help="ablation folder; rerun the same command to resume")
    a.add_argument("--scale", choices=["paper", "small", "tiny"], default="paper")
    a.add_argument(
        "--rows", nargs="+", default=None, help="rows among cnv2 samnet mo desn demo samba tf de_c de_s full (all)"
    )
    a.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per row and seed")
    a.add_argument("--epochs", type=int, default=30)
    a.add_argument("--batch-size", type=int, default=4)
    a.add_argument("--lr", type=float, default=3e-4)
    a.add_argument("--weight-decay", type=float, default=0.05)
    a.add_argument("--warmup-epochs", type=float, default=1.0)
    a.add_argument("--drop-rate", type=float, default=0.0, help="dropout before the classifier")
    a.add_argument("--input-size", type=_size, default=None, help="model grid (default: the preset's)")
    a.add_argument("--split", default="test", choices=["train", "val", "test"], help="the split Table 3 reports")
    a.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (CIs, macro-AUC test)")
    a.add_argument("--cache-dir", type=Path, default=None, help="cache of preprocessed volumes (OUT/cache)")
    a.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    a.add_argument("--metric", choices=["auc", "accuracy"], default="auc", help="y axis of Fig. 5")
    a.add_argument("--no-figure", action="store_true", help="no Fig. 5 PNG (no matplotlib needed)")
    a.add_argument("--no-progress", action="store_true")


def _ablate(args: argparse.Namespace) -> int:
    from spectral3d.train import TrainConfig
    from spectral3d.train.ablate import run_ablation

    problem = _check_common("ablate", args)
    if problem:
        return _usage_error("ablate", problem)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        num_workers=args.workers,
        progress=not args.no_progress,
        keep_last=1,
    )
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
        n_bootstrap=args.bootstrap,
        cache_dir=args.cache_dir,
        figure=not args.no_figure,
        figure_metric=args.metric,
    )
    if result.interrupted:
        print(f"interrupted; rerun the same command to resume (done: {', '.join(result.trained) or 'nothing new'})")
        return 130
    print(result.table)
    print(f"wrote {args.out / 'table3.md'}, table3.json" + ("" if args.no_figure else ", fig5.png"))
    return 0


_COMMANDS = {
    "synth": _synth,
    "train": _train,
    "evaluate": _evaluate,
    "predict": _predict,
    "gradcam": _gradcam,
    "compare": _compare,
    "ablate": _ablate,
    "demo": _demo,
    "models": _models,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spectral3d`` command; returns the exit status."""
    import os

    args = _parser().parse_args(argv)
    from spectral3d.data.errors import DataError

    if os.environ.get("SPECTRAL3D_DEBUG", "0") not in ("", "0"):
        return _COMMANDS[args.command](args)
    try:
        return _COMMANDS[args.command](args)
    except (DataError, FileNotFoundError, FileExistsError) as err:
        print(f"spectral3d {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as err:  # bad arguments found by the library (unknown model, sizes, ...)
        print(f"spectral3d {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spectral3d {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
