"""timm's model contract, written once for the networks of ``backbones3d`` (docs/CONTRIBUTING.md, "Networks").

Two base classes carry the methods every model would otherwise repeat:

- :class:`HeadContract`: the classifier is a head module ``self.head``
  (:class:`spectral3d.layers.heads.ClassifierHead3d` or :class:`~spectral3d.layers.heads.MlpHead`) with
  ``reset(num_classes, pool_type)``, ``fc`` and ``forward(x, pre_logits)`` (ConvNeXt V2, SwinV2, SAMNet,
  MambaOut, DeSamba). A ``features_only`` encoder (``self.features_only = True``, ``self.head = None``)
  returns ``forward_stages(x)`` from ``forward`` and raises ``RuntimeError`` from the classifier methods.
- :class:`FlatHeadContract`: timm's flat names, ``head_drop`` and the classifier on the model itself
  (``fc`` ResNet, ``classifier`` DenseNet/EfficientNet, ``head`` ViT/Vim) with ``global_pool`` an
  attribute: pool → dropout → Linear, the Linear applied per voxel when ``global_pool=""``.

- :class:`StagedContract`: a :class:`HeadContract` model built as ``stem`` → ``stages`` (ConvNeXt V2,
  SAMNet, MambaOut) gets ``forward_stages`` (the stage outputs DeSamba fuses) and ``forward_features``
  from its ``_check_input(x)``.

All give ``forward(x) = forward_head(forward_features(x))`` and ``set_grad_checkpointing``, which sets
``grad_checkpointing`` on the model and on every submodule that has that flag (the stages read it).
The subclass writes ``forward_features`` and, where its pooling differs (class tokens), ``forward_head``.

:func:`linear_drop_path_rates` is the stochastic-depth schedule (plain Python floats, so models build
under ``with torch.device("meta")``; it validates the rate); :func:`check_int` and :func:`check_rate`
(``spectral3d._checks``, shared with the layers) validate constructor arguments with the messages of
docs/CONTRIBUTING.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.utils.checkpoint
from torch import nn

from spectral3d._checks import check_rate
from spectral3d.layers.heads import POOL_TYPES, channel_linear, check_global_pool, global_pool_3d

__all__ = [
    "FlatHeadContract",
    "HeadContract",
    "StagedContract",
    "check_int",
    "check_rate",
    "linear_drop_path_rates",
    "run_blocks",
]


def check_int(value: int, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an int ``>= minimum``; ``TypeError`` for a non-int, ``ValueError`` below the minimum.

    Example::

        >>> check_int(3, "depth")
        3
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def linear_drop_path_rates(drop_path_rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Stochastic depth rising linearly from 0 (first block) to ``drop_path_rate`` (last block), split per stage.

    The values of timm's ``torch.linspace(0, rate, sum(depths)).split(depths)``, as plain floats.

    Example::

        >>> linear_drop_path_rates(0.2, (1, 2))
        [[0.0], [0.1, 0.2]]
    """
    check_rate(drop_path_rate, "drop_path_rate")
    total = sum(depths)
    flat = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    starts = [sum(depths[:i]) for i in range(len(depths))]
    return [flat[s : s + d] for s, d in zip(starts, depths)]


def run_blocks(blocks: nn.Module, x: torch.Tensor, grad_checkpointing: bool) -> torch.Tensor:
    """``x`` through each block in turn; with ``grad_checkpointing`` (and grad enabled) each block is
    recomputed in the backward instead of keeping its activations (``use_reentrant=False``)."""
    checkpointed = grad_checkpointing and torch.is_grad_enabled()
    for block in blocks:
        x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) if checkpointed else block(x)
    return x


