"""Assertions shared by the per-family model tests."""

from __future__ import annotations

import torch
from torch import nn


def assert_checkpointing_matches(model: nn.Module, x: torch.Tensor) -> None:
    """``set_grad_checkpointing()`` leaves the output and every parameter's gradient unchanged."""
    params = list(model.parameters())
    ref = model(x)
    ref_grads = torch.autograd.grad(ref.sum(), params)
    model.set_grad_checkpointing()
    assert model.grad_checkpointing
    out = model(x)
    grads = torch.autograd.grad(out.sum(), params)
    torch.testing.assert_close(out, ref)
    for (name, _), g, g_ref in zip(model.named_parameters(), grads, ref_grads):
        torch.testing.assert_close(g, g_ref, msg=name)
