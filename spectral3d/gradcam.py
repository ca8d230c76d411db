"""3D Grad-CAM, Grad-CAM++ and LayerCAM for any model; one map per MRI sequence for DeSamba (paper Fig. 6, 7).

For a target layer with activations ``A`` ``(N, C, d, h, w)`` and the gradient ``G`` of the class
logit ``y_c`` with respect to ``A``:

- Grad-CAM (Selvaraju et al. 2017): ``w_k = mean_{d,h,w} G_k``, ``M = ReLU(Σ_k w_k A_k)``.
- Grad-CAM++ (Chattopadhay et al. 2018), exponential-score closed form:
  ``α_k = G_k² / (2 G_k² + Σ_{dhw} A_k G_k³)`` (0 where the denominator is 0),
  ``w_k = Σ_{dhw} α_k ReLU(G_k)``, ``M = ReLU(Σ_k w_k A_k)``.
- LayerCAM (Jiang et al. 2021): ``M = ReLU(Σ_k ReLU(G_k) ⊙ A_k)``, a weight per position.

Each map is upsampled trilinearly (``align_corners=False``) to the input's ``(D, H, W)`` and scaled to
[0, 1] per case (an all-zero map stays zero); the maps of a level's layers are averaged.

A model may define (``backbones3d``'s models do, as needed):

- ``gradcam_target_layers() -> {name: [level, ...]}``: per map name (a sequence, or ``"input"`` for
  early fusion) the candidate levels deepest first, a level being a list of modules (a module or a
  flat list is one level). Default: ``stages`` / ``layers`` / ``blocks`` / ``features`` (else
  ``layer4``), keyed ``"input"``.
- ``gradcam_reshape(tensor, size) -> (N, C, d, h, w)``: a hooked output (channels-last, tokens) laid
  on the grid of an input of ``size`` ``(D, H, W)``.
- ``gradcam_rows() -> {name: (i, step)}``: rows ``i::step`` of a hooked activation belong to ``name``.

*(ours)* The deepest level whose map has at least ``min_grid`` cells per axis and a non-zero gradient
is explained (the last stage is 1³ at 32³, and a class-token head gives the last block's patch tokens
no gradient); ``min_grid=1`` restores "always the last stage". *(ours)* Hooks rather than
``pytorch-grad-cam``: its Grad-CAM++ reduces over two spatial axes, it needs OpenCV, and it takes
single-input models. Whole cases from a checkpoint: :func:`spectral3d.train.explain.gradcam_case`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from spectral3d._lazy import lazy_exports

__all__ = [
    "METHOD_LABELS",
    "CAMResult",
    "GradCAM3d",
    "cam_from_activations",
    "candidate_target_layers",
    "default_target_layers",
    "shared_encoder_rows",
]

# moved: importing them here would import the application and backbones3d
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "gradcam_case": "spectral3d.train.explain",
        "render_gradcam_figure": "spectral3d.train.explain",
        "peak_hit_rates": "spectral3d.metrics",
    },
)

Method = Literal["gradcam", "gradcam++", "layercam"]
METHOD_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "layercam": "LayerCAM"}  # figure titles
Reshape = Callable[[torch.Tensor, tuple[int, int, int]], torch.Tensor]


@dataclass
class CAMResult:
    """Maps ``name -> (N, D, H, W)`` in [0, 1] on the model grid, with the logits and chosen classes.

    Attributes:
        maps: per name (a sequence for DeSamba, ``"input"`` for early fusion); ``logits``: ``(N, K)``;
        class_idx: ``(N,)`` the explained classes; layers: per name, the modules averaged.
    """

    maps: dict[str, torch.Tensor]
    logits: torch.Tensor
    class_idx: torch.Tensor
    layers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def probs(self) -> torch.Tensor:
        """Softmax of the logits, float32 ``(N, K)``."""
        return torch.softmax(self.logits.float(), dim=-1)


def cam_from_activations(activations: torch.Tensor, grads: torch.Tensor, method: Method = "gradcam") -> torch.Tensor:
    """The class-activation map ``(N, d, h, w)`` from activations and gradients ``(N, C, d, h, w)``.

    Example::

        >>> a, g = torch.rand(1, 4, 2, 3, 3), torch.randn(1, 4, 2, 3, 3)
        >>> cam_from_activations(a, g, "gradcam++").shape
        torch.Size([1, 2, 3, 3])
    """
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
    elif method == "layercam":
        weights = F.relu(g)  # per position: keeps where the gradient is, not only how large it is on average
    else:
        raise ValueError(f"method: expected 'gradcam', 'gradcam++' or 'layercam', got {method!r}")
    return F.relu((weights * a).sum(dim=1))


def _normalise(m: torch.Tensor) -> torch.Tensor:
    flat = m.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    scale = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return (m - lo.view(-1, 1, 1, 1)) / scale.view(-1, 1, 1, 1)


def _as_list(v: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    return list(v) if isinstance(v, Sequence) else [v]


def _as_levels(v: nn.Module | Sequence[nn.Module] | Sequence[Sequence[nn.Module]]) -> list[list[nn.Module]]:
    """A hook's value as levels: a module or a flat list is one level, a list of lists is the levels."""
    if isinstance(v, Sequence) and all(isinstance(level, Sequence) for level in v):
        return [list(level) for level in v]
    return [_as_list(v)]


