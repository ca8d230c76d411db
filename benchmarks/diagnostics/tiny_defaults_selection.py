"""Re-select the ``tiny`` scale's fusion block and SAMBlock skip on validation AUC, per-sequence DeSamba.

``desamba_spine_tiny`` (one SAMNet + MambaOut3d pair per sequence, DRLM, tabular encoder) on the
demo's cohort (``write_synthetic_cohort(task="spine", cases=240, seed=0)``, 32³ ROI crops), trained
exactly as ``spectral3d demo`` trains it (``spectral3d.train.workflow.train_on_cohort``: 12 epochs,
batch 4, AdamW lr 3e-4, one warm-up epoch then cosine, dropout 0.3, the library's augmentations),
for every combination of

* ``fusion_stages``: ``"all"`` (the multi-scale block: every stage of both branches pooled) or
  ``"last"`` (the last stage of each branch);
* ``samblock_residual``: ``"identity"`` (``x + F_out``) or ``"paper"`` (``0.5·x + 0.5·F_out``);

and every ``--seeds`` value (the model's initial weights and the batch order; the cohort is fixed).
One JSON line per run in ``--out``: the per-epoch history (validation accuracy / AUC / loss) and,
for information only, the test metrics of the best-validation checkpoint. The selection reads the
validation AUC (mean of the last three epochs, and the best epoch's) — never the test split.

    python benchmarks/diagnostics/tiny_defaults_selection.py --seeds 0 1 2 \\
        --out benchmarks/results/tiny_defaults/runs.jsonl
    python benchmarks/diagnostics/tiny_defaults_selection.py --summary   # the table of tiny_defaults.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from spectral3d.data import write_synthetic_cohort
from spectral3d.train import TrainConfig
from spectral3d.train.workflow import evaluate_checkpoint, train_on_cohort

VARIANTS = {
    f"{fusion}_{residual}": {"fusion_stages": fusion, "samblock_residual": residual}
    for fusion, residual in itertools.product(("all", "last"), ("identity", "paper"))
}


def summary(path: Path) -> str:
    """Markdown table: per variant, mean ± sd over seeds of the validation AUC (last three epochs' mean,
    best epoch), and, for information, the test accuracy / AUC of the best-validation checkpoint."""
    runs: dict[tuple[str, int], dict] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        runs[(r["variant"], r["seed"])] = r  # the last record of a (variant, seed) wins

    def stat(values: list[float]) -> str:
        sd = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.3f}{sd}"

    rows = [
        "| variant | seeds | val AUC, last 3 epochs | val AUC, best epoch | test ACC (info) | test AUC (info) |",
        "|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        rs = [r for (v, _), r in sorted(runs.items()) if v == name]
        if not rs:
            continue
        aucs = [[h["val_auc"] for h in r["history"]] for r in rs]
        rows.append(
            f"| {name} | {','.join(str(r['seed']) for r in rs)} | {stat([sum(a[-3:]) / 3 for a in aucs])} "
            f"| {stat([max(a) for a in aucs])} | {stat([r['test_of_best_val']['accuracy'] for r in rs])} "
            f"| {stat([r['test_of_best_val']['auc'] for r in rs])} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--work", type=Path, default=Path("/tmp/spectral3d-tiny-defaults"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/tiny_defaults/runs.jsonl"))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--summary", action="store_true", help="print the table of the runs in --out and exit")
    args = p.parse_args()
    if args.summary:
        print(summary(args.out))
        return
    torch.set_num_threads(1)
    cohort = args.work / "cohort"
    if not (cohort / "cases.csv").exists():
        write_synthetic_cohort(cohort, task="spine", cases=240, seed=0, size=(32, 32, 32), overwrite=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed, name in itertools.product(args.seeds, args.variants):
        run = args.work / "runs" / f"{name}_s{seed}"
        shutil.rmtree(run, ignore_errors=True)
        cfg = TrainConfig(
            epochs=args.epochs, batch_size=4, lr=3e-4, warmup_epochs=1.0, seed=seed, progress=False, keep_last=1
        )
        start = time.process_time()
        result = train_on_cohort(
            "desamba_spine_tiny",
            cohort,
            run,
            cfg,
            model_kwargs={"drop_rate": 0.3, **VARIANTS[name]},
            input_size=32,
            cache_dir=args.work / "cache",
        )
        test = evaluate_checkpoint(run, cohort, split="test", n_bootstrap=0)
        record = {
            "variant": name,
            **VARIANTS[name],
            "seed": seed,
            "epochs": args.epochs,
            "cpu_s": time.process_time() - start,
            "best_epoch": result.best_epoch,
            "history": result.history,
            "test_of_best_val": {k: test[k] for k in ("accuracy", "auc")},
        }
        with open(args.out, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
        aucs = [h["val_auc"] for h in result.history]
        print(name, seed, f"val AUC last-3 {sum(aucs[-3:]) / 3:.3f} best {max(aucs):.3f}", flush=True)


if __name__ == "__main__":
    main()
