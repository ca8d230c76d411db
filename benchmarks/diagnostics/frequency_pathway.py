"""Where does a SAMNet lose the band energy of the frequency-only task? Trains, probes and measures.

The task (``frequency_task.py``): ``write_synthetic_cohort(task="texture", lesion=FREQUENCY_ONLY)``,
400 cases (about 240 train / 80 val / 80 test), ``t1`` only, the lesion anywhere in the 32³ volume;
``--grid 64`` samples the same volumes at 0.5 mm on a 64³ grid (the lesion's bands at half the
frequency in cycles/voxel). Networks: SAMNet widths 16-32-64-128, depths 1-1-2-1 (0.95 M; its
``frequency=False`` twin 0.40 M) and the variants of :data:`VARIANTS`.

Two commands, writing under ``--out-dir`` (rerunnable; readers take the last record of a key):

* ``train VARIANT [--grid --lr --steps --seed]``: the recipe of ``frequency_task.train``; the final
  weights go to ``--cache/states/`` for ``probe``; one line in ``diagnosis_runs.jsonl``.
* ``probe [--grid]``: logistic-regression probes (fit on the train split, scored on val + test,
  chance 0.25) of the class from (a) the input: log energy in 8 / 16 radial bands of the whole
  volume, the same after a 4³ average pool (the 8³ grid a linear stride-4 stem leaves), and the
  broadband local energy; (b) every network of :data:`PROBED` at initialisation and trained (from
  ``states/``): the stem's convolution, the stem's output, each stage's output, each pooled three
  ways per channel — ``avg`` (the mean: what a linear downsampling or the head aggregates),
  ``energy`` (the mean of the square) and ``max``; (c) SAMB's modulation gains ``f_m`` in every
  trained SAMBlock: how far from 1, and how much of their variance the class explains per band
  (``probes_g{grid}.json``).

Besides SAMNet's forms, :data:`VARIANTS` holds the readouts that locate the loss: ``energy_linear*``
(the spectral stem's 16 log band energies, averaged over the volume, then LayerNorm / BatchNorm /
nothing, then a Linear layer: the linear probe trained with the networks' recipe), ``*stem_only*``
(a stem, global average, norm, Linear), ``stem_nobn`` (the spectral stem without its BatchNorm).
Results and reading: ``benchmarks/results/frequency_pathway.md``.

    cd /work/wt/i16 && export PYTHONPATH=$PWD OMP_NUM_THREADS=1
    python benchmarks/diagnostics/frequency_pathway.py train twin --lr 1e-3
    python benchmarks/diagnostics/frequency_pathway.py probe --grid 32
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import frequency_task  # noqa: E402

from backbones3d.samnet import SAMNet  # noqa: E402
from spectral3d.layers import SAMB, SpectralStem3d  # noqa: E402

BASE = dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128))
VARIANTS: dict[str, dict] = {
    "samnet": {},  # the paper's form: band SAMB, paper skip, patch stem
    "twin": {"frequency": False},
    "stem": {"spectral_stem": True},
    "twin_k3": {"frequency": False, "kernel_size": 3},
    "twin_stem_nonorm": {"frequency": False, "stem_norm": False},
    "samnet_channel": {"fm_mode": "channel"},
    "samnet_identity": {"residual": "identity"},
    "stem_identity": {"spectral_stem": True, "residual": "identity"},
    "energy_linear": {"arch": "energy_linear"},
    "energy_linear_bn": {"arch": "energy_linear", "head_norm": "bn"},
    "energy_linear_none": {"arch": "energy_linear", "head_norm": "none"},
    "stem_nobn": {"spectral_stem": True, "energy_norm": False},
    "stem_only_nobn": {"spectral_stem": True, "stem_only": True, "energy_norm": False},
    "stem_only": {"spectral_stem": True, "stem_only": True},
    "stem_only_bn": {"spectral_stem": True, "stem_only": True, "head_norm": "bn"},
    "patch_stem_only": {"stem_only": True},
}
PROBED = ("samnet", "twin", "stem")


class StemOnly(nn.Module):
    """A network's stem, then global average → norm → Linear: what the stem alone makes readable.

    ``norm``: ``"ln"`` LayerNorm over the pooled vector (per case, as ConvNeXt's head), ``"bn"``
    BatchNorm1d (per feature over the batch, as a probe's standardisation), ``"none"``.
    """

    def __init__(self, stem: nn.Module, width: int, num_classes: int, norm: str = "ln") -> None:
        super().__init__()
        norms = {"ln": nn.LayerNorm(width), "bn": nn.BatchNorm1d(width), "none": nn.Identity()}
        self.stem, self.norm, self.fc = stem, norms[norm], nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.stem(x).mean(dim=(2, 3, 4))))


class _BandEnergies(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spectral = SpectralStem3d(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectral.band_energies(x)


def build(variant: str, num_classes: int = 4) -> nn.Module:
    kw = dict(VARIANTS[variant])
    head_norm = kw.pop("head_norm", "ln")
    if kw.pop("arch", None) == "energy_linear":  # SpectralStem3d's log band energies, averaged, norm, Linear
        return StemOnly(_BandEnergies(), 16, num_classes, head_norm)
    stem_norm = kw.pop("stem_norm", True)
    stem_only = kw.pop("stem_only", False)
    energy_norm = kw.pop("energy_norm", True)
    model = SAMNet(in_chans=1, num_classes=num_classes, **BASE, **kw)
    if not stem_norm:
        model.stem[1] = nn.Identity()
    if not energy_norm:  # the spectral stem without its BatchNorm (its first form), projection init std 0.02
        model.stem.spectral.norm = nn.Identity()
        nn.init.trunc_normal_(model.stem.spectral.proj.weight, std=0.02)
        nn.init.zeros_(model.stem.spectral.proj.bias)
    return StemOnly(model.stem, BASE["dims"][0], num_classes, head_norm) if stem_only else model


def state_path(cache: Path, variant: str, grid: int, lr: float, seed: int, steps: int) -> Path:
    return cache / "states" / f"{variant}_g{grid}_lr{lr:g}_s{seed}_n{steps}.pt"


def cmd_train(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    data = frequency_task.load(args.cache, size=args.grid, spacing=32 / args.grid)
    torch.manual_seed(args.seed)
    model = build(args.variant)
    key = dict(variant=args.variant, grid=args.grid, lr=args.lr, seed=args.seed, steps=args.steps)
    print(key, f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M", flush=True)
    result = frequency_task.train(
        model, data, args.steps, args.lr, seed=args.seed, eval_every=args.eval_every, log=lambda r: print(r, flush=True)
    )
    path = state_path(args.cache, **{k: v for k, v in key.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    frequency_task.append_jsonl(args.out_dir / "diagnosis_runs.jsonl", {**key, **result})


# ----- probes --------------------------------------------------------------------------------------
def radial_band(shape: tuple[int, ...], num_bands: int) -> np.ndarray:
    """Band ``1..num_bands`` of every full-FFT bin over ``0 < |f| <= 0.5`` (0 = DC, above = corners)."""
    rho = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")))
    return np.ceil(rho / 0.5 * num_bands).astype(int)


def log_band_energy(x: torch.Tensor, num_bands: int) -> np.ndarray:
    """``(N, D, H, W) -> (N, <= num_bands)`` log mean power per radial band (bands without a bin left out)."""
    band = torch.from_numpy(radial_band(tuple(x.shape[1:]), num_bands))
    power = torch.fft.fftn(x.double(), dim=(1, 2, 3)).abs() ** 2
    bands = [b for b in range(1, num_bands + 1) if (band == b).any()]
    return np.log(np.stack([power[:, band == b].mean(1).numpy() for b in bands], 1) + 1e-12)


def probe(features: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    """Accuracy on the held-out rows of a logistic regression fit on the ``train`` rows."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    model.fit(features[train], y[train])
    return float(model.score(features[~train], y[~train]))


def pooled(t: torch.Tensor) -> dict[str, np.ndarray]:
    dims = tuple(range(2, t.ndim))
    t = t.double()
    return {"avg": t.mean(dims).numpy(), "energy": (t * t).mean(dims).numpy(), "max": t.amax(dims).numpy()}


@torch.no_grad()
def representations(model: SAMNet, x: torch.Tensor, batch: int = 16) -> dict[str, dict[str, np.ndarray]]:
    """Pooled features of the stem's convolution, the stem and every stage, for all of ``x``."""
    model.eval()
    taps = {"stem conv": model.stem[0], "stem": model.stem, **{f"stage {i}": s for i, s in enumerate(model.stages)}}
    out: dict[str, list] = {k: [] for k in taps}
    hooks = [m.register_forward_hook(lambda _m, _i, o, k=k: out[k].append(pooled(o))) for k, m in taps.items()]
    for xb in x.split(batch):
        model(xb)
    for h in hooks:
        h.remove()
    return {k: {p: np.concatenate([r[p] for r in rows]) for p in rows[0]} for k, rows in out.items()}


@torch.no_grad()
def samb_gains(model: SAMNet, x: torch.Tensor, y: np.ndarray, batch: int = 16) -> list[dict]:
    """Per SAMB: mean |f_m - 1|, and per band the share of f_m's variance (over cases) the class explains."""
    model.eval()
    rows = []
    for name, m in model.named_modules():
        if not isinstance(m, SAMB):
            continue
        inputs: list[torch.Tensor] = []
        hook = m.register_forward_hook(lambda _m, inp, _o, store=inputs: store.append(inp[0]))
        for xb in x.split(batch):
            model(xb)
        hook.remove()
        fm = torch.cat([m._modulation_gain(i.float(), torch.float32).flatten(2) for i in inputs]).double().numpy()
        total = fm.var(0)  # (C, B)
        between = np.stack([fm[y == k].mean(0) for k in np.unique(y)]).var(0)
        rows.append(
            {
                "module": name,
                "mean_abs_fm_minus_1": float(np.abs(fm - 1).mean()),
                "class_share_per_band": (between.sum(0) / (total.sum(0) + 1e-12)).round(3).tolist(),
                "alpha_mean": float(m.alpha.mean()),
                "beta_abs_mean": float(m.beta.abs().mean()),
            }
        )
    return rows


def cmd_probe(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    data = frequency_task.load(args.cache, size=args.grid, spacing=32 / args.grid)
    x = torch.cat([data[s][0] for s in ("train", "val", "test")])
    y = torch.cat([data[s][2] for s in ("train", "val", "test")]).numpy()
    train = np.arange(len(y)) < len(data["train"][2])
    v = x[:, 0]
    pooled4 = nn.functional.avg_pool3d(v[:, None], 4)[:, 0]
    local = nn.functional.avg_pool3d(v[:, None] ** 2, 4).flatten(1).double()
    result: dict = {
        "grid": args.grid,
        "n_train": int(train.sum()),
        "n_held_out": int((~train).sum()),
        "input": {
            "bands8": probe(log_band_energy(v, 8), y, train),
            "bands16": probe(log_band_energy(v, 16), y, train),
            "avgpool4 bands8": probe(log_band_energy(pooled4, 8), y, train),
            "local energy (4³ mean of x², mean/max over space)": probe(
                np.stack([local.mean(1).numpy(), local.amax(1).numpy()], 1), y, train
            ),
        },
        "networks": {},
    }
    print(json.dumps(result["input"]), flush=True)
    for variant in args.variants:
        for state in ("init", "trained"):
            torch.manual_seed(0)
            model = build(variant)
            if state == "trained":
                path = state_path(args.cache, variant, args.grid, args.lr, 0, args.steps)
                if not path.exists():
                    print(f"no trained state {path}; skipped", flush=True)
                    continue
                model.load_state_dict(torch.load(path, weights_only=True))
            reps = representations(model, x)
            scores = {k: {p: probe(f, y, train) for p, f in feats.items()} for k, feats in reps.items()}
            entry = {"probes": scores}
            if state == "trained":
                entry["samb"] = samb_gains(model, x[~train], y[~train])
            result["networks"][f"{variant} {state}"] = entry
            print(variant, state, json.dumps(scores), flush=True)
    (args.out_dir / f"probes_g{args.grid}.json").write_text(json.dumps(result, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=Path("/tmp/spectral3d-frequency"))
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results/frequency_pathway"))
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("variant", choices=sorted(VARIANTS))
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    pr = sub.add_parser("probe")
    pr.add_argument("--variants", nargs="+", default=list(PROBED), choices=sorted(VARIANTS))
    pr.add_argument("--lr", type=float, default=1e-3, help="of the trained states to probe")
    for q in (t, pr):
        q.add_argument("--grid", type=int, default=32, choices=(32, 64))
        q.add_argument("--steps", type=int, default=1000)
    t.add_argument("--eval-every", type=int, default=250)
    args = p.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    commands: dict[str, Callable[[argparse.Namespace], None]] = {"train": cmd_train, "probe": cmd_probe}
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