class HeadContract(nn.Module):
    """timm's classifier methods for a model whose head is the module ``self.head`` (module docstring).

    Example::

        >>> from backbones3d.convnextv2_3d import ConvNeXtV2_3d
        >>> model = ConvNeXtV2_3d(depths=(1, 1), dims=(8, 16))
        >>> model.reset_classifier(5)
        >>> model.get_classifier()
        Linear(in_features=16, out_features=5, bias=True)
    """

    grad_checkpointing: bool
    num_classes: int

    def _classifier_head(self) -> nn.Module:
        head = self.head
        if head is None:
            raise RuntimeError(f"{type(self).__name__} was built with features_only=True: it has no classifier head")
        return head

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute blocks in the backward pass (same outputs, less activation memory)."""
        for module in self.modules():
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The final classifier (``head.fc``)."""
        return self._classifier_head().fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0: identity); optionally change the pooling."""
        self._classifier_head().reset(num_classes, global_pool)
        self.num_classes = num_classes

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify ``forward_features``' output; ``pre_logits=True`` stops before the classifier."""
        return self._classifier_head()(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(N, num_classes)``; the stage outputs for a ``features_only`` encoder."""
        if getattr(self, "features_only", False):
            return self.forward_stages(x)
        return self.forward_head(self.forward_features(x))


class FlatHeadContract(HeadContract):
    """timm's classifier methods for flat head names: ``head_drop`` and the Linear ``classifier_name``.

    Class attributes: ``classifier_name`` (the classifier's attribute, the cfg's ``classifier``) and
    ``global_pools`` (the accepted ``global_pool`` values). ``_init_classifier`` initialises a new
    classifier (default: zero bias, weights as ``nn.Linear``).

    Example::

        >>> from backbones3d.resnet3d import ResNet3d
        >>> model = ResNet3d(layers=(1, 1, 1, 1), stem_width=8)
        >>> model.reset_classifier(0, global_pool="max")
        >>> model.forward_head(torch.randn(2, 256, 1, 2, 2)).shape
        torch.Size([2, 256])
    """

    classifier_name: ClassVar[str] = "fc"
    global_pools: ClassVar[tuple[str, ...]] = POOL_TYPES
    global_pool: str
    num_features: int
    head_drop: nn.Module

    def _init_classifier(self, fc: nn.Linear) -> None:
        nn.init.zeros_(fc.bias)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The final classifier (the attribute ``classifier_name``)."""
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier by a fresh ``Linear(num_features, num_classes)`` (0: ``Identity``)."""
        self.num_classes = check_int(num_classes, "num_classes", minimum=0)
        if global_pool is not None:
            self.global_pool = check_global_pool(global_pool, allowed=self.global_pools)
        fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(fc, nn.Linear):
            self._init_classifier(fc)
        setattr(self, self.classifier_name, fc)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and classify; ``pre_logits=True`` stops before the classifier.

        Returns ``(N, num_classes)`` logits, or ``(N, num_features)`` with ``pre_logits``; with
        ``global_pool=""`` the same per voxel, ``(N, ·, d, h, w)``.
        """
        x = self.head_drop(global_pool_3d(x, self.global_pool))
        return x if pre_logits else channel_linear(x, getattr(self, self.classifier_name))


class StagedContract(HeadContract):
    """A :class:`HeadContract` model made of ``self.stem`` and the ``nn.Sequential`` ``self.stages``.

    The subclass defines ``_check_input(x)`` (shape, dtype and size checks, raising ``ValueError`` or
    ``TypeError``).

    Example::

        >>> from backbones3d.samnet import SAMNet
        >>> model = SAMNet(depths=(1, 1), dims=(8, 16))
        >>> [tuple(f.shape) for f in model.forward_stages(torch.randn(1, 3, 8, 8, 16))]
        [(1, 8, 2, 2, 4), (1, 16, 1, 1, 2)]
    """

    def _check_input(self, x: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define _check_input(x)")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage, ``[(N, dims[i], d_i, h_i, w_i)]``, channels-first."""
        self._check_input(x)
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_chans, D, H, W) -> (N, num_features, d, h, w)``: the last stage's unpooled map."""
        self._check_input(x)
        return self.stages(self.stem(x))

    def gradcam_target_layers(self) -> dict[str, list[list[nn.Module]]]:
        """Grad-CAM candidate layers (``spectral3d.gradcam``): the stages, deepest first."""
        return {"input": [[m] for m in reversed(self.stages)]}
