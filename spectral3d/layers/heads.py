"""``MlpHead``: MambaOut's classification head — pool → LayerNorm → MLP → Linear (DESIGN.md §5).

The 2-D reference is timm's ``mambaout.MlpHead``. For features ``x: (N, C, *spatial)``::

    p      = pool(x)                                   (N, C)            global average (or max)
    h      = LN(GELU(fc(LN(p))))                       (N, hidden)       hidden = int(mlp_ratio · C)
    logits = fc_out(Dropout(h))                        (N, num_classes)

Parameter names equal timm's (``norm``, ``pre_logits.fc``, ``pre_logits.norm``, ``fc``), so 2-D
checkpoints load key for key; ``num_features`` is the width of ``h`` (what ``pre_logits=True``
returns, timm's ``head_hidden_size``).

Choices *(ours)*: ``pool_type="max"`` is offered besides timm's ``"avg"`` and ``""``;
with ``pool_type=""`` a ``(N, C, *spatial)`` input is classified at every position and the result is
channels-first ``(N, K, *spatial)`` (timm returns NHWC there); ``mlp_ratio=None`` drops the hidden
layer (``h = LN(p)``), as timm does.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from spectral3d._checks import check_channels, check_floating

_layer_norm_eps6 = partial(nn.LayerNorm, eps=1e-6)  # channels-last LayerNorm, eps as timm's

__all__ = ["MlpHead"]

_POOL_TYPES = ("avg", "max", "")


def _check_pool_type(pool_type: str) -> str:
    if pool_type not in _POOL_TYPES:
        raise ValueError(f"pool_type: expected one of {_POOL_TYPES}, got {pool_type!r}")
    return pool_type


class MlpHead(nn.Module):
    """Global pooling, LayerNorm and a two-layer MLP classifier (MambaOut's head).

    Args:
        in_features: channels C of the incoming features.
        num_classes: K; 0 makes ``fc`` the identity (the head returns ``(N, num_features)``).
        pool_type: ``"avg"`` (default), ``"max"`` over every axis after the channel axis, or ``""``.
        mlp_ratio: hidden width ``int(mlp_ratio · C)``; ``None`` for no hidden layer.
        act_layer: activation class (default ``nn.GELU``).
        norm_layer: norm class over the last axis (default ``nn.LayerNorm`` with eps 1e-6).
        drop_rate: dropout before the classifier.
        bias: whether the classifier has a bias.

    Shapes: ``(N, C, *spatial) → (N, K)`` when pooling (spatial may be empty: ``(N, C)``);
    ``(N, C, *spatial) → (N, K, *spatial)`` with ``pool_type=""``.

    Example::

        >>> import torch
        >>> from spectral3d.layers.heads import MlpHead
        >>> head = MlpHead(32, num_classes=3)
        >>> head(torch.randn(2, 32, 4, 5, 6)).shape, head(torch.randn(2, 32, 4, 5, 6), pre_logits=True).shape
        (torch.Size([2, 3]), torch.Size([2, 128]))
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 2,
        pool_type: str = "avg",
        mlp_ratio: float | None = 4,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = _layer_norm_eps6,
        drop_rate: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features: expected a positive channel count, got {in_features}")
        if num_classes < 0:
            raise ValueError(f"num_classes: expected >= 0, got {num_classes}")
        self.in_features = in_features
        self.pool_type = _check_pool_type(pool_type)
        self.bias = bias
        self.norm = norm_layer(in_features)
        if mlp_ratio is not None:
            hidden = int(mlp_ratio * in_features)
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(in_features, hidden))
            self.pre_logits.add_module("act", act_layer())
            self.pre_logits.add_module("norm", norm_layer(hidden))
            self.num_features = hidden
        else:
            self.pre_logits = nn.Identity()
            self.num_features = in_features
        self.head_dropout = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes, bias=bias) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        """Replace the classifier by a fresh one for ``num_classes`` (0: identity); optionally change pooling."""
        if num_classes < 0:
            raise ValueError(f"num_classes: expected >= 0, got {num_classes}")
        if pool_type is not None:
            self.pool_type = _check_pool_type(pool_type)
        ref = self.pre_logits.fc.weight if isinstance(self.pre_logits, nn.Sequential) else self.norm.weight
        self.num_classes = num_classes
        self.fc = (
            nn.Linear(self.num_features, num_classes, bias=self.bias, device=ref.device, dtype=ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        self.fc.train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, normalise, MLP; ``pre_logits=True`` stops before the classifier."""
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a tensor (N, C, *spatial) with at least 2 dims, got {shape}")
        check_channels(x, self.in_features)
        check_floating(x)
        spatial_dims = tuple(range(2, x.ndim))
        if self.pool_type == "avg" and spatial_dims:
            x = x.mean(spatial_dims)
        elif self.pool_type == "max" and spatial_dims:
            x = x.amax(spatial_dims)
        x = x.movedim(1, -1)  # channels last (a no-op for pooled (N, C))
        x = self.head_dropout(self.pre_logits(self.norm(x)))
        if not pre_logits:
            x = self.fc(x)
        return x.movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_features={self.num_features}, pool_type={self.pool_type!r}"