def candidate_target_layers(model: nn.Module) -> dict[str, list[list[nn.Module]]]:
    """Per name, the candidate levels deepest first; each level is a list of modules averaged together.

    The model's ``gradcam_target_layers()``, else its stages; ``ValueError`` for neither.

    Example::

        >>> import backbones3d
        >>> levels = candidate_target_layers(backbones3d.create_model("test_convnextv2_3d"))
        >>> list(levels), len(levels["input"])
        (['input'], 4)
    """
    hook = getattr(model, "gradcam_target_layers", None)
    if hook is not None:
        return {name: _as_levels(v) for name, v in hook().items()}
    for attr in ("stages", "layers", "blocks", "features"):
        seq = getattr(model, attr, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList, list, tuple)) and len(seq):
            return {"input": [[m] for m in reversed(list(seq))]}
    mod = getattr(model, "layer4", None)
    if isinstance(mod, nn.Module):
        return {"input": [[mod]]}
    raise ValueError(
        f"{type(model).__name__}: no default Grad-CAM layer (no gradcam_target_layers(), stages, layers, blocks "
        "or features); pass target_layers explicitly"
    )


def shared_encoder_rows(model: nn.Module) -> dict[str, tuple[int, int]]:
    """The model's ``gradcam_rows()`` (e.g. a DeSamba with one shared encoder), else ``{}``.

    Example::

        >>> import backbones3d
        >>> shared_encoder_rows(backbones3d.create_model("test_desamba_3d"))
        {'t1': (0, 3), 't2': (1, 3), 't2fs': (2, 3)}
    """
    hook = getattr(model, "gradcam_rows", None)
    return dict(hook()) if hook is not None else {}


