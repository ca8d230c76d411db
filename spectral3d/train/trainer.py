"""The training loop behind ``spectral3d train``: Eq. 5, AdamW, warm-up + cosine, checkpoints, DDP.

Data: a dataset item is a :class:`spectral3d.data.Sample` ``(volume (S, D, H, W), tabular (F,) with NaN
for missing values, label, case_id)``, batched by :func:`spectral3d.data.collate`; a dataset may offer
``set_epoch(epoch)`` (augmentation seeded per epoch and item) and ``labels`` (class weights without
loading volumes). Model: a multi-sequence model (``backbones3d.is_multi_sequence``) is called as
``forward_with_aux(x, tabular) -> (logits, {"self", "cross"})``, any other as ``model(x)`` (the S
sequences as channels). Loss (Eq. 5): ``CE(logits, y; class weights) + self_weight·L_self +
cross_weight·L_cross`` (``backbones3d.desamba.DeSambaLoss``; both weights 0.5 as in the paper).

Choices *(ours)*, each a ``TrainConfig`` field where it has one:
- AdamW (no decay on biases/norm parameters), linear warm-up for ``warmup_epochs`` then cosine to
  ``min_lr_ratio · lr``, stepped per optimizer step; gradient clipping; ``grad_accum``.
- bf16 autocast on CUDA (the spectral ops keep their FFTs in float32); float32 on CPU.
- One permutation per epoch from ``seed + epoch``, sharded ``rank::world_size``, so a resumed run sees
  the batches an uninterrupted one would; a last batch of one case joins the one before
  (:func:`batch_bounds`).
- A run directory holds one run: refused unless ``resume`` (same model, classes, sequences) or ``overwrite``.
- Early stopping on validation macro AUC (``patience``); ``best`` is the highest validation AUC (ties:
  lower validation loss).
- SIGINT/SIGTERM (or ``stop_when``): the optimizer step finishes, an ``interrupted`` checkpoint holds the
  position inside the epoch, ``last`` points at it; ``resume`` continues from that batch and reaches the
  weights of an uninterrupted run on CPU.
- ``compile``: the task's forward and validation run through ``torch.compile``; checkpoints hold the
  model's own state dict (no ``_orig_mod.`` prefix), so a run resumes compiled or eager alike.
- DDP (``torchrun``): NCCL on CUDA, gloo on CPU; batches and validation sharded, predictions gathered,
  rank 0 alone writes. The global batch is ``batch_size`` × processes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from spectral3d.data import collate
from spectral3d.data.errors import DataError
from spectral3d.metrics import classification_metrics
from spectral3d.train.checkpoint import (
    capture_rng_state,
    check_resume,
    check_run_dir,
    clear_run,
    load_training_state,
    load_weights,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
    strict_json,
    update_pointer,
)
from spectral3d.train.config import TrainConfig

__all__ = ["FitResult", "TrainConfig", "batch_bounds", "fit", "predict"]


@dataclass
class FitResult:
    """What :func:`fit` returns: the run directory, the epochs done and the per-epoch history."""

    run_dir: Path
    epochs_done: int
    best_epoch: int | None
    best_auc: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    stopped_early: bool = False


class _TaskModule(nn.Module):
    """Gives every model one ``forward(x, tabular) -> (logits, aux)`` so DDP sees a single forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        from backbones3d import is_multi_sequence

        self.multi_sequence = is_multi_sequence(model)

    def forward(self, x: torch.Tensor, tabular: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.multi_sequence:
            return self.model.forward_with_aux(x, tabular if tabular is not None and tabular.shape[-1] else None)
        return self.model(x), {}


class _EpochSampler(Sampler[int]):
    """The epoch's permutation from ``seed + epoch``, sharded ``rank::world``, minus ``skip`` items."""

    def __init__(
        self, n: int, seed: int, epoch: int, rank: int = 0, world: int = 1, skip: int = 0, shuffle: bool = True
    ) -> None:
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
        if shuffle and world > 1:  # equal shard sizes keep DDP's collectives in step
            order += order[: (-n) % world]
        self.indices = order[rank::world][skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch of ``batch_size`` of ``n`` items; *(ours)* a last batch of one item
    joins the one before (BatchNorm never trains on one case, and no case is dropped).

    Example::

        >>> batch_bounds(9, 4), batch_bounds(10, 4), batch_bounds(1, 4)
        ([(0, 4), (4, 9)], [(0, 4), (4, 8), (8, 10)], [(0, 1)])
    """
    bounds = [*range(0, n, batch_size), n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


class _EpochBatches(Sampler[list[int]]):
    """One epoch's batches (:class:`_EpochSampler` cut by :func:`batch_bounds`), minus the first ``skip``."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int, skip: int = 0) -> None:
        order = _EpochSampler(n, seed, epoch, rank, world).indices
        self.batches = [order[a:b] for a, b in batch_bounds(len(order), batch_size)][skip:]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _ErrorsAsItems(Dataset):
    """Returns an item's :class:`DataError` (a worker would wrap a raised one in its traceback)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except DataError as err:
            return err


def _collate_or_error(samples: Sequence[Any]) -> Any:
    return next((s for s in samples if isinstance(s, DataError)), None) or collate(samples)


def _loader(dataset: Dataset, num_workers: int, **kwargs: Any) -> DataLoader:
    """A DataLoader whose data errors reach the caller as one :class:`DataError` (see :func:`_batches`)."""
    return DataLoader(_ErrorsAsItems(dataset), num_workers=num_workers, collate_fn=_collate_or_error, **kwargs)


def _batches(loader: DataLoader) -> Iterator[Any]:
    for batch in loader:
        if isinstance(batch, DataError):
            raise batch
        yield batch


def _dist_info() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def _class_counts(dataset: Dataset, num_classes: int) -> torch.Tensor | None:
    """Training cases per class from the dataset's ``labels`` (None when it has none: not worth a pass)."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return None
    return torch.bincount(torch.as_tensor(list(labels), dtype=torch.int64), minlength=num_classes)


def _class_weights(
    cfg: TrainConfig, dataset: Dataset, num_classes: int, class_names: Sequence[str] | None
) -> torch.Tensor | None:
    if cfg.class_weights is None:
        return None
    if cfg.class_weights == "balanced":
        counts = _class_counts(dataset, num_classes)
        if counts is None:
            counts = torch.bincount(torch.stack([dataset[i].label for i in range(len(dataset))]), minlength=num_classes)
        counts = counts.double()
        if (counts == 0).any():
            names = class_names or [str(i) for i in range(num_classes)]
            missing = [names[i] for i in (counts == 0).nonzero().flatten().tolist()]
            raise ValueError(f"class_weights: 'balanced' needs a training case of every class; {missing} have none")
        return (counts.sum() / (num_classes * counts)).float()
    weights = torch.as_tensor(list(cfg.class_weights), dtype=torch.float32)
    if weights.shape != (num_classes,):
        raise ValueError(f"class_weights: expected {num_classes} values, got {weights.numel()}")
    return weights


def _loss_fn(cfg: TrainConfig, weight: torch.Tensor | None) -> nn.Module:
    from backbones3d.desamba import DeSambaLoss

    return DeSambaLoss(self_weight=cfg.self_weight, cross_weight=cfg.cross_weight, weight=weight)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 4,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    amp: bool = True,
    progress: bool = False,
    rank: int = 0,
    world: int = 1,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Class probabilities for every item of ``dataset``, in dataset order.

    Returns ``(labels (n,), probs (n, K), case_ids)``. Under DDP each rank predicts ``rank::world``
    and the results are gathered, so every rank returns the full arrays.
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(model.parameters()).device
    task = model if isinstance(model, _TaskModule) else _TaskModule(model)
    was_training = task.training
    task.eval()
    sampler = _EpochSampler(len(dataset), 0, 0, rank, world, shuffle=False)
    loader = _loader(dataset, num_workers, batch_size=batch_size, sampler=sampler)
    probs, labels, ids = [], [], []
    for batch in tqdm(_batches(loader), total=len(loader), desc="predict", disable=not progress, leave=False):
        with _autocast(device, amp):
            logits, _ = task(batch.volume.to(device), batch.tabular.to(device))
        probs.append(torch.softmax(logits.float(), dim=-1).cpu())
        labels.append(batch.label)
        ids.extend(batch.case_ids)
    task.train(was_training)
    p = torch.cat(probs).numpy() if probs else np.zeros((0, 0))
    y_all = torch.cat(labels).numpy() if labels else np.zeros((0,), dtype=np.int64)
    if world > 1:
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, (sampler.indices, p, y_all, ids))
        n = len(dataset)
        k = next(part[1].shape[1] for part in parts if len(part[0]))
        p, y_all, all_ids = np.zeros((n, k)), np.zeros(n, dtype=np.int64), [""] * n
        for idx, pp, yy, ii in parts:
            p[idx], y_all[idx] = pp, yy
            for j, case_id in zip(idx, ii):
                all_ids[j] = case_id
        ids = all_ids
    return y_all, p, ids


def _validate(
    task: _TaskModule,
    val_set: Dataset,
    cfg: TrainConfig,
    device: torch.device,
    rank: int,
    world: int,
    class_names: Sequence[str] | None,
) -> dict[str, Any]:
    y, p, _ = predict(task, val_set, cfg.batch_size, cfg.num_workers, device, cfg.amp, False, rank, world)
    metrics = classification_metrics(y, p, class_names=class_names, n_bootstrap=0)
    eps = 1e-12
    metrics["loss"] = float(-np.log(np.clip(p[np.arange(len(y)), y], eps, None)).mean())
    return metrics


def _better(auc: float, loss: float, best: tuple[float, float] | None) -> bool:
    if best is None:
        return True
    auc = -math.inf if math.isnan(auc) else auc
    best_auc = -math.inf if math.isnan(best[0]) else best[0]
    return auc > best_auc or (auc == best_auc and loss < best[1])


@dataclass
class _Run:
    """What one :func:`fit` call trains with, built by :func:`_setup`."""

    cfg: TrainConfig
    run_dir: Path
    model: nn.Module  # the module whose state dict the checkpoints hold
    task: _TaskModule
    ddp_task: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    criterion: nn.Module
    device: torch.device
    rank: int
    world: int
    config: dict[str, Any]  # each checkpoint's config.json
    class_names: Sequence[str] | None


@dataclass
class _RunState:
    """Where a run stands (saved in every checkpoint): next epoch and batch, part-done sums, early stopping."""

    epoch: int = 0
    batch: int = 0
    partial_sums: dict[str, float] = field(default_factory=dict)
    partial_seen: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: tuple[float, float] | None = None  # (val AUC, val loss) of the best epoch
    best_epoch: int | None = None
    bad_epochs: int = 0


@dataclass
class _Stop:
    """Why training should stop after the current optimizer step: a signal number, ``"stop_when"`` or None."""

    reason: int | str | None = None


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    run_config: dict[str, Any] | None = None,
    resume: bool = False,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
    stop_when: Callable[[int], bool] | None = None,
) -> FitResult:
    """Train ``model`` and write checkpoints into ``run_dir`` (module docstring).

    Args:
        model: any registered model (DeSamba gets Eq. 5's auxiliary terms).
        train_set, val_set: datasets of ``(volume, tabular, label)`` items; ``val_set`` may be None.
        cfg: hyper-parameters.
        run_dir: output directory (created); one holding a run needs ``resume`` or ``overwrite``.
        run_config: extra JSON entries for each checkpoint's ``config.json`` (model, classes, ...).
        resume: continue from ``run_dir/last`` (an epoch or an interrupted checkpoint).
        num_classes: K (default: the model's ``num_classes`` attribute or ``pretrained_cfg``).
        class_names: names for the metrics (default: ``run_config["class_names"]``).
        overwrite: remove the run in ``run_dir`` (:data:`~spectral3d.train.checkpoint.RUN_PATTERNS`) first.
        stop_when: called after every optimizer step with the run's optimizer-step count (a resumed
            run goes on counting); ``True`` stops training as SIGINT does (an ``interrupted``
            checkpoint at that batch, ``FitResult.interrupted``), e.g. ``lambda step: step >= k``.

    Example::

        >>> from spectral3d.train import TrainConfig, fit  # doctest: +SKIP
        >>> fit(model, train_ds, val_ds, TrainConfig(epochs=2), "runs/demo")  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    rank, world, device = _dist_info()
    run_config = dict(run_config or {})
    class_names = class_names or run_config.get("class_names")
    if num_classes is None:
        num_classes = getattr(model, "num_classes", None) or model.pretrained_cfg["num_classes"]
    _check_run(train_set, run_dir, run_config, resume, overwrite, num_classes, class_names, rank)
    run = _setup(model, train_set, cfg, run_dir, run_config, num_classes, class_names, (rank, world, device))
    state = _restore(run, run_config.get("model", "")) if resume else _RunState()
    result = FitResult(run_dir, state.epoch, state.best_epoch, state.best[0] if state.best else None, state.history)
    with _stop_on_signal(enabled=rank == 0 or world == 1) as stop:
        for epoch in range(state.epoch, cfg.epochs):
            t0 = time.time()
            sums, seen, done, n_batches = _train_epoch(run, train_set, epoch, state, stop, stop_when)
            _agree_on_stop(run, stop)
            if stop.reason is not None and done < n_batches:
                _save_interrupted(run, state, epoch, done, sums, seen)
                result.interrupted = True
                break
            _end_epoch(run, val_set, state, epoch, sums, seen, t0)
            result.epochs_done = epoch + 1
            if cfg.patience and state.bad_epochs >= cfg.patience:
                result.stopped_early = True
                break
            if stop.reason is not None:
                result.interrupted = True
                break
    result.history, result.best_epoch = state.history, state.best_epoch
    result.best_auc = state.best[0] if state.best else None
    return result


def _check_run(
    train_set: Dataset,
    run_dir: Path,
    run_config: dict[str, Any],
    resume: bool,
    overwrite: bool,
    num_classes: int,
    class_names: Sequence[str] | None,
    rank: int,
) -> None:
    """Refuse an empty training set or an unusable ``run_dir``; warn about classes without a training case."""
    if len(train_set) == 0:
        raise ValueError("train_set: the training split is empty")
    check_run_dir(run_dir, resume, overwrite)
    if resume:
        check_resume(run_dir, run_config)
    counts = _class_counts(train_set, num_classes)
    if counts is not None and (counts == 0).any():
        names = class_names or [str(i) for i in range(num_classes)]
        empty = [names[i] for i in (counts == 0).nonzero().flatten().tolist()]
        warnings.warn(f"classes {empty} have no training case: the model cannot learn them", stacklevel=3)
    if overwrite and rank == 0:
        clear_run(run_dir)


def _setup(
    model: nn.Module,
    train_set: Dataset,
    cfg: TrainConfig,
    run_dir: Path,
    run_config: dict[str, Any],
    num_classes: int,
    class_names: Sequence[str] | None,
    dist_info: tuple[int, int, torch.device],
) -> _Run:
    """Seed the RNGs; build the task (compiled, DDP-wrapped), AdamW, the schedule and the Eq. 5 loss."""
    rank, world, device = dist_info
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model.to(device)
    task = _TaskModule(model)
    model = getattr(model, "_orig_mod", model)  # a torch.compile-d model: checkpoints hold its module's state
    if cfg.compile is not None:
        task.compile(backend=cfg.compile)
    ddp_task: nn.Module = task
    if world > 1:
        ddp_task = nn.parallel.DistributedDataParallel(
            task, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    per_rank = math.ceil(len(train_set) / world)
    steps_per_epoch = max(1, math.ceil(len(batch_bounds(per_rank, cfg.batch_size)) / cfg.grad_accum))
    total_steps = steps_per_epoch * cfg.epochs
    warmup = min(total_steps, max(1, round(cfg.warmup_epochs * steps_per_epoch))) if cfg.warmup_epochs > 0 else 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup, cfg.min_lr_ratio))
    criterion = _loss_fn(cfg, _class_weights(cfg, train_set, num_classes, class_names)).to(device)
    config = {**run_config, "train": asdict(cfg), "world_size": world}
    return _Run(
        cfg, run_dir, model, task, ddp_task, optimizer, scheduler, criterion, device, rank, world, config, class_names
    )


def _restore(run: _Run, model_name: str) -> _RunState:
    """Load ``run_dir/last`` into the model, optimizer, scheduler and RNGs; return where that run stood."""
    ckpt = resolve_checkpoint(run.run_dir / "last")
    load_weights(run.model, ckpt, model_name)
    saved = load_training_state(ckpt)
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    restore_rng_state(saved["rng"])
    return _RunState(
        epoch=saved["epoch"],
        batch=saved["batch_in_epoch"],
        partial_sums=saved.get("partial_sums", {}),
        partial_seen=saved.get("partial_seen", 0),
        history=json.loads(saved["history"]),
        best=tuple(saved["best"]) if saved["best"] is not None else None,
        best_epoch=saved["best_epoch"],
        bad_epochs=saved["bad_epochs"],
    )


def _training_state(
    run: _Run, state: _RunState, epoch: int, batch_in_epoch: int, sums: dict[str, float] | None = None, seen: int = 0
) -> dict[str, Any]:
    """A checkpoint's ``training_state.pt``: resuming from it continues at ``(epoch, batch_in_epoch)``."""
    return {
        "partial_sums": dict(sums or {}),
        "partial_seen": seen,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": capture_rng_state(),
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "history": json.dumps(state.history),
        "best": list(state.best) if state.best is not None else None,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
    }


