"""Which cues does a synthetic cohort carry, and where? Linear probes on its preprocessed cases.

Writes a synthetic cohort (``spectral3d.data.write_synthetic_cohort``), loads every case as
``spectral3d train`` does (32³ at 1 mm, clip + z-score per sequence; ``--crop roi`` centres the
crop on the lesion as the demo does, ``--crop centre`` keeps the whole field of view so the lesion
lies anywhere) and scores a logistic regression by stratified ``--cv``-fold cross-validation
(each fold trains on ``(cv - 1) / cv`` of the cases), for these feature sets, per sequence and for
all sequences together:

* ``roi mean``: the lesion's mean intensity (one number per sequence) — the intensity cue;
* ``roi stats``: the lesion's mean, standard deviation and 5/50/95th percentiles — every
  intensity statistic of the lesion, read with the ROI as an oracle;
* ``volume stats``: each volume's 1st and 99th percentile, its mean, and its mean outside the
  lesion — what a model could read without looking at the lesion (a leak if far above chance);
* ``spectrum``: the log radial power spectrum of the lesion (11 bins; ROI as an oracle) — the
  texture cue;
* ``bands8`` / ``bands16``: the log energy of the whole volume in 8 / 16 equal radial bands
  over ``|f| ≤ 0.5`` cycles/voxel — the texture cue as a network could read it, without the ROI.

    python benchmarks/diagnostics/cohort_probes.py --task spine --cases 180
    python benchmarks/diagnostics/cohort_probes.py --task texture --lesion frequency_only --cases 400 \\
        --crop centre --out benchmarks/results/frequency_task_probes.json

Measured 2026-11-26 (the demo cohort's form, 180 spine cases, seed 0, ROI crop, chance 0.167):
roi mean 0.75 / 0.69 / 0.68 (t1 / t2 / t2fs), 0.96 jointly; spectrum 1.00 / 0.97 / 0.96, 1.00
jointly; volume stats 0.26 / 0.36 / 0.21, 0.61 jointly. The frequency-only task
(``spectral3d.data.synthetic.FREQUENCY_ONLY``) is pinned in ``benchmarks/results/frequency_pathway.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from spectral3d.data import Cohort, PreprocessConfig, write_synthetic_cohort
from spectral3d.data.synthetic import FREQUENCY_ONLY, LesionSpec

BINS = 11
KINDS = ("roi mean", "roi stats", "volume stats", "spectrum", "bands8", "bands16")


def radial_frequency(shape: tuple[int, ...]) -> np.ndarray:
    """``|f|`` in cycles/voxel of every bin of the full FFT of a volume of ``shape``."""
    return np.sqrt(sum(g**2 for g in np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")))


def band_energies(v: np.ndarray, num_bands: int) -> np.ndarray:
    """Log mean power of ``v`` in ``num_bands`` equal radial bands over ``0 < |f| <= 0.5``."""
    rho = radial_frequency(v.shape)
    power = np.abs(np.fft.fftn(v)) ** 2
    band = np.ceil(rho / 0.5 * num_bands).astype(int)  # 0 = the DC bin, > num_bands = the corners
    return np.log([power[band == b].mean() + 1e-9 for b in range(1, num_bands + 1)])


def features(volume: np.ndarray, roi: np.ndarray) -> dict[str, list]:
    """Every feature set of :data:`KINDS` of one case, sequence after sequence."""
    bins = np.digitize(radial_frequency(roi.shape), np.linspace(0, 0.87, BINS + 1))
    out: dict[str, list] = {k: [] for k in KINDS}
    for v in volume:
        lesion = v[roi]
        out["roi mean"].append([lesion.mean()])
        out["roi stats"].append([lesion.mean(), lesion.std(), *np.percentile(lesion, (5, 50, 95))])
        out["volume stats"].append([np.percentile(v, 1), np.percentile(v, 99), v.mean(), v[~roi].mean()])
        power = np.abs(np.fft.fftn((v - lesion.mean()) * roi)) ** 2
        out["spectrum"].append(np.log([power[bins == b].mean() + 1e-9 for b in range(1, BINS + 1)]))
        out["bands8"].append(band_energies(v, 8))
        out["bands16"].append(band_energies(v, 16))
    return out


def lesion_spec(args: argparse.Namespace) -> LesionSpec:
    base = FREQUENCY_ONLY if args.lesion == "frequency_only" else LesionSpec()
    overrides = {
        k: getattr(args, k) for k in ("amplitude", "radius", "band_half_width") if getattr(args, k) is not None
    }
    if args.bands is not None:
        overrides["bands"] = tuple(args.bands)
    return dataclasses.replace(base, **overrides)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="spine", choices=("spine", "spondylitis", "texture"))
    p.add_argument("--lesion", default="default", choices=("default", "frequency_only"))
    p.add_argument("--amplitude", type=float, default=None, help="override the spec's texture amplitude")
    p.add_argument("--radius", type=float, default=None, help="override the spec's lesion radius / size")
    p.add_argument("--band-half-width", type=float, default=None)
    p.add_argument("--bands", type=float, nargs=2, default=None, help="first and last band centre")
    p.add_argument("--cases", type=int, default=180)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--crop", default="roi", choices=("roi", "centre"))
    p.add_argument("--cv", type=int, default=5, help="cross-validation folds")
    p.add_argument("--out", type=Path, default=None, help="write the scores here as JSON")
    args = p.parse_args()
    spec = lesion_spec(args)
    root = Path(tempfile.mkdtemp()) / "c"
    write_synthetic_cohort(root, task=args.task, cases=args.cases, seed=args.seed, size=args.size, lesion=spec)
    cohort = Cohort.from_folder(root)
    pre = PreprocessConfig(input_size=args.size, spacing=1.0, crop=args.crop)
    rows, labels = [], []
    for rec in cohort.cases:
        case = cohort.load(rec, pre)
        rows.append(features(case.volume, case.roi.astype(bool)))
        labels.append(cohort.label_index(rec))
    y = np.array(labels)
    folds = StratifiedKFold(args.cv, shuffle=True, random_state=0)

    def probe(x: np.ndarray) -> float:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        return float(cross_val_score(model, x, y, cv=folds).mean())

    names = cohort.sequences
    scores: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        per_seq = [np.array([np.ravel(r[kind][s]) for r in rows]) for s in range(len(names))]
        scores[kind] = {n: probe(f) for n, f in zip(names, per_seq)}
        if len(names) > 1:
            scores[kind]["joint"] = probe(np.concatenate(per_seq, axis=1))
        print(f"{kind:<13}" + "  ".join(f"{n} {a:.3f}" for n, a in scores[kind].items()), flush=True)
    chance = 1 / cohort.num_classes
    radii = [2 * args.size * spec.radius * f for f in (0.85, 1.15)]
    n_train = len(y) * (args.cv - 1) // args.cv
    print(
        f"chance {chance:.3f} ({len(y)} cases, {args.cv}-fold: {n_train} train / {len(y) - n_train} held out; "
        f"lesion diameter {radii[0]:.1f}-{radii[1]:.1f} voxels of {args.size})"
    )
    if args.out:
        info = {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "lesion": dataclasses.asdict(spec),
            "chance": chance,
            "n_train_per_fold": n_train,
            "scores": scores,
        }
        args.out.write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
