"""Run directories and atomic checkpoints.

A run directory holds one sub-directory per saved epoch and two pointers::

    RUN_DIR/
      epoch_0001/  model.safetensors  training_state.pt  config.json  metrics.json
      epoch_0002/  ...
      last -> epoch_0002        (symlink, replaced atomically)
      best -> epoch_0001
      log.jsonl                 (one JSON line per epoch)

- ``model.safetensors``: the model's state dict (shared storage cloned).
- ``training_state.pt``: optimizer, scheduler, RNG states, counters, early-stopping state — tensors and
  plain data only, read with ``torch.load(weights_only=True)``.
- ``config.json``: what ``evaluate``/``predict``/``gradcam`` need (model name and kwargs, class names in
  order, sequences, preprocessing, tabular statistics, training config, versions); strict JSON.

Atomicity *(ours)*: a checkpoint is written into a hidden temporary directory in RUN_DIR and
``os.rename``-d into place; pointers are symlinks ``os.replace``-d over the old ones. A crash leaves
the old or the new checkpoint, never half of one. Files get the umask's permissions.

Reading: every problem with a checkpoint raises :class:`CheckpointError`, a ``ValueError`` naming the
file; a ``training_state.pt`` holding anything but tensors and plain data is never unpickled.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "CHECKPOINT_FILES",
    "RUN_PATTERNS",
    "CheckpointError",
    "capture_rng_state",
    "check_resume",
    "check_run_dir",
    "check_writable_dir",
    "clear_run",
    "load_config",
    "load_model_state",
    "load_training_state",
    "load_weights",
    "resolve_checkpoint",
    "restore_rng_state",
    "run_contents",
    "save_checkpoint",
    "strict_json",
    "update_pointer",
    "write_json",
]

CHECKPOINT_FILES = ("model.safetensors", "training_state.pt", "config.json")
#: What :func:`fit` writes into a run directory (glob patterns): all that :func:`clear_run` removes.
RUN_PATTERNS = ("epoch_[0-9][0-9][0-9][0-9]*", "interrupted", "best", "last", "log.jsonl", "skipped.json", ".tmp-*")
CONFIG_KEYS = ("model", "model_kwargs", "class_names", "sequences", "clinical_columns", "preprocess", "tabular_stats")


class CheckpointError(ValueError):
    """A checkpoint or run directory that cannot be used, naming the file (one line)."""


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (Path,)):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"config.json: cannot serialise {type(obj).__name__}")


def strict_json(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by ``None`` (strict JSON: ``null``, not ``NaN``).

    Example::

        >>> json.dumps(strict_json({"auc": float("nan"), "ci": [0.5, float("inf")]}))
        '{"auc": null, "ci": [0.5, null]}'
    """
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json(v) for v in data]
    return data


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented strict JSON (:func:`strict_json`; paths, tuples and arrays as lists)."""
    text = json.dumps(strict_json(json.loads(json.dumps(data, default=_json_default))), indent=2, allow_nan=False)
    Path(path).write_text(text + "\n")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_checkpoint(
    run_dir: str | os.PathLike,
    name: str,
    model_state: dict[str, torch.Tensor],
    training_state: dict[str, Any],
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write ``RUN_DIR/<name>/`` atomically (replacing one of that name) and return its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=run_dir))
    mask = _umask()
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; a checkpoint directory is an ordinary one
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model_state.items()}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    torch.save(training_state, tmp / "training_state.pt")
    write_json(tmp / "config.json", config)
    if metrics is not None:
        write_json(tmp / "metrics.json", metrics)
    for f in tmp.iterdir():  # flush file contents before the rename makes them visible
        os.chmod(f, 0o666 & ~mask)  # as open() would (safetensors writes 0600)
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    final = run_dir / name
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".tmp-old-{name}-", dir=run_dir))
        os.rename(final, trash / name)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)
    return final


def update_pointer(run_dir: str | os.PathLike, pointer: str, target: str) -> None:
    """Point ``RUN_DIR/<pointer>`` (``"last"``/``"best"``) at ``RUN_DIR/<target>`` atomically."""
    run_dir = Path(run_dir)
    if not (run_dir / target).is_dir():
        raise FileNotFoundError(f"{pointer}: checkpoint {run_dir / target} does not exist")
    tmp = run_dir / f".tmp-link-{pointer}-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, run_dir / pointer)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory from a checkpoint directory, a file inside one, or a run directory
    (which means its ``best``, else its ``last``). Raises ``FileNotFoundError`` naming what is missing."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint: {p} does not exist")
    if p.is_file() and (p.parent / "config.json").is_file():
        p = p.parent
    if (p / "config.json").is_file():
        ckpt = p.resolve()
    else:
        for pointer in ("best", "last"):
            if (p / pointer).exists():
                ckpt = (p / pointer).resolve()
                break
        else:
            raise FileNotFoundError(f"checkpoint: {p} is neither a checkpoint directory nor a run directory")
    missing = [f for f in CHECKPOINT_FILES if not (ckpt / f).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint: {ckpt} lacks {', '.join(missing)}")
    return ckpt


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint: {path} is not valid JSON ({e})") from None


def load_config(ckpt: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint (or of a run directory's best/last checkpoint).

    Raises:
        CheckpointError: the file is not JSON or lacks a key the commands need.
    """
    path = resolve_checkpoint(ckpt) / "config.json"
    config = _read_json(path)
    missing = [k for k in CONFIG_KEYS if not isinstance(config, dict) or k not in config]
    if missing:
        raise CheckpointError(f"checkpoint: {path} lacks {', '.join(map(repr, missing))}; not a spectral3d config")
    return config


