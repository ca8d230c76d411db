"""Does ``spectral_stem=True`` make the frequency pathway earn its place? The comparisons of issue 16.

The frequency-only task of ``frequency_task.py`` (400 cases: about 240 train / 80 val / 80 test,
32³ at 1 mm, the lesion anywhere, four classes that differ only in the lesion texture's band), the
recipe of ``frequency_task.train`` (AdamW, batch 8, ``--steps`` steps, warm-up + cosine, flips):

* ``single`` (``t1`` only): SAMNet widths 16-32-64-128, depths 1-1-2-1 with ``spectral_stem=True``,
  its ``frequency=False`` twin, the paper-default SAMNet, and ``densenet121_3d``;
* ``two`` (``t1`` and ``pd``, with the cohort's 8 clinical columns, which carry no class
  information here): ``desamba_spondylitis_tiny`` (4 classes) with ``spectral_stem=True``, without
  the frequency pathway (``frequency_pathway=False``), and with its defaults; ``densenet121_3d``
  on the two sequences as channels.

``run MODEL --lr --seed`` trains one and appends a JSON line to ``--out`` (``runs.jsonl``);
``--lr best`` takes the rate whose seed-0 run has the best validation accuracy so far (never the
test split); ``summary`` picks each model's rate the same way and writes ``summary.json`` with
mean ± sd over the seeds at that rate.

    python benchmarks/diagnostics/frequency_experiments.py run samnet_stem --lr 1e-3 --seed 0
    python benchmarks/diagnostics/frequency_experiments.py run samnet_stem --lr best --seed 1
    python benchmarks/diagnostics/frequency_experiments.py summary
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import frequency_task  # noqa: E402

import backbones3d  # noqa: E402
from backbones3d.samnet import SAMNet  # noqa: E402

SAMNET = dict(in_chans=1, num_classes=4, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128))
DESAMBA = dict(num_classes=4, sequences=("t1", "pd"), num_tabular=8)
MODELS: dict[str, tuple[str, dict]] = {
    "samnet_stem": ("single", {"spectral_stem": True}),
    "samnet_twin": ("single", {"frequency": False}),
    "samnet_paper": ("single", {}),
    "densenet121_3d": ("single", {}),
    "desamba_stem": ("two", {"spectral_stem": True}),
    "desamba_nofp": ("two", {"frequency_pathway": False}),
    "desamba_default": ("two", {}),
    "densenet121_3d_2seq": ("two", {}),
}


def build(name: str) -> nn.Module:
    task, kw = MODELS[name]
    if name.startswith("samnet"):
        return SAMNet(**SAMNET, **kw)
    if name.startswith("densenet"):
        return backbones3d.create_model("densenet121_3d", in_chans=1 if task == "single" else 2, num_classes=4)
    return backbones3d.create_model("desamba_spondylitis_tiny", **DESAMBA, **kw)


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    if args.lr == "best":
        rows = [r for r in load_runs(args.out).values() if r["model"] == args.model and r["steps"] == args.steps]
        args.lr = pick_lr(rows)
        if args.lr is None:
            raise SystemExit(f"--lr best: no seed-0 run of {args.model} at {args.steps} steps in {args.out}")
    else:
        args.lr = float(args.lr)
    task = MODELS[args.model][0]
    data = frequency_task.load(args.cache, sequences=("t1",) if task == "single" else ("t1", "pd"))
    torch.manual_seed(args.seed)
    model = build(args.model)
    params = sum(p.numel() for p in model.parameters())
    key = {"model": args.model, "task": task, "lr": args.lr, "seed": args.seed, "steps": args.steps}
    print(key, f"{params / 1e6:.2f} M", flush=True)
    result = frequency_task.train(
        model, data, args.steps, args.lr, seed=args.seed, eval_every=args.eval_every, log=lambda r: print(r, flush=True)
    )
    frequency_task.append_jsonl(args.out, {**key, "params": params, **result})


def load_runs(path: Path) -> dict[tuple, dict]:
    """The last record of every ``(model, lr, seed, steps)``."""
    runs = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        r = json.loads(line)
        runs[(r["model"], r["lr"], r["seed"], r["steps"])] = r
    return runs


def pick_lr(rows: list[dict]) -> float | None:
    """The learning rate of the seed-0 run with the best final validation accuracy (ties: the smaller rate)."""
    seed0 = {r["lr"]: r["final"]["val_acc"] for r in rows if r["seed"] == 0}
    return max(sorted(seed0), key=lambda k: seed0[k]) if seed0 else None


def cmd_summary(args: argparse.Namespace) -> None:
    runs = load_runs(args.out)
    by_model: dict[str, list[dict]] = defaultdict(list)
    for (model, _lr, _seed, steps), r in runs.items():
        if steps == args.steps:
            by_model[model].append(r)
    summary = {}
    for model in MODELS:
        rows = by_model.get(model, [])
        lr = pick_lr(rows)
        if lr is None:
            continue
        seed0 = {r["lr"]: r["final"]["val_acc"] for r in rows if r["seed"] == 0}
        chosen = sorted((r for r in rows if r["lr"] == lr), key=lambda r: r["seed"])
        entry = {
            "task": MODELS[model][0],
            "params_M": round(chosen[0]["params"] / 1e6, 2),
            "lr_val_acc_seed0": seed0,
            "lr": lr,
            "seeds": [r["seed"] for r in chosen],
            "cpu_s_per_run": round(float(np.mean([r["final"]["cpu_s"] for r in chosen])), 1),
        }
        for metric in ("val_acc", "test_acc", "test_auc"):
            v = np.array([r["final"][metric] for r in chosen])
            entry[metric] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else None}
            entry[metric]["values"] = [round(float(x), 4) for x in v]
        summary[model] = entry
        print(model, json.dumps(entry), flush=True)
    args.out.with_name("summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=Path("/tmp/spectral3d-frequency"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/frequency_pathway/runs.jsonl"))
    p.add_argument("--steps", type=int, default=1000)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("model", choices=list(MODELS))
    r.add_argument("--lr", required=True, help="a float, or 'best' (the seed-0 validation winner so far)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--eval-every", type=int, default=250)
    sub.add_parser("summary")
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    {"run": cmd_run, "summary": cmd_summary}[args.cmd](args)


if __name__ == "__main__":
    main()
