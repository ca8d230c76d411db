"""Which cues does a synthetic cohort carry, and where? Linear probes on its preprocessed cases.

Writes a synthetic cohort (``spectral3d.data.write_synthetic_cohort``), loads every case as
``spectral3d train`` does for the demo (32³ crops around the ROI, 1 mm, clip + z-score per
sequence) and fits a logistic regression on 3 of every 5 cases, scored on the other 2, for three
feature sets, per sequence and for all sequences together:

* ``roi mean``: the lesion's mean intensity (one number per sequence) — the intensity cue;
* ``spectrum``: the log radial power spectrum of the lesion (11 bins per sequence) — the texture cue;
* ``volume stats``: each volume's 1st and 99th percentile, its mean, and its mean outside the
  lesion — what a model could read without looking at the lesion (a leak if far above chance).

    python benchmarks/diagnostics/cohort_probes.py --task spine --cases 180

Measured 2026-11-26 (the cohort's current form, 180 spine cases, seed 0, chance 0.167):
roi mean 0.75 / 0.69 / 0.68 (t1 / t2 / t2fs), 0.96 jointly; spectrum 1.00 / 0.97 / 0.96, 1.00
jointly; volume stats 0.26 / 0.36 / 0.21, 0.61 jointly.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from spectral3d.data import Cohort, PreprocessConfig, write_synthetic_cohort

BINS = 11


def features(volume: np.ndarray, roi: np.ndarray) -> tuple[list, list, list]:
    """``(roi mean, log radial spectrum, volume stats)`` of one case, sequence after sequence."""
    radius = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.fft.fftfreq(n) for n in roi.shape], indexing="ij")))
    bins = np.digitize(radius, np.linspace(0, 0.87, BINS + 1))
    mean, spectrum, stats = [], [], []
    for v in volume:
        mean.append(v[roi].mean())
        power = np.abs(np.fft.fftn((v - v[roi].mean()) * roi)) ** 2
        spectrum.append(np.log([power[bins == b].mean() + 1e-9 for b in range(1, BINS + 1)]))
        stats.append([np.percentile(v, 1), np.percentile(v, 99), v.mean(), v[~roi].mean()])
    return mean, spectrum, stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="spine", choices=("spine", "spondylitis"))
    p.add_argument("--cases", type=int, default=180)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    root = write_synthetic_cohort(Path(tempfile.mkdtemp()) / "c", task=args.task, cases=args.cases, seed=args.seed)
    cohort = Cohort.from_folder(root)
    pre = PreprocessConfig(input_size=32, spacing=1.0, crop="roi")
    rows, labels = [], []
    for rec in cohort.cases:
        case = cohort.load(rec, pre)
        rows.append(features(case.volume, case.roi.astype(bool)))
        labels.append(cohort.label_index(rec))
    y = np.array(labels)
    train = np.arange(len(y)) % 5 < 3

    def probe(x: np.ndarray) -> float:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[train], y[train])
        return model.score(x[~train], y[~train])

    names = cohort.sequences
    for k, kind in enumerate(("roi mean", "spectrum", "volume stats")):
        per_seq = [np.array([np.ravel(r[k][s]) for r in rows]) for s in range(len(names))]
        scores = [probe(f) for f in per_seq]
        joint = probe(np.concatenate(per_seq, axis=1))
        print(f"{kind:<13}" + "  ".join(f"{n} {a:.2f}" for n, a in zip(names, scores)) + f"  joint {joint:.2f}")
    print(f"chance {1 / cohort.num_classes:.3f} ({len(y)} cases, {train.sum()} train / {(~train).sum()} held out)")


if __name__ == "__main__":
    main()
