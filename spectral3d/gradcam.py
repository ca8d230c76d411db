"""3D Grad-CAM and Grad-CAM++ for any registered model, one map per MRI sequence for DeSamba.

For a target layer with activations ``A`` of shape ``(N, C, d, h, w)`` and the gradient ``G`` of the
chosen class score ``y_c`` (the logit, before softmax) with respect to ``A``:

- Grad-CAM (Selvaraju et al. 2017): ``w_k = mean_{d,h,w} G_k``, ``M = ReLU(Σ_k w_k A_k)``.
- Grad-CAM++ (Chattopadhay et al. 2018), with the exponential-score closed form:
  ``α_k = G_k² / (2 G_k² + Σ_{dhw} A_k G_k³)`` (0 where the denominator is 0),
  ``w_k = Σ_{dhw} α_k ReLU(G_k)``, ``M = ReLU(Σ_k w_k A_k)``.

Each map is upsampled trilinearly to the input's ``(D, H, W)`` (the model grid) and scaled to
[0, 1] per case (a map that is zero everywhere stays zero). When a name has several target layers
(DeSamba's CNN and MambaOut encoders of one sequence), their normalised maps are averaged — the
paper's "channel-aggregated" map per sequence.

Default target layers (:func:`default_target_layers`): a model's own ``gradcam_target_layers()``
if it has one (DeSamba: the last stage of each sequence's encoders, keyed by sequence name);
otherwise its last stage (``stages[-1]``, ``layer4``, ``features``), keyed ``"input"``. Token models
(ViT, Vim) whose last stage emits tokens are reshaped onto their patch grid by the model's
``gradcam_reshape`` if provided.

Why hooks and not a CAM library *(ours)*: ``pytorch-grad-cam``'s Grad-CAM handles 5-D activations,
but its Grad-CAM++ and other methods reduce over two spatial axes only (its issue #583), it adds
OpenCV as a runtime dependency, and it assumes single-input models — DeSamba takes ``(x, tabular)``
and needs one map per sequence. Two forward hooks and a tensor hook are all that is required.

Example::

    >>> import torch, backbones3d
    >>> from spectral3d.gradcam import GradCAM3d
    >>> model = backbones3d.create_model("test_resnet_3d").eval()
    >>> cam = GradCAM3d(model)
    >>> out = cam(torch.randn(1, 3, 32, 32, 32))
    >>> out.maps["input"].shape
    torch.Size([1, 32, 32, 32])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CAMResult", "GradCAM3d", "cam_from_activations", "default_target_layers"]

Method = Literal["gradcam", "gradcam++"]


@dataclass
class CAMResult:
    """Maps ``name -> (N, D, H, W)`` in [0, 1] on the model grid, with the logits and chosen classes."""

    maps: dict[str, torch.Tensor]
    logits: torch.Tensor
    class_idx: torch.Tensor

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits.float(), dim=-1)


def cam_from_activations(activations: torch.Tensor, grads: torch.Tensor, method: Method = "gradcam") -> torch.Tensor:
    """The class-activation map ``(N, d, h, w)`` from activations and gradients ``(N, C, d, h, w)``."""
    if activations.shape != grads.shape or activations.ndim != 5:
        raise ValueError(
            f"activations/grads: expected equal (N, C, d, h, w) shapes, got {tuple(activations.shape)} "
            f"and {tuple(grads.shape)}"
        )
    a, g = activations.float(), grads.float()
    if method == "gradcam":
        weights = g.mean(dim=(2, 3, 4), keepdim=True)
    elif method == "gradcam++":
        g2, g3 = g.pow(2), g.pow(3)
        denom = 2 * g2 + (a * g3).sum(dim=(2, 3, 4), keepdim=True)
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), 0.0)
        weights = (alpha * F.relu(g)).sum(dim=(2, 3, 4), keepdim=True)
    else:
        raise ValueError(f"method: expected 'gradcam' or 'gradcam++', got {method!r}")
    return F.relu((weights * a).sum(dim=1))


def _normalise(m: torch.Tensor) -> torch.Tensor:
    flat = m.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    scale = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return (m - lo.view(-1, 1, 1, 1)) / scale.view(-1, 1, 1, 1)


def default_target_layers(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The layers whose activations are explained, by name (see the module docstring)."""
    if hasattr(model, "gradcam_target_layers"):
        layers = model.gradcam_target_layers()
        return {k: list(v) if isinstance(v, Sequence) else [v] for k, v in layers.items()}
    for attr in ("stages", "layers"):
        seq = getattr(model, attr, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq):
            return {"input": [seq[-1]]}
    for attr in ("layer4", "features", "blocks"):
        mod = getattr(model, attr, None)
        if isinstance(mod, nn.Module):
            return {"input": [mod]}
    raise ValueError(
        f"{type(model).__name__}: no default Grad-CAM layer (no gradcam_target_layers(), stages, layer4 or "
        "features); pass target_layers explicitly"
    )


