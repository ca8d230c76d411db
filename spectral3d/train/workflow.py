"""The Python API behind ``spectral3d train | evaluate | predict | demo``: paths and plain options in,
plain data out (the CLI and ``examples/train_on_nifti.py`` call the same code).

Model sizing *(ours)*: a multi-sequence model (``backbones3d.is_multi_sequence``) is built with the
cohort's ``sequences``, ``num_classes`` and ``num_tabular``; any other model gets ``in_chans = S``
(early fusion) and ``num_classes``. The sequences are the ``sequences`` argument, else the model's
``pretrained_cfg["sequences"]``, else those of every case (:func:`cohort_sequences`). The model grid
defaults to the ``(D, H, W)`` of the model's ``pretrained_cfg["input_size"]`` and 1 mm spacing.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spectral3d.data import (
    CaseRecord,
    Cohort,
    MRIDataset,
    PreprocessConfig,
    Sample,
    TabularStats,
    find_case_files,
    load_case,
    read_clinical_table,
)
from spectral3d.data.errors import DataError
from spectral3d.metrics import classification_metrics, metrics_table
from spectral3d.train.checkpoint import (
    check_resume,
    check_run_dir,
    check_writable_dir,
    clear_run,
    load_config,
    load_weights,
    resolve_checkpoint,
    write_json,
)
from spectral3d.train.trainer import FitResult, TrainConfig, fit, predict

__all__ = [
    "build_model_for_cohort",
    "check_input_size",
    "check_training_labels",
    "cohort_sequences",
    "evaluate_checkpoint",
    "load_checkpoint_model",
    "predict_cases",
    "predict_split",
    "train_on_cohort",
    "write_predictions",
]


def build_model_for_cohort(
    model_name: str,
    sequences: Sequence[str],
    num_classes: int,
    num_tabular: int,
    model_kwargs: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Create ``model_name`` for a cohort; returns the model and the kwargs it was built with."""
    from backbones3d import create_model, is_multi_sequence

    kwargs: dict[str, Any] = dict(model_kwargs or {})
    if is_multi_sequence(model_name):
        kwargs.update(sequences=list(sequences), num_classes=num_classes, num_tabular=num_tabular)
    else:
        kwargs.update(in_chans=len(sequences), num_classes=num_classes)
    return create_model(model_name, **kwargs), kwargs


def _input_size(model: nn.Module, input_size: int | Sequence[int] | None) -> tuple[int, int, int]:
    if input_size is None:
        return tuple(model.pretrained_cfg["input_size"][1:])  # type: ignore[return-value]
    if isinstance(input_size, int):
        return (input_size,) * 3
    return tuple(input_size)  # type: ignore[return-value]


def cohort_sequences(model_name: str, sequences: Sequence[str] | None = None) -> tuple[str, ...] | None:
    """The sequences to train on: ``sequences`` when given, else the model's ``pretrained_cfg["sequences"]``
    (DeSamba), else ``None`` (the cohort's own: :meth:`Cohort.from_folder`)."""
    from backbones3d import get_pretrained_cfg

    if sequences is not None:
        return tuple(sequences)
    own = get_pretrained_cfg(model_name).get("sequences")
    return tuple(own) if own else None


def check_training_labels(cohort: Cohort, fold: int | None = None) -> None:
    """Refuse a cohort whose training split lacks one of its labels or holds a single class.

    Raises:
        DataError: naming ``cases.csv``.
    """
    counts = {s: Counter(c.label for c in _split_or_empty(cohort, s, fold)) for s in ("train", "val", "test")}
    csv_path = cohort.root / "cases.csv"
    untrained = [label for label in cohort.classes if counts["train"][label] == 0]
    if untrained:
        detail = "; ".join(
            f"{label!r}: train 0, val {counts['val'][label]}, test {counts['test'][label]}" for label in untrained
        )
        message = f"label(s) with no training case ({detail}): fix the label or add training cases"
        raise DataError(message, paths=(csv_path,))
    if len(counts["train"]) < 2:
        ((label, n),) = counts["train"].items()
        raise DataError(
            f"the training split has one class only ({label!r}, {n} cases); a classifier needs two or more",
            paths=(csv_path,),
        )


def _split_or_empty(cohort: Cohort, name: str, fold: int | None) -> list[CaseRecord]:
    try:
        return cohort.split(name, fold)
    except DataError:
        return []


