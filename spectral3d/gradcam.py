"""3D Grad-CAM and Grad-CAM++ for any registered model, one map per MRI sequence for DeSamba (paper Fig. 6, 7).

For a target layer with activations ``A`` of shape ``(N, C, d, h, w)`` and the gradient ``G`` of the
chosen class score ``y_c`` (the logit, before softmax) with respect to ``A``:

- Grad-CAM (Selvaraju et al. 2017): ``w_k = mean_{d,h,w} G_k``, ``M = ReLU(Σ_k w_k A_k)``.
- Grad-CAM++ (Chattopadhay et al. 2018), with the exponential-score closed form:
  ``α_k = G_k² / (2 G_k² + Σ_{dhw} A_k G_k³)`` (0 where the denominator is 0),
  ``w_k = Σ_{dhw} α_k ReLU(G_k)``, ``M = ReLU(Σ_k w_k A_k)``.
- LayerCAM (Jiang et al. 2021): ``M = ReLU(Σ_k ReLU(G_k) ⊙ A_k)``, a weight per position, so a map
  at a shallow stage keeps where the gradient arrives (``method="layercam"``).

Each map is upsampled trilinearly (``align_corners=False``) to the input's ``(D, H, W)`` (the model
grid) and scaled to [0, 1] per case (a map that is zero everywhere stays zero). When a name has
several target layers (DeSamba's SAMNet and MambaOut3d stages of one sequence), their normalised
maps are averaged: the paper's "channel-aggregated" map per sequence.

**Which layer** (:func:`candidate_target_layers`). A model's own ``gradcam_target_layers()`` if it
has one. Otherwise every stage of the model, deepest first, keyed by name:

- DeSamba (one encoder per sequence): per sequence ``i``, the stage pairs
  ``[encoders[i].cnn.stages[k], encoders[i].mamba.stages[k]]`` (whichever encoders the ablation row
  has), keyed by the sequence name: one map per sequence. With ``share_encoders=True`` the one
  encoder runs the ``S`` sequences as a batch of ``N·S`` volumes; each sequence's map is computed
  from its rows of that batch (:func:`shared_encoder_rows`), so the result is the same as with a
  copy of the encoder per sequence (tested).
- any other model: ``stages`` / ``layers`` / ``blocks`` / ``features``, keyed ``"input"`` (early
  fusion: one map for all sequences).

At call time every candidate is hooked and the **deepest stage whose map has at least ``min_grid``
cells on every axis, and a gradient that is not identically zero,** is explained *(ours)*. The paper
explains the last stage; at its input (64 × 96 × 96) that map is 2 × 3 × 3, and at the tiny models'
32³ it is 1 × 1 × 1, a constant that says nothing about position. Trilinear upsampling of a 2-cell
axis leaves both outer quarters constant, so a map needs about 4 cells per axis to place a lesion
(``min_grid=4`` by default; ``min_grid=1`` restores "always the last stage"). The zero-gradient rule
matters for class-token models: the last block's patch tokens do not reach a class-token head, so
their gradient is exactly zero and the block before is used. :attr:`CAMResult.layers` names the
modules used.

**Layouts.** Stage outputs are brought to ``(N, C, d, h, w)``: CNN stages are already so;
Swin-V2 stages are channels-last ``(N, d, h, w, C)`` and are permuted; ViT and Vim blocks emit
tokens ``(N, L, C)``: the class token is dropped (ViT: the first ``num_prefix_tokens``; Vim: the
middle one, at ``prod(grid) // 2``) and the patch tokens are laid back on the patch grid
``model.patch_embed.grid_size(input size)`` (tokens are flattened in ``D, H, W`` order in both).
A ``reshape`` callable overrides this for other models.

**On the source grid** (:func:`gradcam_case`): the model-grid maps go back onto each sequence's
original file with the loader's inverse transform (:meth:`spectral3d.data.LoadedCase.to_source_nifti`),
so that each NIfTI opens over its source image in any viewer; a PNG shows three orthogonal slices.

Why hooks and not a CAM library *(ours)*: ``pytorch-grad-cam``'s Grad-CAM handles 5-D activations,
but its Grad-CAM++ and other methods reduce over two spatial axes only, it adds OpenCV as a runtime
dependency, and it assumes single-input models — DeSamba takes ``(x, tabular)`` and needs one map per
sequence. Forward hooks and tensor hooks are all that is required.

Example::

    >>> import torch, backbones3d
    >>> from spectral3d.gradcam import GradCAM3d
    >>> model = backbones3d.create_model("test_resnet_3d").eval()
    >>> cam = GradCAM3d(model)
    >>> out = cam(torch.randn(1, 3, 32, 32, 32))
    >>> out.maps["input"].shape, out.layers["input"]
    (torch.Size([1, 32, 32, 32]), ['layer2'])
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "METHOD_LABELS",
    "CAMResult",
    "GradCAM3d",
    "cam_from_activations",
    "candidate_target_layers",
    "default_target_layers",
    "gradcam_case",
    "peak_hit_rates",
    "render_gradcam_figure",
    "shared_encoder_rows",
]

Method = Literal["gradcam", "gradcam++", "layercam"]
METHOD_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "layercam": "LayerCAM"}  # figure titles
Reshape = Callable[[torch.Tensor, tuple[int, int, int]], torch.Tensor]


@dataclass
class CAMResult:
    """Maps ``name -> (N, D, H, W)`` in [0, 1] on the model grid, with the logits and chosen classes.

    Attributes:
        maps: per name (a sequence name for DeSamba, ``"input"`` for early-fusion models).
        logits: ``(N, K)``.
        class_idx: ``(N,)`` the explained class of each case.
        layers: per name, the qualified names of the modules whose maps were averaged.
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


