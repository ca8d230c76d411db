"""Run directories and atomic checkpoints.

A run directory holds one sub-directory per saved epoch and two pointers::

    RUN_DIR/
      epoch_0001/  model.safetensors  training_state.pt  config.json  metrics.json
      epoch_0002/  ...
      last -> epoch_0002        (symlink, replaced atomically)
      best -> epoch_0001
      log.jsonl                 (one JSON line per epoch)

- ``model.safetensors``: the model's state dict (tensors only; shared storage is cloned).
- ``training_state.pt``: optimizer, scheduler, RNG states, epoch and step counters, early-stopping
  state — only tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)``
  reads it.
- ``config.json``: everything ``evaluate``/``predict``/``gradcam`` need: model name and kwargs, class
  names in order, sequence names, preprocessing, tabular statistics, training config, versions.

Atomicity *(ours)*: a checkpoint is written into a hidden temporary directory inside RUN_DIR and
``os.rename``-d into place (atomic on POSIX within one file system); pointers are symlinks created
under a temporary name and ``os.replace``-d over the old ones. A crash leaves either the old or the
new checkpoint, never a half-written one; stale temporaries are removed on the next save.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "CHECKPOINT_FILES",
    "load_config",
    "load_model_state",
    "load_training_state",
    "resolve_checkpoint",
    "save_checkpoint",
    "update_pointer",
]

CHECKPOINT_FILES = ("model.safetensors", "training_state.pt", "config.json")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (Path,)):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"config.json: cannot serialise {type(obj).__name__}")


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=True) + "\n")


def save_checkpoint(
    run_dir: str | os.PathLike,
    name: str,
    model_state: dict[str, torch.Tensor],
    training_state: dict[str, Any],
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write ``RUN_DIR/<name>/`` atomically and return its path.

    An existing checkpoint of the same name is replaced (the new one is complete before the old one
    is moved away).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=run_dir))
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model_state.items()}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    torch.save(training_state, tmp / "training_state.pt")
    _write_json(tmp / "config.json", config)
    if metrics is not None:
        _write_json(tmp / "metrics.json", metrics)
    for f in tmp.iterdir():  # flush file contents before the rename makes them visible
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
    """A checkpoint directory from a checkpoint path or a run directory (which means its ``best``,
    else its ``last``). Raises ``FileNotFoundError`` naming what is missing."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint: {p} does not exist")
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


def load_config(ckpt: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint (or of a run directory's best/last checkpoint)."""
    return json.loads((resolve_checkpoint(ckpt) / "config.json").read_text())


def load_model_state(ckpt: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint, read with safetensors (no pickle).

    Keys saved from a ``torch.compile``-d module elsewhere (``_orig_mod.`` prefix) come back without it.
    """
    state = load_file(str(resolve_checkpoint(ckpt) / "model.safetensors"))
    torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "_orig_mod.")
    return state


def load_training_state(ckpt: str | os.PathLike) -> dict[str, Any]:
    """The training state of a checkpoint, read with ``torch.load(weights_only=True)``."""
    return torch.load(resolve_checkpoint(ckpt) / "training_state.pt", map_location="cpu", weights_only=True)