def default_target_layers(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The deepest candidate level per name (the paper's "last stage"); see :func:`candidate_target_layers`.

    Example::

        >>> import backbones3d
        >>> model = backbones3d.create_model("test_resnet_3d")
        >>> default_target_layers(model)["input"][0] is model.layer4
        True
    """
    return {k: v[0] for k, v in candidate_target_layers(model).items()}


class GradCAM3d:
    """Grad-CAM, Grad-CAM++ or LayerCAM over chosen layers of a 3D model.

    Args:
        model: a registered model (or any module taking ``x`` or ``(x, tabular)``).
        target_layers: name → module or list of modules (averaged); default: the deepest candidate
            stage with at least ``min_grid`` cells per axis (module docstring).
        method: ``"gradcam"``, ``"gradcam++"`` or ``"layercam"`` (named so in the figure).
        reshape: turns a hooked activation into ``(N, C, d, h, w)``, given the input size
            ``(D, H, W)``; default: the model's ``gradcam_reshape``, else the activation as is.
        min_grid: the smallest map (cells per axis) a default layer may have; ignored with explicit
            ``target_layers``.

    Example::

        >>> import torch, backbones3d
        >>> model = backbones3d.create_model("test_vit_3d").eval()
        >>> out = GradCAM3d(model, method="gradcam++")(torch.randn(2, 3, 32, 32, 32), class_idx=1)
        >>> out.maps["input"].shape, out.class_idx.tolist()
        (torch.Size([2, 32, 32, 32]), [1, 1])
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Mapping[str, nn.Module | Sequence[nn.Module]] | None = None,
        method: Method = "gradcam",
        reshape: Reshape | None = None,
        min_grid: int = 4,
    ) -> None:
        if method not in ("gradcam", "gradcam++", "layercam"):
            raise ValueError(f"method: expected 'gradcam', 'gradcam++' or 'layercam', got {method!r}")
        if not isinstance(min_grid, int) or min_grid < 1:
            raise ValueError(f"min_grid: expected a positive int (cells per axis), got {min_grid!r}")
        self.model = model
        self.method = method
        self.min_grid = min_grid
        self.explicit = target_layers is not None
        if target_layers is not None:
            self.levels = {k: [_as_list(v)] for k, v in target_layers.items()}
        else:
            self.levels = candidate_target_layers(model)
        self._rows = {} if self.explicit else shared_encoder_rows(model)
        self.reshape = reshape or getattr(model, "gradcam_reshape", None)
        self._names = {m: n for n, m in model.named_modules()}

    @property
    def target_layers(self) -> dict[str, list[nn.Module]]:
        """The deepest level per name (the layers used when they pass the ``min_grid`` rule)."""
        return {k: v[0] for k, v in self.levels.items()}

    def __call__(
        self,
        x: torch.Tensor,
        tabular: torch.Tensor | None = None,
        class_idx: int | Sequence[int] | torch.Tensor | None = None,
    ) -> CAMResult:
        """Maps for ``x`` ``(N, C_or_S, D, H, W)``; ``class_idx`` defaults to the predicted class."""
        if not isinstance(x, torch.Tensor) or x.ndim != 5:
            raise ValueError(f"x: expected a 5-D tensor (N, C, D, H, W), got shape {tuple(getattr(x, 'shape', ()))}")
        size: tuple[int, int, int] = tuple(x.shape[-3:])  # type: ignore[assignment]
        acts: dict[nn.Module, torch.Tensor] = {}
        grads: dict[nn.Module, torch.Tensor] = {}
        handles = []

        def hook(module: nn.Module, _inp: Any, out: Any) -> None:
            t = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(t, torch.Tensor) and t.requires_grad:
                acts[module] = t
                t.register_hook(lambda g: grads.__setitem__(module, g))

        modules = {m for levels in self.levels.values() for level in levels for m in level}
        handles = [m.register_forward_hook(hook) for m in modules]
        try:
            with torch.enable_grad():
                xin = x.detach().requires_grad_(True)  # activations require grad even for a frozen model
                logits = self.model(xin, tabular) if tabular is not None else self.model(xin)
                if class_idx is None:
                    idx = logits.argmax(dim=-1)
                else:
                    idx = torch.as_tensor(class_idx, device=logits.device).reshape(-1).expand(logits.shape[0])
                    if int(idx.min()) < 0 or int(idx.max()) >= logits.shape[-1]:
                        raise ValueError(f"class_idx: expected classes in [0, {logits.shape[-1]}), got {idx.tolist()}")
                score = logits.gather(1, idx.view(-1, 1)).sum()
                self.model.zero_grad(set_to_none=True)
                score.backward()
        finally:
            for h in handles:
                h.remove()

        maps: dict[str, torch.Tensor] = {}
        used: dict[str, list[str]] = {}
        for name, levels in self.levels.items():
            chosen = self._choose(name, levels, acts, grads, size)
            per_layer = []
            for a, g in chosen.values():
                m = cam_from_activations(a, g, self.method)
                m = F.interpolate(m.unsqueeze(1), size=size, mode="trilinear", align_corners=False).squeeze(1)
                per_layer.append(_normalise(m))
            maps[name] = torch.stack(per_layer).mean(0)
            used[name] = [self._names.get(m, type(m).__name__) for m in chosen]
        return CAMResult(maps=maps, logits=logits.detach(), class_idx=idx.detach(), layers=used)

    def _choose(
        self,
        name: str,
        levels: list[list[nn.Module]],
        acts: dict[nn.Module, torch.Tensor],
        grads: dict[nn.Module, torch.Tensor],
        size: tuple[int, int, int],
    ) -> dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
        """The level to explain for ``name``: the deepest passing the ``min_grid`` and non-zero-gradient rules."""
        fallback = None
        for level in levels:
            pairs = {}
            for m in level:
                if m not in acts or m not in grads:
                    if self.explicit:
                        raise RuntimeError(
                            f"target layer {name!r} ({self._names.get(m, type(m).__name__)}) was not reached by "
                            "the forward/backward pass"
                        )
                    break
                a, g = acts[m].detach(), grads[m].detach()
                if self.reshape is not None:
                    a, g = self.reshape(a, size), self.reshape(g, size)
                if name in self._rows:
                    i, n_seq = self._rows[name]
                    a, g = a[i::n_seq], g[i::n_seq]
                pairs[m] = (a, g)
            else:
                if self.explicit:
                    return pairs
                if any(bool(g.any()) for _, g in pairs.values()):
                    grid = min(min(a.shape[-3:]) for a, _ in pairs.values())
                    if grid >= min(self.min_grid, *size):
                        return pairs
                    fallback = pairs  # levels run deepest first: this ends as the largest grid
        if fallback is not None:
            return fallback
        raise RuntimeError(
            f"Grad-CAM {name!r}: no candidate layer of {type(self.model).__name__} received a gradient from the "
            "class score; pass target_layers explicitly"
        )
