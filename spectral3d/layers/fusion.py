"""DeSamba's multi-scale feature-fusion block (paper Fig. 4; DESIGN.md §6), *(ours)*; ``pool``: global avg or max::

    z = concat[pool(F_1), ..., pool(F_K)]        F_k: (N, C_k, D_k, H_k, W_k) → z: (N, ΣC_k), K = 4 or 8
    f = proj(dropout(LN(z)))                     ΣC_k → d  (nn.Linear's default init)

Measured alternatives: benchmarks/results/fusion_ablation.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from spectral3d.checks import check_int, check_rate

__all__ = ["MultiScaleFusion"]


def _check_dims(dims: Sequence[int] | None, name: str) -> tuple[int, ...]:
    if dims is None:
        return ()
    dims = tuple(dims)
    if not dims:
        raise ValueError(f"{name}: expected a non-empty sequence of positive ints (channels per stage), got {dims!r}")
    for i, c in enumerate(dims):
        check_int(c, f"{name}[{i}]")
    return dims


class MultiScaleFusion(nn.Module):
    """``forward(feats_a, feats_b=None)`` → ``(N, out_dim)``; ``in_dims_a``/``in_dims_b``: C_k per stage (``None``: one
    branch, Table 3's CE-/ME-only); ``out_dim`` d (512); ``global_pool`` avg/max; ``stages`` ``"all"``/``"last"``.

    Example::

        >>> a = [torch.randn(2, 8, 4, 4, 4), torch.randn(2, 16, 2, 2, 2)]
        >>> MultiScaleFusion((8, 16), (4, 8), out_dim=32)(a, [t[:, : t.shape[1] // 2] for t in a]).shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        in_dims_a: Sequence[int],
        in_dims_b: Sequence[int] | None = None,
        out_dim: int = 512,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        stages: str = "all",
    ) -> None:
        super().__init__()
        self.in_dims_a = _check_dims(in_dims_a, "in_dims_a")
        self.in_dims_b = _check_dims(in_dims_b, "in_dims_b")
        if not self.in_dims_a:
            raise ValueError("in_dims_a: expected the stage widths of at least one branch, got None")
        check_int(out_dim, "out_dim")
        self.out_dim = out_dim
        if stages not in ("all", "last"):
            raise ValueError(f"stages: expected 'all' or 'last', got {stages!r}")
        self.stages = stages
        self.global_pool = ""
        self.set_global_pool(global_pool)
        dims = self.in_dims_a + self.in_dims_b
        if stages == "last":
            dims = self.in_dims_a[-1:] + self.in_dims_b[-1:]
        self.in_features = sum(dims)
        self.norm = nn.LayerNorm(self.in_features)
        self.drop = nn.Dropout(check_rate(drop_rate, "drop_rate"))
        self.proj = nn.Linear(self.in_features, out_dim)

    def set_global_pool(self, global_pool: str) -> None:
        """Choose ``"avg"`` or ``"max"`` pooling over ``(D, H, W)``."""
        if global_pool not in ("avg", "max"):
            raise ValueError(f"global_pool: expected 'avg' or 'max', got {global_pool!r}")
        self.global_pool = global_pool

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4)) if self.global_pool == "avg" else x.amax(dim=(2, 3, 4))

    @staticmethod
    def _check(feats: Sequence[torch.Tensor] | None, dims: tuple[int, ...], name: str) -> list[torch.Tensor]:
        if not dims:
            if feats is not None:
                raise ValueError(f"{name}: this fusion block has no second branch (in_dims_b=None), got features")
            return []
        if not isinstance(feats, (list, tuple)) or len(feats) != len(dims):
            got = f"{len(feats)} tensors" if isinstance(feats, (list, tuple)) else type(feats).__name__
            raise ValueError(f"{name}: expected a list of {len(dims)} stage outputs, got {got}")
        for k, (f, c) in enumerate(zip(feats, dims)):
            if not isinstance(f, torch.Tensor) or f.ndim != 5:
                shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise ValueError(f"{name}[{k}]: expected a 5-D tensor (N, C={c}, D, H, W), got {shape}")
            if f.shape[1] != c:
                raise ValueError(f"{name}[{k}]: expected {c} channels on axis 1, got shape {tuple(f.shape)}")
        return list(feats)

    def forward(self, feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        a = self._check(feats_a, self.in_dims_a, "feats_a")
        b = self._check(feats_b, self.in_dims_b, "feats_b")
        feats = a[-1:] + b[-1:] if self.stages == "last" else a + b
        batch = feats[0].shape[0]
        for k, f in enumerate(feats):
            if f.shape[0] != batch:
                raise ValueError(f"stage output {k}: batch size {f.shape[0]} differs from the first one's {batch}")
        z = torch.cat([self._pool(f) for f in feats], dim=-1)
        return self.proj(self.drop(self.norm(z)))

    def extra_repr(self) -> str:
        return (
            f"in_dims_a={self.in_dims_a}, in_dims_b={self.in_dims_b or None}, out_dim={self.out_dim}, "
            f"global_pool={self.global_pool!r}, stages={self.stages!r}"
        )
