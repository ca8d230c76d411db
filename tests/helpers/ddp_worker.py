"""Run by ``torch.distributed.run`` in tests/test_train.py: train the toy model under DDP (gloo)."""

from __future__ import annotations

import sys

import torch

from spectral3d.train import TrainConfig, fit
from tests.helpers.toy_training import ToyDataset, ToyNet

if __name__ == "__main__":
    out, batch = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    model = ToyNet(dropout=0.0)
    cfg = TrainConfig(epochs=2, batch_size=batch, lr=1e-2, seed=3, progress=False, clip_grad_norm=None)
    fit(model, ToyDataset(16), ToyDataset(8, seed=1), cfg, out, num_classes=2, class_names=["a", "b"])
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