def check_input_size(
    model_name: str, model_kwargs: Mapping[str, Any], size: Sequence[int], num_sequences: int, num_tabular: int
) -> None:
    """Run the model once on the meta device (no memory, no compute) at ``(2, S, *size)``: a size it
    cannot take fails here, before any data is prepared, with a ``ValueError`` naming ``input_size``."""
    from backbones3d import create_model

    with torch.device("meta"), torch.no_grad():
        model = create_model(model_name, **model_kwargs).eval()
        x = torch.empty(2, num_sequences, *size)
        try:
            if hasattr(model, "forward_with_aux"):
                model.forward_with_aux(x, torch.empty(2, num_tabular) if num_tabular else None)
            else:
                model(x)
        except (ValueError, RuntimeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"input_size: {model_name} cannot take an input of size {tuple(size)}: {first}") from None


def train_on_cohort(
    model_name: str,
    data: str | os.PathLike,
    out: str | os.PathLike,
    cfg: TrainConfig | None = None,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    fold: int | None = None,
    input_size: int | Sequence[int] | None = None,
    spacing: float | Sequence[float] | None = 1.0,
    volume_index: int | None = None,
    nan_policy: str = "error",
    augment: bool = True,
    cache_dir: str | os.PathLike | None = None,
    skip_bad: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    sequences: Sequence[str] | None = None,
    stop_when: Callable[[int], bool] | None = None,
) -> FitResult:
    """Train ``model_name`` on the cohort folder ``data``; checkpoints go to ``out``.

    Checked before any case is loaded or anything written: the name, ``out``, ``cache_dir``, the cohort,
    its labels, the class weights, the input size (meta-device forward), and the run resumed.

    Args:
        model_name: a registered model (``backbones3d.list_models()``).
        data: the cohort folder (``cases.csv`` + one folder per case).
        out: the run directory.
        cfg: training hyper-parameters.
        model_kwargs: extra constructor arguments (e.g. ``scale="tiny"`` or ``drop_path_rate``).
        fold: use the ``fold`` column (validation = that fold) instead of the ``split`` column.
        input_size: the model grid ``(D, H, W)``; default the model's ``pretrained_cfg`` size.
        spacing: model voxel size in mm.
        volume_index: the volume to use from 4-D files (otherwise they are rejected).
        nan_policy: non-finite voxels (:class:`~spectral3d.data.PreprocessConfig`).
        augment: flips, small affine and intensity jitter on the training split.
        cache_dir: on-disk cache of preprocessed volumes.
        skip_bad: leave out cases that fail to load (reported in ``out/skipped.json``) instead of
            stopping at the first.
        resume: continue from ``out/last``.
        overwrite: replace the run in ``out`` (:func:`~spectral3d.train.checkpoint.clear_run`, after
            every check has passed).
        sequences: the sequences to use, in channel order (default :func:`cohort_sequences`).
        stop_when: passed to :func:`spectral3d.train.fit` (stop after a given optimizer step).
    """
    from backbones3d import is_multi_sequence

    cfg = cfg or TrainConfig()
    is_multi_sequence(model_name)  # an unknown name fails here, suggesting close names, before any data is read
    pre = PreprocessConfig(spacing=spacing, volume_index=volume_index, nan_policy=nan_policy)
    check_run_dir(out, resume, overwrite, name="out")
    if cache_dir is not None:
        check_writable_dir(cache_dir, "cache_dir")
    cohort = _checked_cohort(model_name, data, cfg, fold, sequences, skip_bad)
    model, kwargs, pre = _model_for_cohort(model_name, model_kwargs, cohort, pre, input_size, cfg.seed)
    run_config = _run_config(model_name, kwargs, cohort, pre, data, fold)
    if resume:
        check_resume(out, run_config)
    if skip_bad:
        cohort = cohort.verify(pre, skip_bad=True, progress=cfg.progress)
        check_training_labels(cohort, fold)
    cases = _training_cases(cohort, fold, Path(data))
    out = _clear_out(Path(out), overwrite, cohort.skipped)
    train_set, val_set = _training_datasets(cohort, cases, pre, augment, cache_dir, cfg.seed)
    run_config["tabular_stats"] = train_set.tabular_stats.to_dict()
    return fit(
        model,
        train_set,
        val_set,
        cfg,
        out,
        run_config,
        resume=resume,
        num_classes=cohort.num_classes,
        class_names=cohort.classes,
        stop_when=stop_when,
    )


def _checked_cohort(
    model_name: str,
    data: str | os.PathLike,
    cfg: TrainConfig,
    fold: int | None,
    sequences: Sequence[str] | None,
    skip_bad: bool,
) -> Cohort:
    """The cohort, its labels and the class weights checked before any voxel is read."""
    cohort = Cohort.from_folder(data, sequences=cohort_sequences(model_name, sequences), skip_bad=skip_bad)
    check_training_labels(cohort, fold)
    if isinstance(cfg.class_weights, Sequence) and not isinstance(cfg.class_weights, str):
        if len(cfg.class_weights) != cohort.num_classes:
            raise ValueError(
                f"class_weights: expected {cohort.num_classes} values, one per class {list(cohort.classes)}, "
                f"got {len(cfg.class_weights)}"
            )
    return cohort


