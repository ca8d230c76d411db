"""Why did DeSamba-tiny not learn the synthetic spine cohort? The sweep behind the fusion redesign.

Trains small variants on the demo's cohort held in memory (32³ ROI crops, flips as augmentation,
AdamW, one warm-up epoch then cosine, batch 8) and prints train accuracy and validation / test
accuracy and macro AUC after every epoch, one JSON line per epoch. Results of the runs kept in
``benchmarks/results/fusion_ablation.md``.

    spectral3d synth --out /tmp/cohort --task spine --cases 240 --seed 0
    python benchmarks/diagnostics/desamba_learning_sweep.py --cohort /tmp/cohort --epochs 15 joint_gap joint_old

Several variants can run side by side on one GPU (one process each, ``--device cuda``); on a 2-core
CPU run them one at a time, or two with ``OMP_NUM_THREADS=1``.

Variants (``VARIANTS``): ``joint_*`` feed the three sequences as channels of one SAMNet (the
ConvNeXtV2-atto widths, no frequency pathway), ``perseq_*`` give each sequence its own one-channel
SAMNet (DeSamba's late fusion); ``*_gap`` classify from the last stage's global average,
``*_fusion`` through :class:`~spectral3d.layers.MultiScaleFusion`, ``*_old`` through the fusion block
this project had before (every pooled stage normalised and projected on its own, then an MLP,
all linear layers initialised with std 0.02), re-created here by :class:`OldFusion`. ``desamba*``
are the registered DeSamba models, ``samnet*`` and ``convnextv2`` single networks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))  # frequency_task (tensor_splits)

DIMS, DEPTHS = (40, 80, 160, 320), (2, 2, 6, 2)  # ConvNeXtV2-atto


class OldFusion(nn.Module):
    """The former fusion block: ``fc2(drop(GELU(fc1(LN(concat[proj_k(LN_k(pool(F_k)))])))))``."""

    def __init__(self, dims: tuple[int, ...], out_dim: int, drop_rate: float) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in dims)
        self.projs = nn.ModuleList(nn.Linear(c, out_dim) for c in dims)
        self.norm = nn.LayerNorm(len(dims) * out_dim)
        self.fc1, self.fc2 = nn.Linear(len(dims) * out_dim, out_dim), nn.Linear(out_dim, out_dim)
        self.drop = nn.Dropout(drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        z = [p(n(f.mean((2, 3, 4)))) for f, n, p in zip(feats, self.norms, self.projs)]
        return self.fc2(self.drop(F.gelu(self.fc1(self.norm(torch.cat(z, -1))))))


class SequenceNet(nn.Module):
    """One joint 3-channel SAMNet or three 1-channel ones, then GAP / fusion / old fusion, LN, dropout, fc."""

    def __init__(self, per_seq: bool, head: str, num_classes: int = 6, drop_rate: float = 0.3) -> None:
        super().__init__()
        from backbones3d.samnet import SAMNet
        from spectral3d.layers import MultiScaleFusion

        n_enc, in_ch = (3, 1) if per_seq else (1, 3)
        self.per_seq, self.head = per_seq, head
        self.encoders = nn.ModuleList(
            SAMNet(in_chans=in_ch, dims=DIMS, depths=DEPTHS, frequency=False, features_only=True) for _ in range(n_enc)
        )
        if head == "fusion":
            self.fusions = nn.ModuleList(MultiScaleFusion(DIMS, None, out_dim=64) for _ in range(n_enc))
        elif head == "old":
            self.fusions = nn.ModuleList(OldFusion(DIMS, 64, drop_rate) for _ in range(n_enc))
        width = n_enc * (DIMS[-1] if head == "gap" else 64)
        self.norm, self.drop, self.fc = nn.LayerNorm(width), nn.Dropout(drop_rate), nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = [x[:, i : i + 1] for i in range(x.shape[1])] if self.per_seq else [x]
        feats = []
        for k, (enc, xi) in enumerate(zip(self.encoders, xs)):
            stages = enc.forward_stages(xi)
            feats.append(stages[-1].mean((2, 3, 4)) if self.head == "gap" else self.fusions[k](stages))
        return self.fc(self.drop(self.norm(torch.cat(feats, 1))))


DESAMBA_SPINE = {"sequences": ["t1", "t2", "t2fs"], "num_classes": 6, "num_tabular": 8}
VARIANTS: dict[str, dict] = {
    **{f"{k}_{h}": {"net": (k == "perseq", h)} for k in ("joint", "perseq") for h in ("gap", "fusion", "old")},
    "desamba_tiny": {"model": "desamba_spine_tiny", "kw": {"drop_rate": 0.3}},
    "desamba_tiny_lr3e-4": {"model": "desamba_spine_tiny", "kw": {"drop_rate": 0.3}, "lr": 3e-4},
    "desamba_tiny_samba": {"model": "desamba_spine_ablation_samba", "kw": {"drop_rate": 0.3, "scale": "tiny"}},
    "samnet_tiny": {"model": "samnet_tiny", "kw": {"drop_rate": 0.3}},
    "samnet_tiny_lr3e-4": {"model": "samnet_tiny", "kw": {"drop_rate": 0.3}, "lr": 3e-4},
    "convnextv2": {"model": "convnextv2_atto_3d", "kw": {"drop_rate": 0.3}},
    "convnextv2_lr3e-4": {"model": "convnextv2_atto_3d", "kw": {"drop_rate": 0.3}, "lr": 3e-4},
}


def load_cohort(cohort: str, cache: str | None) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``{split: (volumes (N, 3, 32, 32, 32), tabular, labels)}``, preprocessed as ``spectral3d train`` does."""
    if cache and os.path.exists(cache):
        return torch.load(cache)
    from frequency_task import tensor_splits

    from spectral3d.data import Cohort, PreprocessConfig

    out = tensor_splits(Cohort.from_folder(cohort), PreprocessConfig(input_size=(32, 32, 32), spacing=1.0))
    if cache:
        torch.save(out, cache)
    return out


