"""Does a briefly trained DeSamba-tiny look at the lesion? Measures it; asserts nothing.

Synthetic spondylitis cases (t1 + t2fs on different grids, 32³ at 1 mm) cropped around the
field-of-view centre, so the lesion sits anywhere in the volume, at the position ``lesions.json``
records. ``desamba_spondylitis_tiny`` trains on the first ``--train`` cases (AdamW, lr ``--lr`` (1e-3), batch 8,
random flips, Eq. 5 loss, seed 0) and is then measured on the rest:

* held-out accuracy, with the clinical table removed, and with the lesion blanked out (the ball
  of radius + 3 voxels set to 0, the volume mean after z-scoring): if accuracy survives the
  blanking, the model reads the class somewhere else than at the lesion;
* for Grad-CAM, Grad-CAM++ and LayerCAM at the default layer (and the 8³ / 16³ stages), and for
  the plain input gradient: how often the map's maximum lies within the lesion radius + 3 voxels,
  per class, against two baselines — a uniformly random maximum (that ball's volume over the
  grid's) and **the same maxima scored against the other held-out cases' lesions**, which a map
  with any fixed spatial bias (towards the centre, the border, the column) hits as often as its
  own; only a map that follows the lesion beats it; also how many maxima lie within 2 voxels of
  the volume border;
* the 5th and 99th percentile of the z-scored volumes per class: the per-volume normalisation
  statistics a model can use instead of the lesion.

    python benchmarks/diagnostics/gradcam_localisation.py --lr 3e-4
    python benchmarks/diagnostics/gradcam_localisation.py --lr 3e-4 --ablation cnv2   # no frequency pathway

Measurements and their reading: ``benchmarks/results/gradcam_localisation.md``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

import backbones3d
from backbones3d.desamba import DeSambaLoss
from spectral3d.data import Cohort, PreprocessConfig, TabularStats, synthetic, write_synthetic_cohort
from spectral3d.gradcam import GradCAM3d
from spectral3d.metrics import peak_hit_rates

MARGIN = 3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=48)
    p.add_argument("--test", type=int, default=40)
    p.add_argument("--epochs", type=int, default=12)
    default = synthetic.LesionSpec()
    p.add_argument("--intensity-cue", type=float, default=default.intensity_cue)
    p.add_argument("--texture", type=float, default=default.amplitude)
    p.add_argument("--radius", type=float, default=default.radius, help="lesion radius / volume size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    p.add_argument("--size", type=int, default=32, help="volume and model grid edge, voxels")
    p.add_argument("--tiny-model", default="desamba_spondylitis_tiny", help="or test_desamba_3d")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--occlusion", action="store_true", help="also occlusion maps (slow: 343 forward passes per case)")
    p.add_argument("--model", default=None, help="an early-fusion baseline instead (e.g. test_resnet_3d)")
    p.add_argument("--ablation", default=None, help="a Table 3 row (backbones3d.desamba.ABLATION_ROWS) at tiny scale")
    args = p.parse_args()

    root = Path(tempfile.mkdtemp())
    spec = synthetic.LesionSpec(intensity_cue=args.intensity_cue, amplitude=args.texture, radius=args.radius)
    cohort_dir = write_synthetic_cohort(
        root, task="spondylitis", cases=args.train + args.test, seed=1, size=args.size, lesion=spec
    )
    cohort = Cohort.from_folder(cohort_dir)
    pre = PreprocessConfig(input_size=args.size, spacing=1.0, crop="centre")
    cases = list(cohort.cases)
    stats = TabularStats.fit(cases[: args.train], cohort.clinical_columns)
    x = torch.from_numpy(np.stack([cohort.load(rec, pre).volume for rec in cases]))
    tab = torch.from_numpy(np.stack([stats.transform(rec.clinical) for rec in cases]))
    y = torch.tensor([cohort.label_index(rec) for rec in cases])
    centres = synthetic.lesion_centres(cohort_dir, space="dhw")
    radii = synthetic.lesion_radii(cohort_dir)

    torch.manual_seed(args.seed)
    name, extra = args.tiny_model, {}
    if args.ablation:
        name, extra = f"desamba_spine_ablation_{args.ablation}", {"scale": "tiny"}
    if args.model:
        model = backbones3d.create_model(args.model, in_chans=len(cohort.sequences), num_classes=2)
    else:
        model = backbones3d.create_model(name, sequences=list(cohort.sequences), num_classes=2, num_tabular=8, **extra)

    def call(v: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        return model(v) if args.model else model(v, t)  # an early-fusion baseline takes no clinical table

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    criterion = DeSambaLoss()
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    for _ in range(args.epochs):
        for idx in torch.randperm(args.train, generator=gen).split(args.batch):
            xb = x[idx].clone()
            for axis in (2, 3, 4):
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb[flip] = xb[flip].flip(axis)
            logits, aux = (call(xb, None), {}) if args.model else model.forward_with_aux(xb, tab[idx])
            loss, _ = criterion(logits, y[idx], aux)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()

    held = slice(args.train, None)
    xt, tt, yt = x[held], tab[held], y[held]
    ct = [centres[r.case_id] for r in cases[held]]
    rt = [radii[r.case_id] for r in cases[held]]
    n = args.size
    grid = np.stack(np.indices((n, n, n)), -1).astype(np.float64)
    dists = [np.linalg.norm(grid - c, axis=-1) for c in ct]
    balls = np.stack([d <= r + MARGIN for d, r in zip(dists, rt)])
    # control for the blanking: a ball of the same size at another held-out case's lesion position
    # that does not overlap this one's (a flat ball is itself an object the model may react to)
    decoys = []
    for c, r in zip(ct, rt):
        far = [j for j in range(len(ct)) if np.linalg.norm(ct[j] - c) > 2 * (r + MARGIN) + 1]
        decoys.append(np.linalg.norm(grid - ct[far[0]], axis=-1) <= r + MARGIN if far else None)
    blanked, decoy_blanked = xt.clone(), xt.clone()
    for i in range(len(ct)):
        blanked[i][:, torch.from_numpy(balls[i])] = 0
        if decoys[i] is not None:
            decoy_blanked[i][:, torch.from_numpy(decoys[i])] = 0

    def accuracy(v: torch.Tensor, t: torch.Tensor | None) -> float:
        with torch.no_grad():
            return float((call(v, t).argmax(1) == yt).float().mean())

    print(
        f"held-out accuracy {accuracy(xt, tt):.3f}; without the clinical table {accuracy(xt, None):.3f}; "
        f"lesion blanked {accuracy(blanked, tt):.3f}; a same-size ball elsewhere blanked "
        f"{accuracy(decoy_blanked, tt):.3f} ({sum(d is not None for d in decoys)} cases)"
    )
    others = [(i, j) for i in range(len(ct)) for j in range(len(ct)) if j != i]

    def score(maps: np.ndarray) -> str:
        """Hit rates of the maxima and map mass in the lesion, each against the other cases' lesions."""
        rates = peak_hit_rates(maps, balls)  # own lesion, other cases' lesions, random map
        peaks = [np.unravel_index(int(m.argmax()), m.shape) for m in maps]
        hits = np.array([balls[i][pk] for i, pk in enumerate(peaks)])
        mass = np.mean([m[b].mean() / (m.mean() + 1e-12) for m, b in zip(maps, balls)])
        mass_other = np.mean([maps[i][balls[j]].mean() / (maps[i].mean() + 1e-12) for i, j in others])
        per_class = "/".join(f"{hits[yt.numpy() == k].mean():.2f}" for k in (0, 1))
        border = np.mean([min(min(pk), n - 1 - max(pk)) <= 2 for pk in peaks])
        far = np.median([d[pk] for d, pk in zip(dists, peaks)])
        return (
            f"hit {rates['hit']:.2f} (per class {per_class}; other cases' lesions {rates['other_cases']:.2f}), "
            f"mass in lesion / mean {mass:.2f} (other cases' lesions {mass_other:.2f}), "
            f"border {border:.2f}, peak-lesion distance median {far:.1f}"
        )

    chance = peak_hit_rates(np.random.default_rng(0).random(balls.shape), balls)["random"]
    print(f"random map: hit {chance:.3f}, mass 1.00; a peak within 2 voxels of the border: 0.40")
    for method in ("gradcam", "gradcam++", "layercam"):
        for min_grid in (4, 8, 16):
            out = GradCAM3d(model, method=method, min_grid=min_grid)(xt, None if args.model else tt)
            for s in out.maps:  # one per sequence for DeSamba, "input" for an early-fusion baseline
                print(f"{method:<9} min_grid {min_grid:>2} {s:<5} " + score(out.maps[s].numpy()))
            if len(out.maps) > 1:  # the case's map: the mean of its sequences' maps (each in [0, 1])
                mean_map = torch.stack(list(out.maps.values())).mean(0).numpy()
                print(f"{method:<9} min_grid {min_grid:>2} mean  " + score(mean_map))
    # plain input-gradient saliency, |d logit / d x| smoothed over the lesion scale, for comparison
    xg = xt.clone().requires_grad_(True)
    logits = call(xg, tt)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    sal = torch.nn.functional.avg_pool3d(xg.grad.abs(), 5, stride=1, padding=2)
    for s, name in enumerate(cohort.sequences):
        print(f"input gradient        {name:<5} " + score(sal[:, s].numpy()))
    # occlusion: the drop of the predicted class's probability when an 8³ cube of one sequence is set
    # to 0 (stride 4), spread back over the cube's voxels — a perturbation map, not a gradient one
    if args.occlusion:
        with torch.no_grad():
            base = torch.softmax(call(xt, tt), 1)
            pred = base.argmax(1)
            for s, name in enumerate(cohort.sequences):
                occ = torch.zeros(len(xt), n, n, n)
                cover = torch.zeros(n, n, n)
                for d in range(0, n - 7, 4):
                    for h in range(0, n - 7, 4):
                        for w in range(0, n - 7, 4):
                            xo = xt.clone()
                            xo[:, s, d : d + 8, h : h + 8, w : w + 8] = 0
                            prob = torch.softmax(call(xo, tt), 1).gather(1, pred[:, None])[:, 0]
                            drop = base.gather(1, pred[:, None])[:, 0] - prob
                            occ[:, d : d + 8, h : h + 8, w : w + 8] += drop[:, None, None, None]
                            cover[d : d + 8, h : h + 8, w : w + 8] += 1
                print(f"occlusion             {name:<5} " + score((occ / cover).numpy()))
    for s, name in enumerate(cohort.sequences):
        v = xt[:, s].flatten(1)
        pct = {
            k: (float(v[yt == k].quantile(0.05, dim=1).median()), float(v[yt == k].quantile(0.99, dim=1).median()))
            for k in (0, 1)
        }
        print(f"{name}: median 5th / 99th percentile of the z-scored volume per class {pct}")


if __name__ == "__main__":
    main()
