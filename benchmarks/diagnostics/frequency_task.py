"""The frequency-only task in memory and the training loop shared by the frequency-pathway scripts.

Not a script: ``frequency_pathway.py`` (the diagnosis) and ``frequency_experiments.py`` (the
comparisons) import it. The task is ``write_synthetic_cohort(task="texture",
lesion=FREQUENCY_ONLY)`` (``spectral3d.data.synthetic``): four classes that differ only in the
radial frequency band of the lesion's texture, the lesion anywhere in the volume (``crop="centre"``,
so the whole 32³ field of view at 1 mm; ``spacing=0.5`` samples the same volumes on a 64³ grid).

Recipe of :func:`train`: AdamW (weight decay 0.05), ``steps`` steps at batch 8, linear warm-up over
the first 5 % then cosine to 1 % of ``lr``, gradient clipping at norm 1, random flips on the three
axes (a flip keeps the radial spectrum, so the label), DeSamba's Eq. 5 loss for models with
``forward_with_aux``; accuracy and macro one-vs-rest AUC on the validation and test splits.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

import backbones3d
from spectral3d.data import FREQUENCY_ONLY, Cohort, MRIDataset, PreprocessConfig, collate, write_synthetic_cohort

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def load(
    cache_dir: str | Path,
    sequences: tuple[str, ...] = ("t1",),
    size: int = 32,
    spacing: float = 1.0,
    cases: int = 400,
    seed: int = 0,
) -> dict[str, Split]:
    """``{split: (volumes (N, S, size³), tabular (N, 8), labels (N,))}`` of the frequency-only cohort.

    The cohort (32³ at 1 mm) is written once under ``cache_dir`` and the preprocessed splits cached
    as a ``.pt`` file per ``(sequences, size, spacing)``.
    """
    cache_dir = Path(cache_dir)
    root = cache_dir / f"texture_{cases}_seed{seed}"
    cached = root.with_name(f"{root.name}_{'-'.join(sequences)}_{size}_{spacing}.pt")
    if cached.exists():
        return torch.load(cached)
    if not (root / "cases.csv").exists():
        write_synthetic_cohort(root, task="texture", cases=cases, seed=seed, lesion=FREQUENCY_ONLY, overwrite=True)
    cohort = Cohort.from_folder(root, sequences=sequences)
    out = tensor_splits(cohort, PreprocessConfig(input_size=size, spacing=spacing, crop="centre"))
    torch.save(out, cached)
    return out


def tensor_splits(cohort: Cohort, pre: PreprocessConfig) -> dict[str, Split]:
    """Every split of ``cohort`` stacked, the clinical columns standardised with the training split's statistics."""
    train = MRIDataset(cohort, cohort.split("train"), pre)
    out = {}
    for split in ("train", "val", "test"):
        ds = MRIDataset(cohort, cohort.split(split), pre, tabular_stats=train.tabular_stats)
        batch = collate([ds[i] for i in range(len(ds))])
        out[split] = (batch.volume, batch.tabular, batch.label)
    return out


def _logits(model: nn.Module, x: torch.Tensor, tab: torch.Tensor) -> tuple[torch.Tensor, dict]:
    if backbones3d.is_multi_sequence(model):
        return model.forward_with_aux(x, tab)
    return model(x), {}


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch: int = 16) -> dict[str, float]:
    """Accuracy and macro one-vs-rest AUC of ``model`` (eval mode) on one split."""
    model.eval()
    x, tab, y = split
    probs = torch.cat([torch.softmax(_logits(model, xb, tb)[0], 1) for xb, tb in zip(x.split(batch), tab.split(batch))])
    k = probs.shape[1]
    if k == 2:
        auc = roc_auc_score(y.numpy(), probs[:, 1].numpy())
    else:
        auc = roc_auc_score(y.numpy(), probs.numpy(), multi_class="ovr", labels=list(range(k)))
    return {"acc": float((probs.argmax(1) == y).float().mean()), "auc": float(auc)}


def train(
    model: nn.Module,
    data: dict[str, Split],
    steps: int,
    lr: float,
    batch: int = 8,
    seed: int = 0,
    eval_every: int = 0,
    log: Callable[[dict], None] | None = None,
) -> dict:
    """Train ``model`` in place with the module's recipe; return the history and the final metrics."""
    from backbones3d.desamba import DeSambaLoss

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    criterion = DeSambaLoss()
    gen = torch.Generator().manual_seed(seed)
    xs, ts, ys = data["train"]
    order = torch.empty(0, dtype=torch.long)
    history, start, losses = [], time.process_time(), []
    for step in range(1, steps + 1):
        model.train()
        if len(order) < batch:
            order = torch.cat([order, torch.randperm(len(ys), generator=gen)])
        idx, order = order[:batch], order[batch:]
        x = xs[idx].clone()
        for axis in (2, 3, 4):
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(axis)
        logits, aux = _logits(model, x, ts[idx])
        loss, _ = criterion(logits, ys[idx], aux)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(F.cross_entropy(logits.detach(), ys[idx]).item())
        if (eval_every and step % eval_every == 0) or step == steps:
            row = {"step": step, "train_ce": float(np.mean(losses)), "cpu_s": time.process_time() - start}
            losses = []
            for split in ("val", "test"):
                for key, value in evaluate(model, data[split]).items():
                    row[f"{split}_{key}"] = value
            history.append(row)
            if log:
                log(row)
    return {"history": history, "final": history[-1]}


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line (the scripts' result format; a rerun appends, readers take the last record)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
