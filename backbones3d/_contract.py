"""timm's model contract, written once for the networks of ``backbones3d`` (docs/CONTRIBUTING.md, "Networks").

Three base classes give ``forward(x) = forward_head(forward_features(x))`` and ``set_grad_checkpointing``:

- :class:`HeadContract`: the classifier is the head module ``self.head`` (ConvNeXt V2, SwinV2, SAMNet, MambaOut,
  DeSamba); a ``features_only`` encoder (``self.head = None``) returns ``forward_stages(x)`` from ``forward``.
- :class:`FlatHeadContract`: timm's flat names, pool → ``head_drop`` → Linear on the model itself (``fc`` ResNet,
  ``classifier`` DenseNet/EfficientNet, ``head`` ViT/Vim).
- :class:`StagedContract`: a :class:`HeadContract` built as ``stem`` → ``stages`` (ConvNeXt V2, SAMNet, MambaOut)
  gets ``forward_stages`` and ``forward_features``.

- *(ours)* ``global_pool=""`` keeps the map: classifier at every voxel (ViT/Vim: token), ``(N, num_classes, d, h, w)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.utils.checkpoint
from torch import nn

from spectral3d.checks import check_int, check_rate
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


def linear_drop_path_rates(drop_path_rate: float, depths: Sequence[int]) -> list[list[float]]:
    """timm's ``torch.linspace(0, drop_path_rate, sum(depths)).split(depths)`` as plain floats (meta-device safe)."""
    check_rate(drop_path_rate, "drop_path_rate")
    total = sum(depths)
    flat = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    starts = [sum(depths[:i]) for i in range(len(depths))]
    return [flat[s : s + d] for s, d in zip(starts, depths)]


def run_blocks(blocks: nn.Module, x: torch.Tensor, grad_checkpointing: bool) -> torch.Tensor:
    """``x`` through each block; with ``grad_checkpointing`` (and grad on) each block is recomputed in the backward."""
    checkpointed = grad_checkpointing and torch.is_grad_enabled()
    for block in blocks:
        x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) if checkpointed else block(x)
    return x


class HeadContract(nn.Module):
    """timm's classifier methods for a model whose head is the module ``self.head`` (module docstring).

    Common arguments of the model classes (each model's Args lists only the others):
        in_chans: input channels (the MRI sequences, fused early).
        num_classes: classifier outputs; 0 replaces the classifier by ``nn.Identity`` (a feature extractor).
        global_pool: ``"avg"``, ``"max"``, ``"token"`` (ViT, Vim) or ``""`` (no pooling: per voxel / token).
        depths, dims: blocks and channels per stage; ``depth``, ``embed_dim`` for the isotropic ViT/Vim.
        patch_size, kernel_size, mlp_ratio: stem patch (unpadded), depthwise kernel, MLP width multiple.
        drop_rate: dropout before the classifier.
        pos_drop_rate, proj_drop_rate, attn_drop_rate: dropout after position embedding / projections, on attention.
        drop_path_rate: stochastic depth, rising linearly from 0 at the first block to this value at the last.
        head_init_scale: multiplies the classifier's initial weights and bias (ConvNeXt V2, SAMNet).
        features_only: build no head (``head = None``); ``forward`` returns the stage outputs (DeSamba's use).

    Example::

        >>> from backbones3d.convnextv2_3d import ConvNeXtV2_3d
        >>> model = ConvNeXtV2_3d(depths=(1, 1), dims=(8, 16)); model.reset_classifier(5); model.get_classifier()
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
    """timm's flat head: ``head_drop``, the Linear ``classifier_name`` (subclasses set it and ``global_pools``)."""

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
        """Pool, dropout, classify: ``(N, num_classes)``; ``pre_logits``: ``(N, num_features)``; ``""``: per voxel."""
        x = self.head_drop(global_pool_3d(x, self.global_pool))
        return x if pre_logits else channel_linear(x, getattr(self, self.classifier_name))


class StagedContract(HeadContract):
    """A :class:`HeadContract` of ``self.stem`` and the ``nn.Sequential`` ``self.stages``; defines ``_check_input``."""

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
