"""Render a ``pytest benchmarks/`` results JSON to a markdown table and an efficiency chart.

Usage::

    python benchmarks/report.py benchmarks/results/bench_cpu_quick.json [--eval EVAL.json] [--out DIR]

Writes ``<stem>.md`` and ``<stem>.png`` next to the JSON (or into ``--out``). The chart follows
the paper's Fig. 5: MACs on x (log), inference throughput on y (log) or, when an evaluation JSON
is given, accuracy; bubble area proportional to the parameter count; every bubble labelled.
Throughput is plotted against the MACs *at the input it was timed at* (``macs_bench_input``);
accuracy against the MACs at the model's ``pretrained_cfg`` size (``macs``).

An evaluation JSON maps model names to a number or to a dict with one of ``accuracy``, ``acc``,
``auc`` (``{"desamba_spine": {"accuracy": 0.87}, "resnet50_3d": 0.81}``).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUR_FAMILIES = ("desamba", "samnet")
EVAL_KEYS = ("accuracy", "acc", "auc")


def load(path: str | Path) -> dict[str, Any]:
    """Read a results file (``{"machine": {...}, "rows": [...]}``)."""
    payload = json.loads(Path(path).read_text())
    if not isinstance(payload, dict) or "rows" not in payload:
        raise ValueError(f"path: {path} is not a benchmarks results file (no 'rows' key)")
    return payload


def _pick(rows: list[dict[str, Any]], model: str, metric: str, **match: Any) -> dict[str, Any] | None:
    """The first row of ``model``/``metric`` whose context matches (missing keys count as default)."""
    defaults = {"checkpointing": False, "backend": "eager"}
    for row in rows:
        if row["model"] != model or row["metric"] != metric:
            continue
        if all(row.get(k, defaults.get(k)) == v for k, v in match.items()):
            return row
    return None


def _value(rows: list[dict[str, Any]], model: str, metric: str, **match: Any) -> float | None:
    row = _pick(rows, model, metric, **match)
    return None if row is None else row.get("value")


def _fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value / scale:.{digits}f}"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def _models(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.setdefault(row["model"], None)
    return list(seen)


def model_table(rows: list[dict[str, Any]]) -> str:
    """One line per model: size, cost, speed, memory."""
    header = (
        "| model | params (M) | GMACs @ cfg input | FFT GFLOPs | cfg input | timed input × batch | train vol/s "
        "| train vol/s (ckpt) | infer vol/s | train peak MiB | ckpt peak MiB | infer peak MiB |\n"
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    timed_metrics = ("train_throughput", "infer_throughput")
    for model in _models(rows):
        params = _value(rows, model, "params")
        macs_row = _pick(rows, model, "macs")
        # one line per timed (input, batch): full mode times two sizes; MONAI-pair rows carry a model prefix
        timed_at: dict[tuple, dict[str, Any]] = {}
        for row in rows:
            if row["model"] == model and row["metric"] in timed_metrics and row.get("backend", "eager") == "eager":
                timed_at.setdefault((tuple(row.get("input", ())), row.get("batch")), row)
        if params is None and macs_row is None and not timed_at:
            continue
        cfg_in = "×".join(map(str, macs_row["input"][1:])) if macs_row else ""
        # a model counted but not timed (e.g. paper scale on CPU) still gets its line
        for (shape, batch), timed in list(timed_at.items()) or [(((), None), None)]:
            at = {"input": list(shape), "batch": batch} if timed is not None else {}
            timed_in = f"{'×'.join(map(str, shape[1:]))} × {batch}" if timed is not None else ""
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"`{model}`",
                        _fmt(params, 1e6),
                        _fmt(macs_row["value"] if macs_row else None, 1e9),
                        _fmt(_value(rows, model, "fft_flops"), 1e9, 3),
                        cfg_in,
                        timed_in,
                        _fmt(_value(rows, model, "train_throughput", **at)),
                        _fmt(_value(rows, model, "train_throughput", checkpointing=True, **at)),
                        _fmt(_value(rows, model, "infer_throughput", **at)),
                        _mib(_value(rows, model, "train_peak_mem", **at)),
                        _mib(_value(rows, model, "train_peak_mem", checkpointing=True, **at)),
                        _mib(_value(rows, model, "infer_peak_mem", **at)),
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def ratio_table(rows: list[dict[str, Any]]) -> str:
    """Ratios measured in one process: ours vs MONAI, Triton vs reference."""
    picked = [r for r in rows if "ratio" in r["metric"] or "speedup" in r["metric"]]
    if not picked:
        return ""
    lines = ["| model | ratio | value | context |", "|---|---|---:|---|"]
    skip = {"model", "metric", "value", "unit", "note"}
    for r in picked:
        context = ", ".join(f"{k}={v}" for k, v in r.items() if k not in skip)
        value = _fmt(r["value"]) + ("×" if r["value"] is not None else "")
        lines.append(f"| `{r['model']}` | {r['metric']} | {value} | {r.get('note') or context} |")
    return "\n".join(lines)


def micro_table(rows: list[dict[str, Any]]) -> str:
    """Micro-benchmark timings (spectral op, SAMB, SAMBlock)."""
    picked = [r for r in rows if r["metric"] == "time_ms"]
    if not picked:
        return ""
    lines = ["| op / block | shape | f_m | direction | provider | ms | floor GB/s |", "|---|---|---|---|---|---:|---:|"]
    for r in picked:
        provider = r.get("provider") or r.get("kernel", "")
        gbps = _value(
            rows,
            r["model"],
            "floor_GBps",
            shape=r.get("shape"),
            fm_mode=r.get("fm_mode"),
            direction=r.get("direction"),
            provider=r.get("provider"),
        )
        shape = "×".join(map(str, r.get("shape", [])))
        lines.append(
            f"| {r['model']} | {shape} | {r.get('fm_mode', '')} | {r.get('direction', '')} | {provider} "
            f"| {_fmt(r['value'], 1, 3)} | {_fmt(gbps, 1, 1) if r['model'] == 'spectral_modulation' else ''} |"
        )
    return "\n".join(lines)


def markdown(payload: dict[str, Any]) -> str:
    """The whole markdown report: machine header, models, ratios, micro-benchmarks."""
    m = payload.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
    parts = [
        f"# Benchmarks ({m.get('mode', '?')} mode)",
        "",
        f"Machine: {m.get('device', '?')} ({m.get('device_name', '?')}, {m.get('cpu_threads', '?')} threads), "
        f"{m.get('dtype', '')}; date {m.get('date', '?')}; commit `{m.get('git_commit')}`; {versions}.",
        "",
        "MACs: 1 multiply-add; FLOPs = 2 × MACs + FFTs at 2.5·n·log2 n per real transform (DESIGN.md §10),"
        " counted on meta at the model's `pretrained_cfg` input, batch 1. Throughput: volumes/s, median of"
        " timed calls (train = one AdamW step). Peak MiB: memory one call needs above the resting state"
        " (weights, optimizer state); CPU: peak RSS growth. n/a: not measured in this run.",
        "",
        model_table(payload["rows"]),
    ]
    ratios = ratio_table(payload["rows"])
    if ratios:
        parts += ["", "## Ratios (same process, interleaved)", "", ratios]
    micro = micro_table(payload["rows"])
    if micro:
        parts += ["", "## Micro-benchmarks", "", micro]
    return "\n".join(parts) + "\n"


def _eval_scores(path: str | Path) -> dict[str, float]:
    raw = json.loads(Path(path).read_text())
    scores = {}
    for name, entry in raw.items():
        if isinstance(entry, (int, float)):
            scores[name] = float(entry)
        elif isinstance(entry, dict):
            key = next((k for k in EVAL_KEYS if k in entry), None)
            if key is None:
                raise ValueError(f"eval: entry {name!r} has none of the keys {EVAL_KEYS}")
            scores[name] = float(entry[key])
    return scores


def _place_labels(fig: Any, ax: Any, labels: list[tuple[str, float, float, float]]) -> None:
    """Label each bubble above, below, right or left of it, whichever overlaps no earlier label."""
    placed = []
    renderer = fig.canvas.get_renderer()
    for text, x, y, radius in sorted(labels, key=lambda item: -item[3]):
        candidates = [
            ((0, radius), "center", "bottom"),
            ((0, -radius), "center", "top"),
            ((radius, 0), "left", "center"),
            ((-radius, 0), "right", "center"),
        ]
        for offset, ha, va in candidates:
            ann = ax.annotate(
                text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=7, zorder=3
            )
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            ann.remove()
        else:  # every side taken: keep the first choice
            offset, ha, va = candidates[0]
            ann = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=7)
            box = ann.get_window_extent(renderer)
        placed.append(box)


def chart(payload: dict[str, Any], path: str | Path, eval_path: str | Path | None = None) -> Path | None:
    """The Fig. 5-style bubble chart; returns the PNG path, or ``None`` when nothing can be plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["rows"]
    scores = _eval_scores(eval_path) if eval_path else None
    points = []
    for model in _models(rows):
        params = _value(rows, model, "params")
        if scores is not None:
            x, y = _value(rows, model, "macs"), scores.get(model)
        else:
            x, y = _value(rows, model, "macs_bench_input"), _value(rows, model, "infer_throughput")
        if params and x and y:
            points.append((model, x, y, params))
    if not points:
        return None
    m = payload.get("machine", {})
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=150)
    biggest = max(p[3] for p in points)
    labels: list[tuple[str, float, float, float]] = []
    for model, x, y, params in points:
        ours = any(family in model for family in OUR_FAMILIES)
        color = "#d62728" if ours else ("#7f7f7f" if model.startswith("monai") else "#1f77b4")
        area = 60 + 2400 * params / biggest
        ax.scatter(x, y, s=area, color=color, alpha=0.45, edgecolors="black", linewidths=0.6, zorder=2)
        labels.append((f"{model}\n{params / 1e6:.2f} M", x, y, math.sqrt(area) / 2 + 3))
    ax.set_xscale("log")
    ax.set_xlabel("GMACs per volume" + (" (pretrained_cfg input)" if scores else " (at the timed input)"))
    if scores is None:
        ax.set_yscale("log")
        ax.set_ylabel("inference throughput (volumes / s)")
    else:
        ax.set_ylabel("accuracy")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1e9:g}"))
    ax.grid(True, which="major", alpha=0.35, zorder=0)
    ax.grid(True, which="minor", alpha=0.08, zorder=0)
    ax.margins(x=0.15, y=0.2)
    title = "accuracy" if scores else "inference throughput"
    ax.set_title(
        f"MACs vs {title} — bubble area ∝ parameters\n"
        f"{m.get('device', '?')} ({m.get('device_name', '?')}), {m.get('mode', '?')} mode, "
        f"{str(m.get('date', ''))[:10]}",
        fontsize=10,
    )
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=c, alpha=0.5, markersize=9, label=lbl)
        for c, lbl in (("#d62728", "ours (DeSamba, SAMNet)"), ("#1f77b4", "3D baselines"), ("#7f7f7f", "MONAI"))
    ]
    ax.legend(handles=handles, loc="best", fontsize=8)
    fig.tight_layout()  # fixes the axes box, so label extents measured next stay valid
    _place_labels(fig, ax, labels)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def render(json_path: str | Path, eval_path: str | Path | None = None, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``<stem>.md`` and ``<stem>.png`` for a results JSON; returns the paths written.

    Example::

        >>> render("benchmarks/results/bench_cpu_quick.json")  # doctest: +SKIP
        [PosixPath('benchmarks/results/bench_cpu_quick.md'), PosixPath('benchmarks/results/bench_cpu_quick.png')]
    """
    json_path = Path(json_path)
    payload = load(json_path)
    out = Path(out_dir) if out_dir else json_path.parent
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{json_path.stem}.md"
    md.write_text(markdown(payload))
    written = [md]
    png = chart(payload, out / f"{json_path.stem}.png", eval_path)
    if png is not None:
        written.append(png)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a bench_*.json written by pytest benchmarks/")
    parser.add_argument("--eval", default=None, help="evaluation JSON (model -> accuracy) for the chart's y axis")
    parser.add_argument("--out", default=None, help="output directory (default: next to the JSON)")
    args = parser.parse_args(argv)
    for path in render(args.results, args.eval, args.out):
        print(path)


if __name__ == "__main__":
    main()