def load_model_state(ckpt: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint, read with safetensors (no pickle; ``_orig_mod.`` prefix dropped).

    Raises:
        CheckpointError: the file is truncated or not a safetensors file.
    """
    path = resolve_checkpoint(ckpt) / "model.safetensors"
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError for a bad header or a short file
        message = f"checkpoint: {path} is not a readable safetensors file, truncated or corrupt ({e})"
        raise CheckpointError(message) from None
    torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "_orig_mod.")
    return state


def load_training_state(ckpt: str | os.PathLike) -> dict[str, Any]:
    """The training state of a checkpoint, read with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: the file is corrupt, or holds objects other than tensors and plain data.
    """
    path = resolve_checkpoint(ckpt) / "training_state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"checkpoint: {path} is not a spectral3d training state (it holds objects other than tensors and "
            "plain data; it was not loaded)"
        ) from None
    except Exception as e:  # a truncated zip archive, an empty file, ...
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""
        raise CheckpointError(f"checkpoint: {path} is corrupt or truncated ({type(e).__name__}: {first})") from None


def capture_rng_state() -> dict[str, Any]:
    """The torch, NumPy, Python (and CUDA) RNG states as tensors and plain data (``weights_only`` loads them)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the RNGs to a :func:`capture_rng_state` result."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_weights(model: nn.Module, ckpt: str | os.PathLike, model_name: str = "") -> None:
    """Load a checkpoint's ``model.safetensors`` into ``model``, checking every name and shape first.

    Raises:
        CheckpointError: naming the file, the first mismatching tensors and how many differ.
    """
    path = resolve_checkpoint(ckpt) / "model.safetensors"
    state = load_model_state(ckpt)
    own = model.state_dict()
    problems = {
        "shape mismatches (file vs model)": [
            f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in own.items()
            if k in state and state[k].shape != v.shape
        ],
        "missing": [k for k in own if k not in state],
        "unexpected": [k for k in state if k not in own],
    }
    if any(problems.values()):
        parts = [
            f"{len(items)} {what} ({', '.join(items[:2])}{', ...' if len(items) > 2 else ''})"
            for what, items in problems.items()
            if items
        ]
        raise CheckpointError(
            f"checkpoint: {path} does not fit {model_name or type(model).__name__}: {'; '.join(parts)}"
        )
    model.load_state_dict(state)


def check_writable_dir(path: str | os.PathLike, name: str = "out") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``path`` is a directory this process may write into,
    or one it may create (nothing is created)."""
    p = Path(path).absolute()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == p else f"cannot be created: {probe} is a file"
        raise ValueError(f"{name}: {path} {where}, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: {path} is not writable (no write permission on {probe})")


def check_run_dir(
    run_dir: str | os.PathLike, resume: bool = False, overwrite: bool = False, name: str = "run_dir"
) -> list[Path]:
    """Refuse to mix two runs in one directory (a run there needs ``resume`` or ``overwrite``); returns
    what ``overwrite`` would remove.

    Raises:
        FileExistsError: a run is there and neither flag is set (naming ``name``).
        CheckpointError: ``resume`` without a checkpoint to resume.
        ValueError: both flags, or an unwritable directory.
    """
    if resume and overwrite:
        raise ValueError("resume: cannot both resume a run and overwrite it")
    check_writable_dir(run_dir, name)
    existing = run_contents(run_dir)
    if resume and not (Path(run_dir) / "last").exists():
        raise CheckpointError(f"resume: {run_dir} has no checkpoint to resume from (no {Path(run_dir) / 'last'})")
    run = [p for p in existing if p.name != "skipped.json"]  # written before the first epoch: not yet a run
    if run and not (resume or overwrite):
        shown = ", ".join(p.name for p in run[:4]) + (", ..." if len(run) > 4 else "")
        raise FileExistsError(
            f"{name}: {run_dir} already holds a training run ({shown}); pass resume=True to continue it "
            "or overwrite=True to replace it"
        )
    return existing


def check_resume(run_dir: str | os.PathLike, run_config: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` if the run's ``last`` checkpoint was written for another model,
    class set, sequences or clinical columns than ``run_config`` (the keys both configs have)."""
    path = resolve_checkpoint(Path(run_dir) / "last") / "config.json"
    saved = _read_json(path)
    for key in ("model", "class_names", "sequences", "clinical_columns"):
        if key in run_config and key in saved and _plain(saved[key]) != _plain(run_config[key]):
            raise CheckpointError(
                f"resume: {path} was written for {key} {saved[key]!r}, this run has {run_config[key]!r}"
            )


def run_contents(run_dir: str | os.PathLike) -> list[Path]:
    """What of ``run_dir`` spectral3d wrote (:data:`RUN_PATTERNS`), sorted; empty for a new directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = {p for pattern in RUN_PATTERNS for p in run_dir.glob(pattern)}
    return sorted(found | {p for p in run_dir.iterdir() if p.is_symlink() and p.name in ("best", "last")})


def clear_run(run_dir: str | os.PathLike) -> list[Path]:
    """Remove :func:`run_contents` (checkpoints, pointers, logs, temporaries) and return what was removed;
    any other file in ``run_dir`` is left alone."""
    removed = run_contents(run_dir)
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return removed