def build(spec: dict) -> nn.Module:
    if "net" in spec:
        return SequenceNet(*spec["net"])
    import backbones3d

    kw = dict(spec["kw"])
    kw.update(DESAMBA_SPINE if spec["model"].startswith("desamba") else {"in_chans": 3, "num_classes": 6})
    return backbones3d.create_model(spec["model"], **kw)


def run(name: str, data: dict, device: torch.device, epochs: int, batch: int = 8, seed: int = 0) -> list[dict]:
    import backbones3d

    spec = VARIANTS[name]
    torch.manual_seed(seed)
    model = build(spec).to(device)
    multi = backbones3d.is_multi_sequence(model)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.get("lr", 1e-3), weight_decay=0.05)
    xs, ts, ys = data["train"]
    steps_per_epoch = math.ceil(len(ys) / batch)
    total = epochs * steps_per_epoch

    def lr_at(step: int) -> float:
        if step < steps_per_epoch:
            return (step + 1) / steps_per_epoch
        return 0.5 * (1 + math.cos(math.pi * (step - steps_per_epoch) / max(1, total - steps_per_epoch)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        correct, loss_sum, start = 0, 0.0, time.time()
        for idx in torch.randperm(len(ys), generator=gen).split(batch):
            x = xs[idx].float().clone()
            for axis in (2, 3, 4):  # random flips, per sample
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x[flip] = x[flip].flip(axis - 1)
            x, t, y = x.to(device), ts[idx].to(device), ys[idx].to(device)
            if multi:
                logits, aux = model.forward_with_aux(x, t)
                loss = F.cross_entropy(logits, y) + 0.5 * sum(aux.values(), torch.zeros((), device=device))
            else:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(idx)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / len(ys),
            "train_acc": correct / len(ys),
            "s": time.time() - start,
        }
        model.eval()
        with torch.no_grad():
            for split in ("val", "test"):
                x, t, y = data[split]
                probs = torch.cat(
                    [
                        torch.softmax(
                            model(xb.float().to(device), tb.to(device)) if multi else model(xb.float().to(device)), 1
                        )
                        for xb, tb in zip(x.split(16), t.split(16))
                    ]
                ).cpu()
                row[f"{split}_acc"] = float((probs.argmax(1) == y).float().mean())
                row[f"{split}_auc"] = float(
                    roc_auc_score(y.numpy(), probs.numpy(), multi_class="ovr", labels=list(range(6)))
                )
        history.append(row)
        print(name, json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--cohort", required=True, help="a synthetic spine cohort (spectral3d synth)")
    parser.add_argument("--cache", default=None, help="a .pt file holding the preprocessed volumes")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per variant here")
    args = parser.parse_args()
    data = load_cohort(args.cohort, args.cache)
    for name in args.variants:
        history = run(name, data, torch.device(args.device), args.epochs)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({"variant": name, "spec": repr(VARIANTS[name]), "history": history}) + "\n")


if __name__ == "__main__":
    main()
