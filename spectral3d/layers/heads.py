"""Classifier heads and global pooling shared by every network (DESIGN.md §5, §9), timm's names.

``p = pool(x)`` ``(N, C)``, ``h = pre_logits(norm(p))`` ``(N, num_features)``, ``logits = fc(Dropout(h))`` ``(N, K)``.
*(ours)*: ``"max"`` pooling besides ``"avg"`` and ``""`` (every position classified, ``(N, K, *spatial)``);
``reset`` builds the classifier on the head's device and dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from spectral3d.checks import check_channels, check_floating, check_int, check_rate

__all__ = ["POOL_TYPES", "ClassifierHead3d", "MlpHead", "channel_linear", "check_global_pool", "global_pool_3d"]

POOL_TYPES: tuple[str, ...] = ("avg", "max", "")
"""The pooling every head and CNN accepts; the token models add ``"token"``."""

_layer_norm_eps6 = partial(nn.LayerNorm, eps=1e-6)  # channels-last LayerNorm, eps as timm's


def check_global_pool(pool_type: str, name: str = "global_pool", allowed: Sequence[str] = POOL_TYPES) -> str:
    """Return ``pool_type`` if it is one of ``allowed``; raise ``ValueError`` naming ``name`` otherwise.

    Example::

        >>> check_global_pool("max")
        'max'
    """
    if pool_type not in allowed:
        names = [repr(p) for p in allowed if p]
        listed = ", ".join(names) + (" or '' (no pooling)" if "" in allowed else "")
        raise ValueError(f"{name}: expected one of {listed}, got {pool_type!r}")
    return pool_type


def global_pool_3d(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    """Pool ``(N, C, *spatial)`` to ``(N, C)``; ``pool_type=""`` or no spatial axes returns ``x`` unchanged.

    Example::

        >>> global_pool_3d(torch.randn(2, 8, 3, 4, 5), "max").shape
        torch.Size([2, 8])
    """
    dims = tuple(range(2, x.ndim))
    if pool_type == "avg" and dims:
        return x.mean(dim=dims)
    if pool_type == "max" and dims:
        return x.amax(dim=dims)
    return x


def channel_linear(x: torch.Tensor, fc: nn.Module) -> torch.Tensor:
    """Apply a channels-last layer to pooled ``(N, C)`` features, or at every position of ``(N, C, *spatial)``.

    Example::

        >>> channel_linear(torch.randn(2, 8, 3, 4, 5), nn.Linear(8, 6)).shape
        torch.Size([2, 6, 3, 4, 5])
    """
    if x.ndim == 2:
        return fc(x)
    return fc(x.movedim(1, -1)).movedim(-1, 1)


class ClassifierHead3d(nn.Module):
    """``in_features`` C, ``num_classes`` K (0: ``fc`` identity), ``pool_type`` ``"avg"``/``"max"`` over every axis
    after C or ``""``, ``norm_layer`` over the last axis or ``None``, ``bias`` of ``fc``.

    Example::

        >>> head, x = ClassifierHead3d(16, 3, norm_layer=nn.LayerNorm), torch.randn(2, 16, 2, 3, 3)
        >>> head(x).shape, head(x.mean((2, 3, 4))).shape, ClassifierHead3d(16, 3, pool_type="")(x).shape
        (torch.Size([2, 3]), torch.Size([2, 3]), torch.Size([2, 3, 2, 3, 3]))
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 2,
        pool_type: str = "avg",
        drop_rate: float = 0.0,
        norm_layer: Callable[[int], nn.Module] | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_int(in_features, "in_features")
        self.in_features = in_features
        self.pool_type = check_global_pool(pool_type, "pool_type")
        self.bias = bias
        self.norm = norm_layer(in_features) if norm_layer is not None else nn.Identity()
        self.pre_logits: nn.Module = nn.Identity()
        self.num_features = in_features
        self.drop = nn.Dropout(check_rate(drop_rate, "drop_rate"))
        self.fc: nn.Module = nn.Identity()
        self.reset(num_classes)

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        """Replace the classifier by a fresh one for ``num_classes`` (0: identity); optionally change pooling."""
        if num_classes < 0:
            raise ValueError(f"num_classes: expected >= 0, got {num_classes}")
        if pool_type is not None:
            self.pool_type = check_global_pool(pool_type, "pool_type")
        ref = next(iter(self.parameters()), None)  # build on the head's device and dtype
        factory = {} if ref is None else dict(device=ref.device, dtype=ref.dtype)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes, bias=self.bias, **factory) if num_classes else nn.Identity()
        self.fc.train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, norm, (MLP), dropout; ``pre_logits=True`` stops before the classifier."""
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a tensor (N, C, *spatial) with at least 2 dims, got {shape}")
        check_channels(x, self.in_features)
        check_floating(x)
        x = global_pool_3d(x, self.pool_type).movedim(1, -1)  # channels last (a no-op for pooled (N, C))
        x = self.drop(self.pre_logits(self.norm(x)))
        if not pre_logits:
            x = self.fc(x)
        return x.movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_features={self.num_features}, pool_type={self.pool_type!r}"


class MlpHead(ClassifierHead3d):
    """MambaOut's head, ``pre_logits = fc → act_layer (GELU) → norm_layer``, width ``int(mlp_ratio · C)`` (``None``:
    none, ``h = LN(p)``); ``norm_layer`` LayerNorm eps 1e-6; other arguments as :class:`ClassifierHead3d`.

    Example::

        >>> head, x = MlpHead(32, 3), torch.randn(2, 32, 4, 5, 6); head(x).shape, head(x, pre_logits=True).shape
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
        super().__init__(in_features, 0, pool_type, drop_rate, norm_layer, bias)
        if mlp_ratio is not None:
            hidden = int(mlp_ratio * in_features)
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(in_features, hidden))
            self.pre_logits.add_module("act", act_layer())
            self.pre_logits.add_module("norm", norm_layer(hidden))
            self.num_features = hidden
        self.reset(num_classes)
