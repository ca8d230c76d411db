"""DeSamba's tabular (clinical feature) encoder (paper Fig. 1; DESIGN.md §6), ``(N, F) → (N, dim)``, *(ours)*::

    m = isnan(x)                       missing-value mask, (N, F)
    z = concat[where(m, 0, x), m]      (N, 2F): the value (0 where missing) and whether it is missing
    t = fc2(GELU(norm(fc1(z))))        Linear 2F → hidden, LayerNorm, GELU, Linear hidden → dim

Inputs are standardised upstream and cast to the parameters' dtype.
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from spectral3d.checks import check_floating, check_int, check_rate

__all__ = ["TabularEncoder"]


class TabularEncoder(nn.Module):
    """``num_features`` F columns (NaN: missing) → ``dim``; ``hidden_dim`` ``max(dim, 4F)``; ``drop_rate`` after GELU.

    Example::

        >>> enc, x = TabularEncoder(8, 32), torch.randn(4, 8); x[0, 3] = float("nan"); enc(x).shape, enc(None, 4).shape
        (torch.Size([4, 32]), torch.Size([4, 32]))
    """

    def __init__(self, num_features: int, dim: int, hidden_dim: int | None = None, drop_rate: float = 0.0) -> None:
        super().__init__()
        for name, value in (("num_features", num_features), ("dim", dim), ("hidden_dim", hidden_dim)):
            if value is not None:
                check_int(value, name)
        self.num_features = num_features
        self.dim = dim
        self.hidden_dim = hidden_dim or max(dim, 4 * num_features)
        self.fc1 = nn.Linear(2 * num_features, self.hidden_dim)
        self.norm = nn.LayerNorm(self.hidden_dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(check_rate(drop_rate, "drop_rate"))
        self.fc2 = nn.Linear(self.hidden_dim, dim)
        for fc in (self.fc1, self.fc2):
            trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)

    def missing(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """An all-missing input ``(batch_size, F)`` of NaN (what ``tabular=None`` means)."""
        return torch.full(
            (batch_size, self.num_features), float("nan"), device=device, dtype=dtype or self.fc1.weight.dtype
        )

    def forward(self, x: torch.Tensor | None, batch_size: int | None = None) -> torch.Tensor:
        """Encode ``x: (N, F)``; ``x=None`` needs ``batch_size`` and means every value is missing."""
        if x is None:
            if batch_size is None:
                raise ValueError("x: None (all values missing) needs batch_size")
            x = self.missing(batch_size, device=self.fc1.weight.device)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"tabular: expected a torch.Tensor (N, F={self.num_features}), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"tabular: expected shape (N, F={self.num_features}), got {tuple(x.shape)}")
        check_floating(x, "tabular")
        missing = torch.isnan(x)
        z = torch.cat([torch.where(missing, torch.zeros_like(x), x), missing.to(x.dtype)], dim=-1)
        # Clinical tables often arrive as float64 (pandas): values go in at the encoder's own dtype.
        z = z.to(self.fc1.weight.dtype)
        return self.fc2(self.drop(self.act(self.norm(self.fc1(z)))))

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, dim={self.dim}, hidden_dim={self.hidden_dim}"
