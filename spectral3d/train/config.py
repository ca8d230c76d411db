""":class:`TrainConfig`, the hyper-parameters of :func:`spectral3d.train.fit`, in the standard library
alone: the command line reads its defaults (``dataclasses.fields``) without importing torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`~spectral3d.train.fit` (all serialised into each checkpoint's ``config.json``).

    Batches *(ours)*: a last batch of one case joins the batch before it (``spectral3d.train.batch_bounds``).

    Example::

        >>> TrainConfig(epochs=2).batch_size
        4
        >>> TrainConfig(patience=-1)
        Traceback (most recent call last):
        ...
        ValueError: patience: expected an int >= 0 (0: no early stopping), got -1
    """

    epochs: int = 30
    batch_size: int = 4
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_accum: int = 1
    clip_grad_norm: float | None = 1.0
    class_weights: str | Sequence[float] | None = None
    patience: int = 0
    self_weight: float = 0.5
    cross_weight: float = 0.5
    seed: int = 0
    num_workers: int = 0
    amp: bool = True
    progress: bool = True
    keep_last: int = 0  # 0 keeps every epoch; n keeps the n newest besides best
    compile: str | None = None  # torch.compile backend ("inductor", "aot_eager", ...); None: eager

    def __post_init__(self) -> None:
        if self.compile is True:
            self.compile = "inductor"
        elif self.compile is False:
            self.compile = None
        if self.compile is not None:
            import torch._dynamo  # only when compiling: the command line reads this module without torch

            if not isinstance(self.compile, str) or self.compile not in torch._dynamo.list_backends(exclude_tags=()):
                common = torch._dynamo.list_backends()
                raise ValueError(f"compile: expected a torch.compile backend such as {common}, got {self.compile!r}")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected a positive learning rate, got {self.lr}")
        if self.patience < 0:
            raise ValueError(f"patience: expected an int >= 0 (0: no early stopping), got {self.patience}")
        for name in ("weight_decay", "warmup_epochs", "self_weight", "cross_weight", "num_workers", "keep_last"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio: expected a fraction in [0, 1], got {self.min_lr_ratio}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm: expected a positive norm or None, got {self.clip_grad_norm}")
        if isinstance(self.class_weights, str):
            if self.class_weights != "balanced":
                raise ValueError(f"class_weights: expected 'balanced' or a list of floats, got {self.class_weights!r}")
        elif self.class_weights is not None:
            weights = list(self.class_weights)
            if not weights or not all(isinstance(w, (int, float)) and math.isfinite(w) and w > 0 for w in weights):
                raise ValueError(f"class_weights: expected positive finite numbers, got {weights!r}")