def peak_hit_rates(maps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> dict[str, float]:
    """How often a map's maximum falls inside its own case's mask, against two baselines.

    Args:
        maps: ``(N, D, H, W)`` saliency maps (e.g. :attr:`CAMResult.maps` of one name), ``N >= 2``.
        masks: ``(N, D, H, W)`` booleans, the region that counts as a hit for each case (e.g. the
            lesion ROI, dilated by the tolerance you allow).

    Returns:
        ``{"hit": ..., "other_cases": ..., "random": ...}``: the share of cases whose map maximum
        lies in their own mask; the share of (case, other case) pairs whose maximum lies in the
        *other* case's mask — what any fixed spatial bias of the maps (towards the centre, the
        border, an organ) scores, so only maps that follow each case's lesion beat it; and the
        mean mask volume fraction — what a uniformly random maximum scores.

    Example::

        >>> masks = torch.zeros(2, 4, 4, 4, dtype=torch.bool)
        >>> masks[0, :2], masks[1, 2:] = True, True
        >>> maps = masks.float() + 0.1 * torch.rand(2, 4, 4, 4)
        >>> peak_hit_rates(maps, masks)
        {'hit': 1.0, 'other_cases': 0.0, 'random': 0.5}
    """
    maps_np, masks_np = np.asarray(maps), np.asarray(masks)
    if maps_np.ndim != 4 or masks_np.shape != maps_np.shape:
        raise ValueError(
            f"maps, masks: expected two arrays of one shape (N, D, H, W), got {maps_np.shape} and {masks_np.shape}"
        )
    if masks_np.dtype != np.bool_:
        raise TypeError(f"masks: expected booleans, got dtype {masks_np.dtype}")
    n = len(maps_np)
    if n < 2:
        raise ValueError(f"maps: expected at least 2 cases (the second baseline pairs cases), got {n}")
    peaks = [np.unravel_index(int(np.argmax(m)), m.shape) for m in maps_np]
    hits = np.array([[bool(masks_np[j][peaks[i]]) for j in range(n)] for i in range(n)])
    return {
        "hit": float(np.diag(hits).mean()),
        "other_cases": float(hits[~np.eye(n, dtype=bool)].mean()),
        "random": float(masks_np.reshape(n, -1).mean(1).mean()),
    }


def _normalise(m: torch.Tensor) -> torch.Tensor:
    flat = m.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    scale = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return (m - lo.view(-1, 1, 1, 1)) / scale.view(-1, 1, 1, 1)


def _as_list(v: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    return list(v) if isinstance(v, Sequence) else [v]


def candidate_target_layers(model: nn.Module) -> dict[str, list[list[nn.Module]]]:
    """Per name, the candidate levels deepest first; each level is a list of modules averaged together.

    See the module docstring. A DeSamba with ``share_encoders=True`` gets the shared encoder's stages
    under every sequence name (its one encoder runs the sequences as one batch of ``N·S`` volumes;
    :class:`GradCAM3d` takes each sequence's rows, :func:`shared_encoder_rows`). Raises ``ValueError``
    for a model with no known stages.

    Example::

        >>> import backbones3d
        >>> levels = candidate_target_layers(backbones3d.create_model("test_convnextv2_3d"))
        >>> list(levels), len(levels["input"])
        (['input'], 4)
    """
    if hasattr(model, "gradcam_target_layers"):
        return {k: [_as_list(v)] for k, v in model.gradcam_target_layers().items()}
    encoders, sequences = getattr(model, "encoders", None), getattr(model, "sequences", None)
    if isinstance(encoders, nn.ModuleDict) and sequences is not None:
        shared = bool(shared_encoder_rows(model))
        if not shared and set(sequences) - set(encoders.keys()):
            raise ValueError(
                f"{type(model).__name__}: no encoder for the sequences {sorted(set(sequences) - set(encoders))} "
                f"(encoders: {list(encoders.keys())}); pass target_layers explicitly"
            )
        out: dict[str, list[list[nn.Module]]] = {}
        for name in sequences:
            encoder = encoders["shared" if shared else name]
            stage_lists = [
                list(branch.stages)
                for branch in (getattr(encoder, "cnn", None), getattr(encoder, "mamba", None))
                if branch is not None
            ]
            depth = min(len(s) for s in stage_lists)
            out[name] = [[s[len(s) - depth + k] for s in stage_lists] for k in reversed(range(depth))]
        return out
    for attr in ("stages", "layers", "blocks", "features"):
        seq = getattr(model, attr, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList, list, tuple)) and len(seq):
            return {"input": [[m] for m in reversed(list(seq))]}
    for attr in ("layer4",):
        mod = getattr(model, attr, None)
        if isinstance(mod, nn.Module):
            return {"input": [[mod]]}
    raise ValueError(
        f"{type(model).__name__}: no default Grad-CAM layer (no gradcam_target_layers(), stages, layers, blocks "
        "or features); pass target_layers explicitly"
    )


def shared_encoder_rows(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{sequence: (i, S)}`` for a DeSamba whose one encoder runs all ``S`` sequences, else ``{}``.

    Its stages see the batch ``x.reshape(N * S, 1, D, H, W)``, so sequence ``i`` of case ``n`` is row
    ``n * S + i``: the rows ``i::S`` of a hooked activation belong to sequence ``i``.

    Example::

        >>> import backbones3d
        >>> shared_encoder_rows(backbones3d.create_model("test_desamba_3d"))
        {'t1': (0, 3), 't2': (1, 3), 't2fs': (2, 3)}
    """
    config, sequences = getattr(model, "config", None), getattr(model, "sequences", None)
    if not getattr(config, "share_encoders", False) or sequences is None:
        return {}
    return {name: (i, len(sequences)) for i, name in enumerate(sequences)}


def default_target_layers(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The deepest candidate level per name (the paper's "last stage"); see :func:`candidate_target_layers`.

    Example::

        >>> import backbones3d
        >>> model = backbones3d.create_model("test_resnet_3d")
        >>> default_target_layers(model)["input"][0] is model.layer4
        True
    """
    return {k: v[0] for k, v in candidate_target_layers(model).items()}


def _default_reshape(model: nn.Module) -> Reshape | None:
    """The layout adapter for a model's stage outputs (module docstring), ``None`` for channels-first."""
    from backbones3d.swinv2_3d import SwinTransformerV2_3d
    from backbones3d.vim3d import VisionMamba3d
    from backbones3d.vit3d import VisionTransformer3d

    if isinstance(model, SwinTransformerV2_3d):
        return lambda t, size: t.permute(0, 4, 1, 2, 3) if t.ndim == 5 else t
    if isinstance(model, (VisionTransformer3d, VisionMamba3d)):
        middle = isinstance(model, VisionMamba3d)

        def tokens_to_grid(t: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
            grid = tuple(model.patch_embed.grid_size(size))
            n_patch = math.prod(grid)
            if t.ndim != 3 or t.shape[1] != n_patch + 1:
                raise ValueError(
                    f"{type(model).__name__}: expected tokens (N, {n_patch} + 1, C) for patch grid {grid}, "
                    f"got {tuple(t.shape)}"
                )
            cls_at = n_patch // 2 if middle else 0
            patches = torch.cat([t[:, :cls_at], t[:, cls_at + 1 :]], dim=1)
            return patches.transpose(1, 2).reshape(t.shape[0], t.shape[2], *grid)

        return tokens_to_grid
    return None


class GradCAM3d:
    """Grad-CAM / Grad-CAM++ over chosen layers of a 3D model.

    Args:
        model: a registered model (or any module taking ``x`` or ``(x, tabular)``).
        target_layers: name → module or list of modules (averaged); default: the deepest candidate
            stage with at least ``min_grid`` cells per axis (module docstring).
        method: ``"gradcam"``, ``"gradcam++"`` or ``"layercam"`` (named so in the figure).
        reshape: turns a hooked activation into ``(N, C, d, h, w)``, given the input size
            ``(D, H, W)``; default: the model's ``gradcam_reshape`` if it has one, else the built-in
            adapters (Swin-V2 channels-last, ViT/Vim tokens), else the activation as is.
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
        # a shared DeSamba encoder: which rows of its (N·S)-batch activations belong to which sequence
        self._rows = {} if self.explicit else shared_encoder_rows(model)
        self.reshape = reshape or getattr(model, "gradcam_reshape", None) or _default_reshape(model)
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


# ----- one case, from a checkpoint, onto the source grids -------------------------------------------


def gradcam_case(
    checkpoint: str | os.PathLike,
    case_dir: str | os.PathLike,
    out: str | os.PathLike,
    method: Method = "gradcam",
    target_class: str | None = None,
    tabular_csv: str | os.PathLike | None = None,
    min_grid: int = 4,
) -> dict[str, Any]:
    """Grad-CAM of one case folder with a checkpoint: NIfTI maps on the source grids, a PNG and a JSON.

    The case is loaded with the checkpoint's preprocessing (its sequences, ROI crop when the folder has
    ``roi.nii.gz``); clinical values come from ``tabular_csv`` (standardised with the checkpoint's
    statistics) or are all missing. DeSamba gives one map per sequence; an early-fusion baseline gives
    one map for the fused input, written for every sequence, and the figure says so.

    Args:
        checkpoint: a checkpoint directory or a run directory (its best, else last checkpoint).
        case_dir: a folder holding ``<sequence>.nii.gz`` per sequence and optionally ``roi.nii.gz``.
        out: the output folder (created).
        method: ``"gradcam"``, ``"gradcam++"`` or ``"layercam"`` (named so in the figure).
        target_class: the class name to explain; default the predicted class.
        tabular_csv: CSV with a ``case_id`` column (the folder's name) and the clinical columns.
        min_grid: see :class:`GradCAM3d`.

    Returns:
        ``{"case_id", "predicted", "probability", "explained_class", "probabilities", "layers", "files"}``;
        ``files`` lists ``out/gradcam_<sequence>.nii.gz`` (each on that sequence's original grid: same
        shape and affine as its file), ``out/gradcam.png`` and ``out/gradcam.json``.

    Example::

        >>> res = gradcam_case("runs/desamba/best", "cohort/case003", "cam/")   # doctest: +SKIP
        >>> res["predicted"], [Path(f).name for f in res["files"]]               # doctest: +SKIP
        ('tuberculous', ['gradcam_t1.nii.gz', 'gradcam_t2fs.nii.gz', 'gradcam.png', 'gradcam.json'])
    """
    import nibabel as nib

    from spectral3d.data import PreprocessConfig, TabularStats, find_case_files, load_case, read_clinical_table
    from spectral3d.train.workflow import load_checkpoint_model

    model, config = load_checkpoint_model(checkpoint)
    class_names: list[str] = list(config["class_names"])
    sequences: list[str] = list(config["sequences"])
    case_dir = Path(case_dir)
    case_id = case_dir.name
    files, roi = find_case_files(case_dir, sequences)
    loaded = load_case(files, roi=roi, config=PreprocessConfig.from_dict(config["preprocess"]), case_id=case_id)

    x = torch.from_numpy(np.ascontiguousarray(loaded.volume, dtype=np.float32)).unsqueeze(0)
    tabular, from_csv = None, False
    if "sequences" in getattr(model, "pretrained_cfg", {}) and config.get("clinical_columns"):
        stats = TabularStats.from_dict(config["tabular_stats"])
        columns = config["clinical_columns"]
        table = read_clinical_table(tabular_csv, columns) if tabular_csv is not None else {}
        values, from_csv = table.get(case_id, [math.nan] * len(columns)), case_id in table
        tabular = torch.from_numpy(stats.transform(values)).unsqueeze(0)
    class_idx = None
    if target_class is not None:
        if target_class not in class_names:
            raise ValueError(f"target_class: expected one of {class_names}, got {target_class!r}")
        class_idx = class_names.index(target_class)

    result = GradCAM3d(model, method=method, min_grid=min_grid)(x, tabular, class_idx)
    probs = result.probs[0]
    pred = int(probs.argmax())
    explained = class_names[int(result.class_idx[0])]
    per_sequence = {seq: result.maps[seq if seq in result.maps else "input"][0].numpy() for seq in sequences}

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for seq, cam in per_sequence.items():
        path = out / f"gradcam_{seq}.nii.gz"
        img = loaded.to_source_nifti(cam, seq)
        img.header.set_intent("estimate", name="Grad-CAM")
        nib.save(img, path)
        written.append(str(path))
    label = METHOD_LABELS[method]
    fused = "input" in result.maps  # early fusion: one map for all sequences
    title = (
        f"{case_id}: predicted {class_names[pred]} (p = {float(probs[pred]):.2f}); "
        f"{label} for {explained} — {config['model']}"
        + (f"\none {label} map for the fused input (early fusion), the same in every row" if fused else "")
    )
    png = out / "gradcam.png"
    render_gradcam_figure(loaded.volume, per_sequence, sequences, loaded.roi, title, png, map_label=label)
    written.append(str(png))
    summary = {
        "case_id": case_id,
        "predicted": class_names[pred],
        "probability": float(probs[pred]),
        "explained_class": explained,
        "probabilities": dict(zip(class_names, map(float, probs))),
        "method": method,
        "title": title,
        "layers": result.layers,
        "model": config["model"],
        "clinical_from_csv": from_csv,
    }
    (out / "gradcam.json").write_text(json.dumps(summary, indent=2) + "\n")
    written.append(str(out / "gradcam.json"))
    return {**summary, "files": written}


def render_gradcam_figure(
    volume: np.ndarray,
    maps: Mapping[str, np.ndarray],
    sequences: Sequence[str],
    roi: np.ndarray | None,
    title: str,
    path: str | os.PathLike,
    centre: Sequence[int] | None = None,
    map_label: str = "Grad-CAM",
) -> tuple[int, int, int]:
    """Save the figure of paper Fig. 6/7: per sequence, three planes × (image, map, overlay), ROI contour.

    Everything is on the model grid ``(D, H, W)`` = (inferior→superior, posterior→anterior,
    left→right), shown in neurological convention (patient's right on the right). The slices cross
    at ``centre``: default the ROI centroid, else the maximum of the mean map.

    Args:
        volume: ``(S, D, H, W)`` the preprocessed images.
        maps: per sequence ``(D, H, W)`` in [0, 1].
        sequences: the names, in ``volume``'s order.
        roi: ``(D, H, W)`` bool or ``None``.
        title: the figure title.
        path: the PNG to write.
        centre: ``(d, h, w)`` to cut through.
        map_label: the method's name, over the map columns (``METHOD_LABELS``).

    Returns:
        The ``(d, h, w)`` the slices cross at.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # a bare Figure on an Agg canvas: no pyplot state, no display

    if volume.ndim != 4 or volume.shape[0] != len(sequences):
        raise ValueError(f"volume: expected (S={len(sequences)}, D, H, W), got {volume.shape}")
    if centre is None:
        if roi is not None and roi.any():
            centre = tuple(int(round(c)) for c in np.argwhere(roi).mean(0))
        else:
            mean_map = np.mean([maps[s] for s in sequences], axis=0)
            centre = tuple(int(i) for i in np.unravel_index(int(np.argmax(mean_map)), mean_map.shape))
    d, h, w = centre
    planes = [  # name, slicer, (vertical, horizontal) axis labels
        ("axial", lambda v: v[d], ("P", "A", "L", "R")),
        ("coronal", lambda v: v[:, h], ("I", "S", "L", "R")),
        ("sagittal", lambda v: v[:, :, w], ("I", "S", "P", "A")),
    ]
    n_rows, n_cols = len(sequences), 3 * len(planes)
    fig = Figure(figsize=(1.55 * n_cols + 0.9, 1.75 * n_rows + 0.9), dpi=110)
    grid = fig.add_gridspec(n_rows, n_cols, wspace=0.04, hspace=0.1, left=0.06, right=0.93, top=0.8, bottom=0.02)
    mappable = None
    for r, seq in enumerate(sequences):
        img, cam = volume[r], maps[seq]
        lo, hi = np.percentile(img, (1, 99))
        for p, (plane, cut, (v0, v1, h0, h1)) in enumerate(planes):
            img2, cam2 = cut(img), cut(cam)
            roi2 = cut(roi) if roi is not None else None
            for k, kind in enumerate(("image", map_label, "overlay")):
                ax = fig.add_subplot(grid[r, 3 * p + k])
                ax.set_xticks([])
                ax.set_yticks([])
                if kind != map_label:
                    ax.imshow(img2, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
                if kind != "image":
                    shown = ax.imshow(
                        cam2,
                        cmap="jet",
                        vmin=0,
                        vmax=1,
                        origin="lower",
                        alpha=0.45 if kind == "overlay" else 1.0,
                        interpolation="bilinear",
                    )
                    mappable = shown if kind == map_label else mappable
                if roi2 is not None and roi2.any() and kind != map_label:
                    ax.contour(roi2.astype(float), levels=[0.5], colors="lime", linewidths=1.0, origin="lower")
                if r == 0:
                    ax.set_title(f"{plane}\n{kind}" if k == 1 else kind, fontsize=8)
                if k == 0 and p == 0:
                    ax.set_ylabel(seq, fontsize=10, fontweight="bold")
                if k == 0 and r == n_rows - 1:
                    ax.text(0.02, 0.02, f"{h0}→{h1}, {v0}→{v1}", transform=ax.transAxes, fontsize=6, color="yellow")
    if mappable is not None:
        cax = fig.add_axes((0.945, 0.1, 0.012, 0.6))
        fig.colorbar(mappable, cax=cax).ax.tick_params(labelsize=7)
    roi_note = "ROI contour in green" if roi is not None else "no ROI"
    fig.suptitle(f"{title}\nslices through (d, h, w) = {tuple(centre)} of the model grid; {roi_note}", fontsize=10)
    FigureCanvasAgg(fig)
    fig.savefig(path)
    return tuple(centre)  # type: ignore[return-value]