@contextlib.contextmanager
def _stop_on_signal(enabled: bool) -> Iterator[_Stop]:
    """While open (and ``enabled``), SIGINT/SIGTERM set ``stop.reason``: the loop then saves and stops."""
    stop, handlers = _Stop(), {}
    if enabled:

        def on_signal(signum: int, _frame: Any) -> None:
            stop.reason = signum

        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not in the main thread
                handlers[s] = signal.signal(s, on_signal)
    try:
        yield stop
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def _agree_on_stop(run: _Run, stop: _Stop) -> None:
    """Under DDP, every rank learns whether rank 0 was signalled."""
    if run.world > 1:
        flag = torch.tensor([1 if stop.reason is not None else 0], device=run.device)
        dist.broadcast(flag, 0)
        if flag.item():
            stop.reason = stop.reason or signal.SIGTERM


def _train_epoch(
    run: _Run, train_set: Dataset, epoch: int, state: _RunState, stop: _Stop, stop_when: Callable[[int], bool] | None
) -> tuple[dict[str, float], int, int, int]:
    """One epoch from batch ``state.batch``; returns ``(loss sums, cases seen, batches done, batches)``."""
    from tqdm.auto import tqdm

    cfg = run.cfg
    if hasattr(train_set, "set_epoch"):
        train_set.set_epoch(epoch)
    batches = _EpochBatches(len(train_set), cfg.batch_size, cfg.seed, epoch, run.rank, run.world, state.batch)
    # its own generator: worker seeds must not draw from the global RNG that dropout uses
    loader = _loader(
        train_set, cfg.num_workers, batch_sampler=batches, generator=torch.Generator().manual_seed(cfg.seed + epoch)
    )
    run.task.train()
    sums, n_seen, batch_idx = dict(state.partial_sums), state.partial_seen, state.batch
    state.partial_sums, state.partial_seen, state.batch = {}, 0, 0
    n_batches = batch_idx + len(loader)
    show = cfg.progress and run.rank == 0
    bar = tqdm(
        _batches(loader), total=len(loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False
    )
    for batch in bar:
        last_micro = (batch_idx + 1) % cfg.grad_accum == 0 or batch_idx + 1 == n_batches
        loss, parts = _train_step(run, batch, last_micro)
        if last_micro and stop_when is not None and stop_when(run.scheduler.last_epoch):
            stop.reason = "stop_when"
        batch_idx += 1
        n_seen += len(batch.label)
        for k, v in {"loss": loss.detach(), **parts}.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(batch.label)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
        if stop.reason is not None and last_micro:
            break
    return sums, n_seen, batch_idx, n_batches


def _train_step(run: _Run, batch: Any, last_micro: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward, Eq. 5 loss and backward of one batch; clip and step on the last batch of a step."""
    cfg = run.cfg
    x, tab, y = batch.volume.to(run.device), batch.tabular.to(run.device), batch.label.to(run.device)
    sync = contextlib.nullcontext() if (last_micro or run.world == 1) else run.ddp_task.no_sync()
    with sync:
        with _autocast(run.device, cfg.amp):
            logits, aux = run.ddp_task(x, tab)
        loss, parts = run.criterion(logits.float(), y, aux)
        (loss / cfg.grad_accum).backward()
    if last_micro:
        if cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad_norm)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.scheduler.step()
    return loss, parts


def _save_interrupted(run: _Run, state: _RunState, epoch: int, batch: int, sums: dict[str, float], seen: int) -> None:
    """The ``interrupted`` checkpoint at ``(epoch, batch)``, with the epoch's sums so far; ``last`` points at it."""
    if run.rank == 0:
        training_state = _training_state(run, state, epoch, batch, sums, seen)
        save_checkpoint(run.run_dir, "interrupted", run.model.state_dict(), training_state, run.config)
        update_pointer(run.run_dir, "last", "interrupted")


def _end_epoch(
    run: _Run, val_set: Dataset | None, state: _RunState, epoch: int, sums: dict[str, float], seen: int, t0: float
) -> None:
    """Validation, the epoch's record (history, ``log.jsonl``), checkpoint, pointers and pruning."""
    from tqdm.auto import tqdm

    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "lr": run.scheduler.get_last_lr()[0],
        "time_s": round(time.time() - t0, 2),
    }
    record.update({f"train_{k}": v / max(1, seen) for k, v in sums.items()})
    improved = True
    if val_set is not None and len(val_set):
        val = _validate(run.task, val_set, run.cfg, run.device, run.rank, run.world, run.class_names)
        record.update({f"val_{k}": val[k] for k in ("loss", "accuracy", "auc", "f1")})
        improved = _better(val["auc"], val["loss"], state.best)
        if improved:
            state.best, state.best_epoch, state.bad_epochs = (val["auc"], val["loss"]), epoch + 1, 0
        else:
            state.bad_epochs += 1
    else:
        state.best_epoch = epoch + 1
    state.history.append(record)
    if run.rank != 0:
        return
    name = f"epoch_{epoch + 1:04d}"
    save_checkpoint(
        run.run_dir, name, run.model.state_dict(), _training_state(run, state, epoch + 1, 0), run.config, record
    )
    update_pointer(run.run_dir, "last", name)
    if improved:
        update_pointer(run.run_dir, "best", name)
    with open(run.run_dir / "log.jsonl", "a") as fh:
        fh.write(json.dumps(strict_json(record), allow_nan=False) + "\n")
    _prune(run.run_dir, run.cfg.keep_last)
    tqdm.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))


def _prune(run_dir: Path, keep_last: int) -> None:
    """Delete the ``interrupted`` checkpoint once superseded, and old epochs beyond ``keep_last``."""
    import shutil

    keep = {os.readlink(run_dir / p) for p in ("best", "last") if (run_dir / p).is_symlink()}
    if "interrupted" not in keep and (run_dir / "interrupted").exists():
        shutil.rmtree(run_dir / "interrupted", ignore_errors=True)
    if keep_last > 0:
        epochs = sorted(p.name for p in run_dir.glob("epoch_*"))
        for name in epochs[:-keep_last]:
            if name not in keep:
                shutil.rmtree(run_dir / name, ignore_errors=True)
