"""Train and evaluate on a NIfTI cohort with the Python API behind ``spectral3d train | evaluate | predict``.

A cohort is a folder with ``cases.csv`` (``case_id, label, split``, optional ``patient_id``,
``fold`` and clinical columns) and one sub-folder per case holding one NIfTI per sequence
(``t1.nii.gz``, ``t2fs.nii.gz``, …) and optionally ``roi.nii.gz``. This example writes a small
synthetic cohort in that layout (the paper's cohorts are private), trains, evaluates the test
split with the paper's metrics and predicts one case folder.

    python examples/train_on_nifti.py --out runs/example                 # DeSamba-tiny, 24 cases, 2 epochs
    python examples/train_on_nifti.py --out runs/example --data my_cohort --model resnet50_3d
    python examples/train_on_nifti.py --out runs/example --quick         # a tiny baseline, 1 epoch, seconds

The same run from the shell: ``spectral3d synth --out cohort --task spondylitis --cases 24`` then
``spectral3d train --model desamba_spondylitis_tiny --data cohort --out runs/x --epochs 2``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spectral3d.data import write_synthetic_cohort
from spectral3d.metrics import metrics_table
from spectral3d.train import TrainConfig
from spectral3d.train.workflow import evaluate_checkpoint, predict_cases, train_on_cohort


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/train_on_nifti"), help="the run directory")
    parser.add_argument("--data", type=Path, default=None, help="a cohort folder (default: synthesise one)")
    parser.add_argument("--model", default=None, help="registered name (default desamba_spondylitis_tiny)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="10 synthetic cases, test_convnextv2_3d, 1 epoch")
    args = parser.parse_args(argv)
    model = args.model or ("test_convnextv2_3d" if args.quick else "desamba_spondylitis_tiny")
    epochs = args.epochs or (1 if args.quick else 2)

    data = args.data
    if data is None:
        # Two sequences (t1, t2fs) on different grids, a ROI per case, 8 clinical columns, 2 classes.
        data = write_synthetic_cohort(
            args.out / "cohort", task="spondylitis", cases=10 if args.quick else 24, size=32, overwrite=True
        )

    # Builds the model for the cohort (sequences, classes, clinical columns), trains with AdamW and
    # a warm-up cosine schedule, and writes one checkpoint per epoch plus `best` and `last`
    # pointers; each checkpoint's config.json holds everything evaluate/predict/gradcam need.
    # lr 3e-4 is the default: DeSamba-tiny trains unstably at 1e-3 (benchmarks/results/fusion_ablation.md).
    cfg = TrainConfig(epochs=epochs, batch_size=4, lr=3e-4, warmup_epochs=0.5, progress=False, seed=0)
    # overwrite=True: each run of the example replaces the previous one (a run directory that holds a
    # run is otherwise refused; resume=True would continue it).
    result = train_on_cohort(model, data, args.out / "run", cfg, input_size=32, overwrite=True)
    for row in result.history:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})

    # The paper's metrics (support-weighted and macro) on the test split, with bootstrap CIs.
    metrics = evaluate_checkpoint(result.run_dir, data, split="test", out=args.out / "eval", n_bootstrap=100)
    print(metrics_table({model: metrics}))

    # Class probabilities for a case folder outside any table (clinical values missing here).
    case = sorted(p for p in Path(data).iterdir() if p.is_dir())[0]
    for row in predict_cases(result.run_dir, [case]):
        print(row["case_id"], "->", row["predicted"], {k: round(v, 3) for k, v in row["probabilities"].items()})


if __name__ == "__main__":
    main()
