"""A tiny in-memory dataset and model for training-loop tests (shared by the DDP worker script)."""

from __future__ import annotations

import signal

import torch
from torch import nn
from torch.utils.data import Dataset

from spectral3d.data import Sample


class ToyDataset(Dataset):
    """Two classes that differ by mean intensity; per-(epoch, item) noise mimics augmentation.

    ``interrupt_at``: raise SIGINT when the item with this global fetch count is loaded.
    """

    def __init__(
        self,
        n: int = 16,
        sequences: int = 2,
        size: int = 8,
        num_tabular: int = 3,
        seed: int = 0,
        interrupt_at: int | None = None,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = [i % 2 for i in range(n)]
        self.base = torch.randn(n, sequences, size, size, size, generator=g)
        self.base += torch.tensor(self.labels, dtype=torch.float32).view(-1, 1, 1, 1, 1)
        self.tab = torch.randn(n, num_tabular, generator=g)
        self.tab[::3, 0] = float("nan")
        self.epoch, self.fetches, self.interrupt_at = 0, 0, interrupt_at

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> Sample:
        self.fetches += 1
        if self.interrupt_at is not None and self.fetches == self.interrupt_at:
            signal.raise_signal(signal.SIGINT)
        g = torch.Generator().manual_seed(10_000 * self.epoch + i)
        vol = self.base[i] + 0.3 * torch.randn(self.base[i].shape, generator=g)
        return Sample(vol, self.tab[i], torch.tensor(self.labels[i]), f"case{i:03d}")


class ToyNet(nn.Module):
    """conv → GELU → dropout → pool → linear: a single-input model whose dropout exercises the RNG state."""

    def __init__(self, in_chans: int = 2, num_classes: int = 2, dropout: float = 0.3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv3d(in_chans, 6, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(nn.functional.gelu(self.conv(x))).mean(dim=(2, 3, 4)))