def _run_config(
    model_name: str,
    model_kwargs: dict[str, Any],
    cohort: Cohort,
    pre: PreprocessConfig,
    data: str | os.PathLike,
    fold: int | None,
) -> dict[str, Any]:
    """The entries of each checkpoint's ``config.json`` that describe the model and the data."""
    return {
        "model": model_name,
        "model_kwargs": model_kwargs,
        "class_names": list(cohort.classes),
        "sequences": list(cohort.sequences),
        "clinical_columns": list(cohort.clinical_columns),
        "preprocess": pre.to_dict(),
        "data": str(Path(data).resolve()),
        "fold": fold,
        "spectral3d_version": _version(),
        "torch_version": torch.__version__,
    }


def _model_for_cohort(
    model_name: str,
    model_kwargs: Mapping[str, Any] | None,
    cohort: Cohort,
    pre: PreprocessConfig,
    input_size: int | Sequence[int] | None,
    seed: int,
) -> tuple[nn.Module, dict[str, Any], PreprocessConfig]:
    """The model for the cohort, its kwargs, and ``pre`` at its input size (checked by a meta-device forward)."""
    # the initial weights depend on the seed alone, not on what this process ran before
    # (the demo trains two models in a row; without this the baseline's start depended on DeSamba's run)
    torch.manual_seed(seed)
    model, kwargs = build_model_for_cohort(
        model_name, cohort.sequences, cohort.num_classes, cohort.num_tabular, model_kwargs
    )
    pre = dataclasses.replace(pre, input_size=_input_size(model, input_size))
    check_input_size(model_name, kwargs, pre.input_size, len(cohort.sequences), cohort.num_tabular)
    return model, kwargs, pre


def _training_cases(cohort: Cohort, fold: int | None, data: Path) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """The training and validation cases; a warning when there is no validation split."""
    train_cases = cohort.split("train", fold)
    val_cases = _split_or_empty(cohort, "val", fold)
    if not val_cases:
        warnings.warn(
            f"{data / 'cases.csv'}: no validation cases"
            + (f" in fold {fold}" if fold is not None else "")
            + ": 'best' is the last epoch and early stopping is off",
            stacklevel=3,
        )
    return train_cases, val_cases


def _clear_out(out: Path, overwrite: bool, skipped: Sequence[Any]) -> Path:
    """With ``overwrite``, remove the run in ``out``; list the skipped cases in ``out/skipped.json``."""
    if overwrite:
        clear_run(out)
    if skipped:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "skipped.json", [str(s) for s in skipped])
    return out


def _training_datasets(
    cohort: Cohort,
    cases: tuple[list[CaseRecord], list[CaseRecord]],
    pre: PreprocessConfig,
    augment: bool,
    cache_dir: str | os.PathLike | None,
    seed: int,
) -> tuple[MRIDataset, MRIDataset | None]:
    """The datasets; validation standardises clinical values with the training split's statistics."""
    train_cases, val_cases = cases
    train_set = MRIDataset(cohort, train_cases, pre, augment=augment, cache_dir=cache_dir, seed=seed)
    val_set = (
        MRIDataset(cohort, val_cases, pre, tabular_stats=train_set.tabular_stats, cache_dir=cache_dir)
        if val_cases
        else None
    )
    return train_set, val_set


def _version() -> str:
    import spectral3d

    return spectral3d.__version__