class GradCAM3d:
    """Grad-CAM / Grad-CAM++ over chosen layers of a 3D model.

    Args:
        model: a registered model (or any module taking ``x`` or ``(x, tabular)``).
        target_layers: name → module or list of modules; default :func:`default_target_layers`.
        method: ``"gradcam"`` or ``"gradcam++"``.
        reshape: turns a hooked activation into ``(N, C, d, h, w)``; default: the model's
            ``gradcam_reshape`` if it has one, else the activation as is (it must be 5-D).
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Mapping[str, nn.Module | Sequence[nn.Module]] | None = None,
        method: Method = "gradcam",
        reshape: Callable[[torch.Tensor, tuple[int, int, int]], torch.Tensor] | None = None,
    ) -> None:
        if method not in ("gradcam", "gradcam++"):
            raise ValueError(f"method: expected 'gradcam' or 'gradcam++', got {method!r}")
        self.model = model
        self.method = method
        layers = target_layers if target_layers is not None else default_target_layers(model)
        self.target_layers = {k: list(v) if isinstance(v, Sequence) else [v] for k, v in layers.items()}
        self.reshape = reshape or getattr(model, "gradcam_reshape", None)

    def __call__(
        self,
        x: torch.Tensor,
        tabular: torch.Tensor | None = None,
        class_idx: int | Sequence[int] | torch.Tensor | None = None,
    ) -> CAMResult:
        """Maps for ``x`` ``(N, C_or_S, D, H, W)``; ``class_idx`` defaults to the predicted class."""
        if x.ndim != 5:
            raise ValueError(f"x: expected a 5-D tensor (N, C, D, H, W), got shape {tuple(x.shape)}")
        size = tuple(x.shape[-3:])
        acts: dict[tuple[str, int], torch.Tensor] = {}
        grads: dict[tuple[str, int], torch.Tensor] = {}
        handles = []

        def hook_for(key: tuple[str, int]) -> Callable[..., None]:
            def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
                t = out[0] if isinstance(out, (tuple, list)) else out
                if not t.requires_grad:
                    return
                acts[key] = t
                t.register_hook(lambda g: grads.__setitem__(key, g))

            return hook

        for name, mods in self.target_layers.items():
            for i, m in enumerate(mods):
                handles.append(m.register_forward_hook(hook_for((name, i))))
        try:
            with torch.enable_grad():
                xin = x.detach().requires_grad_(True)  # makes activations require grad even for frozen models
                logits = self.model(xin, tabular) if tabular is not None else self.model(xin)
                if class_idx is None:
                    idx = logits.argmax(dim=-1)
                else:
                    idx = torch.as_tensor(class_idx, device=logits.device).reshape(-1).expand(logits.shape[0])
                score = logits.gather(1, idx.view(-1, 1)).sum()
                self.model.zero_grad(set_to_none=True)
                score.backward()
        finally:
            for h in handles:
                h.remove()
        maps: dict[str, torch.Tensor] = {}
        for name, mods in self.target_layers.items():
            per_layer = []
            for i in range(len(mods)):
                if (name, i) not in acts or (name, i) not in grads:
                    raise RuntimeError(f"target layer {name!r}[{i}] was not reached by the forward/backward pass")
                a, g = acts[(name, i)].detach(), grads[(name, i)].detach()
                if self.reshape is not None:
                    a, g = self.reshape(a, size), self.reshape(g, size)
                m = cam_from_activations(a, g, self.method)
                m = F.interpolate(m.unsqueeze(1), size=size, mode="trilinear", align_corners=False).squeeze(1)
                per_layer.append(_normalise(m))
            maps[name] = torch.stack(per_layer).mean(0)
        return CAMResult(maps=maps, logits=logits.detach(), class_idx=idx.detach())