def load_checkpoint_model(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The model of a checkpoint (or run directory: its best, else last), in eval mode, and its config."""
    from backbones3d import create_model

    ckpt = resolve_checkpoint(checkpoint)
    config = load_config(ckpt)
    model = create_model(config["model"], **config["model_kwargs"])
    load_weights(model, ckpt, config["model"])
    return model.to(device).eval(), config


def predict_split(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    split: str = "test",
    fold: int | None = None,
    batch_size: int = 4,
    skip_bad: bool = False,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any], list[str]]:
    """A checkpoint's class probabilities on a split of a cohort, read with the checkpoint's settings.

    Returns ``(labels (n,), probs (n, K), case_ids, config, skipped)``.
    """
    model, config = load_checkpoint_model(checkpoint)
    cohort = Cohort.from_folder(
        data,
        sequences=config["sequences"],
        classes=config["class_names"],
        clinical_columns=config["clinical_columns"],
        skip_bad=skip_bad,
    )
    pre = PreprocessConfig.from_dict(config["preprocess"])
    cases = cohort.split(split, fold)
    if skip_bad:
        cohort = cohort.verify(pre, skip_bad=True, progress=progress)
        cases = cohort.split(split, fold)
    dataset = MRIDataset(cohort, cases, pre, tabular_stats=TabularStats.from_dict(config["tabular_stats"]))
    y, p, ids = predict(model, dataset, batch_size=batch_size, progress=progress)
    return y, p, ids, config, [str(s) for s in cohort.skipped]


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    split: str = "test",
    fold: int | None = None,
    out: str | os.PathLike | None = None,
    n_bootstrap: int = 1000,
    batch_size: int = 4,
    skip_bad: bool = False,
    name: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The paper's metrics for a checkpoint on a split of a cohort.

    Writes ``metrics.json`` (strict JSON), ``metrics.md`` (Table 1 layout) and ``predictions.csv`` into
    ``out`` when given. Returns :func:`spectral3d.metrics.classification_metrics`' dict.
    """
    if out is not None:
        check_writable_dir(out, "out")
    y, p, ids, config, skipped = predict_split(checkpoint, data, split, fold, batch_size, skip_bad, progress)
    metrics = classification_metrics(y, p, class_names=config["class_names"], n_bootstrap=n_bootstrap)
    metrics.update(
        model=config["model"],
        checkpoint=str(resolve_checkpoint(checkpoint)),
        split=split,
        skipped=skipped,
    )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", metrics)
        (out / "metrics.md").write_text(
            metrics_table({name or config["model"]: metrics}, with_ci=n_bootstrap > 0) + "\n"
        )
        write_predictions(out / "predictions.csv", ids, y, p, config["class_names"])
    return metrics


def write_predictions(
    path: Path, ids: Sequence[str], y: np.ndarray | None, p: np.ndarray, class_names: Sequence[str]
) -> None:
    """Write ``path`` as CSV: case_id, label, predicted class and one probability column per class."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "label", "predicted", *[f"p_{c}" for c in class_names]])
        for i, case_id in enumerate(ids):
            label = class_names[int(y[i])] if y is not None else ""
            w.writerow([case_id, label, class_names[int(p[i].argmax())], *[f"{v:.6f}" for v in p[i]]])


def predict_cases(
    checkpoint: str | os.PathLike,
    case_dirs: Sequence[str | os.PathLike],
    tabular_csv: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Class probabilities for case folders (each holding one NIfTI per sequence, optional ROI).

    Clinical values come from ``tabular_csv`` (``case_id`` = the folder's name, plus the checkpoint's
    clinical columns; a case absent from it is an error), else are all missing (with a warning).
    Returns one dict per case: ``case_id``, ``predicted``, ``probabilities`` (class → p).
    """
    model, config = load_checkpoint_model(checkpoint)
    pre = PreprocessConfig.from_dict(config["preprocess"])
    stats = TabularStats.from_dict(config["tabular_stats"])
    columns = config["clinical_columns"]
    table = read_clinical_table(tabular_csv, columns) if tabular_csv else None
    case_dirs = [Path(c) for c in case_dirs]
    if table is not None:
        absent = [c.name for c in case_dirs if c.name not in table]
        if absent:
            raise DataError(f"case(s) {absent} not in the tabular CSV (case_id column)", absent[0], (tabular_csv,))
    clinical = {c.name: table[c.name] if table is not None else [math.nan] * len(columns) for c in case_dirs}
    empty = [cid for cid, values in clinical.items() if columns and all(math.isnan(v) for v in values)]
    if empty:
        where = "no tabular CSV given" if table is None else f"empty in {tabular_csv}"
        warnings.warn(
            f"all {len(columns)} clinical values are missing for {len(empty)} case(s) ({where}): {empty[:5]}",
            stacklevel=2,
        )
    files = {c.name: find_case_files(c, config["sequences"]) for c in case_dirs}  # every folder before any work
    results = []
    for case_dir in case_dirs:
        case_id = case_dir.name
        seq_files, roi = files[case_id]
        loaded = load_case(seq_files, roi=roi, config=pre, case_id=case_id)
        sample = Sample(
            torch.from_numpy(np.ascontiguousarray(loaded.volume, dtype=np.float32)),
            torch.from_numpy(stats.transform(clinical[case_id])),
            torch.tensor(0),
            case_id,
        )
        _, p, _ = predict(model, [sample], batch_size=1)
        probs = dict(zip(config["class_names"], map(float, p[0])))
        results.append(
            {
                "case_id": case_id,
                "predicted": max(probs, key=probs.get),
                "probabilities": probs,
                "clinical_from_csv": table is not None,
            }
        )
    return results
