"""Building registered models: ``create_model``, ``build_model_with_cfg`` and local-weights loading.

Every entry point ends in ``build_model_with_cfg``: the class (no injected defaults), ``model.pretrained_cfg`` (config,
overlays, ``architecture``, what was built) and, with ``pretrained=True``, the local ``file``; loading adapts
``in_chans``, drops a classifier of another shape (as timm), and raises on any other missing or mis-shaped key.

- *(ours)* weights never come from the network and never silently stay random: without a ``file`` the call raises.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from backbones3d._registry import get_pretrained_cfg, is_model, model_entrypoint, unknown_model_error

__all__ = ["adapt_input_conv_3d", "build_model_with_cfg", "create_model", "load_pretrained", "load_state_dict_file"]

M = TypeVar("M", bound=nn.Module)
StateDict = dict[str, torch.Tensor]

# Keyword arguments timm.create_model passes to every entry point that no model here takes.
_TIMM_PASSTHROUGH_KWARGS = ("cache_dir",)


def create_model(
    model_name: str,
    pretrained: bool = False,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model by name.

    Args:
        model_name: a name from :func:`backbones3d.list_models`.
        pretrained, pretrained_cfg_overlay: load the local ``file`` (:func:`load_pretrained`); config overrides.
        **kwargs: constructor arguments; those set to ``None`` are dropped, as timm does.

    Raises:
        ValueError: unknown name (the message suggests close names); ``pretrained=True`` without a file.

    Example::

        >>> create_model("test_mambaout_3d", num_classes=3)(torch.randn(1, 3, 16, 16, 16)).shape
        torch.Size([1, 3])
    """
    if not is_model(model_name):
        raise unknown_model_error(model_name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return model_entrypoint(model_name)(pretrained=pretrained, pretrained_cfg_overlay=pretrained_cfg_overlay, **kwargs)


def _merge_cfg(variant: str, pretrained_cfg: Any, overlay: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = get_pretrained_cfg(variant)
    if isinstance(pretrained_cfg, str):
        if pretrained_cfg:
            raise ValueError(
                f"pretrained_cfg: {variant!r} has no pretrained tag {pretrained_cfg!r}; backbones3d models have "
                "no tags, pass weights with pretrained_cfg_overlay=dict(file=...)"
            )
    elif pretrained_cfg is not None:
        # A timm PretrainedCfg (or a dict): its set values override ours; our extra keys survive.
        given = pretrained_cfg.to_dict() if hasattr(pretrained_cfg, "to_dict") else dict(pretrained_cfg)
        cfg.update({k: v for k, v in given.items() if v is not None})
    if overlay:
        cfg.update(copy.deepcopy(dict(overlay)))
    return cfg


def build_model_with_cfg(
    model_cls: Callable[..., M],
    variant: str,
    pretrained: bool = False,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    *,
    pretrained_filter_fn: Callable[[StateDict, nn.Module], StateDict] | None = None,
    **kwargs: Any,
) -> M:
    """Instantiate ``model_cls(**kwargs)``, attach its config (``pretrained_cfg``, alias ``default_cfg``), load weights.

    Args:
        model_cls: the model class (or any callable returning an ``nn.Module``).
        variant: the registered name whose config applies.
        pretrained, pretrained_cfg_overlay: as in :func:`create_model`.
        pretrained_filter_fn: ``fn(state_dict, model) -> state_dict`` applied to a loaded file before adaptation.
        **kwargs: constructor arguments; timm's ``pretrained_cfg`` is merged under the overlay, ``cache_dir`` dropped.

    Example::

        >>> from backbones3d.mambaout3d import MambaOut3d
        >>> model = build_model_with_cfg(MambaOut3d, "test_mambaout_3d", depths=(1,) * 4, dims=(8,) * 4, in_chans=2)
        >>> model.pretrained_cfg["input_size"][0]
        2
    """
    pretrained_cfg = kwargs.pop("pretrained_cfg", None)
    for key in _TIMM_PASSTHROUGH_KWARGS:
        kwargs.pop(key, None)
    cfg = _merge_cfg(variant, pretrained_cfg, pretrained_cfg_overlay)
    cfg["architecture"] = variant
    model = model_cls(**kwargs)

    in_chans = int(getattr(model, "in_chans", kwargs.get("in_chans", cfg["input_size"][0])))
    if "sequences" in cfg and hasattr(model, "sequences"):
        cfg["sequences"] = list(model.sequences)
        in_chans = len(cfg["sequences"])
    if "num_tabular" in cfg and hasattr(model, "num_tabular"):
        cfg["num_tabular"] = int(model.num_tabular)
    cfg["input_size"] = (in_chans, *tuple(cfg["input_size"])[1:])
    if hasattr(model, "num_classes"):
        cfg["num_classes"] = int(model.num_classes)
    model.pretrained_cfg = cfg
    model.default_cfg = cfg

    if pretrained:
        load_pretrained(model, cfg, filter_fn=pretrained_filter_fn)
    return model


def load_state_dict_file(path: str | Path) -> StateDict:
    """Read a state dict (unwrapping ``{"state_dict"|"model": ...}``) from ``.safetensors`` or a torch file, on CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {str(path)!r}")
    if path.suffix == ".safetensors":
        import safetensors.torch

        state = safetensors.torch.load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping):
            for wrapper in ("state_dict", "model"):
                if isinstance(state.get(wrapper), Mapping):
                    state = state[wrapper]
                    break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TypeError(f"{str(path)!r}: expected a mapping of parameter names to tensors (a state dict)")
    return dict(state)


def adapt_input_conv_3d(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """Adapt a first-conv weight ``(O, I, *kernel)`` to ``in_chans`` (timm's rule: 1 sums over ``I``; else tile, cut,
    scale by ``I / in_chans``)."""
    if in_chans < 1:
        raise ValueError(f"in_chans: expected a positive channel count, got {in_chans}")
    if weight.ndim < 3:
        raise ValueError(f"weight: expected a conv weight (O, I, *kernel), got shape {tuple(weight.shape)}")
    base = weight.shape[1]
    if in_chans == base:
        return weight
    w = weight.to(torch.promote_types(weight.dtype, torch.float32))
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        repeats = math.ceil(in_chans / base)
        w = w.repeat(1, repeats, *([1] * (w.ndim - 2)))[:, :in_chans] * (base / in_chans)
    return w.to(weight.dtype)


def _names(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def load_pretrained(
    model: nn.Module,
    pretrained_cfg: Mapping[str, Any] | None = None,
    filter_fn: Callable[[StateDict, nn.Module], StateDict] | None = None,
) -> None:
    """Load ``pretrained_cfg["file"]`` into ``model``, adapting ``in_chans`` and ``num_classes``.

    Args:
        model: the model to fill (its ``pretrained_cfg`` is used when none is given).
        pretrained_cfg: needs ``file``, ``first_conv``, ``classifier``.
        filter_fn: ``fn(state_dict, model) -> state_dict`` applied first.

    Raises:
        ValueError: no ``file`` in the config, or a first-conv weight that cannot be adapted.
        RuntimeError: missing, unexpected or mis-shaped keys other than the adapted ones.

    Example::

        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/w.pth"; torch.save(create_model("test_mambaout_3d").state_dict(), path)
        >>> model = create_model("test_mambaout_3d", pretrained=True, in_chans=1, pretrained_cfg_overlay={"file": path})
    """
    cfg = dict(pretrained_cfg if pretrained_cfg is not None else getattr(model, "pretrained_cfg", {}))
    file = cfg.get("file")
    if not file:
        name = cfg.get("architecture") or type(model).__name__
        raise ValueError(
            f"pretrained=True but {name} has no local weights file: pass pretrained_cfg_overlay=dict(file="
            "'weights.safetensors') (backbones3d downloads nothing and never falls back to random weights)"
        )
    state = load_state_dict_file(file)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()

    for conv in _names(cfg.get("first_conv")):
        key = f"{conv}.weight"
        if key not in state or key not in own:
            where = "the file" if key not in state else "the model"
            raise RuntimeError(f"{file}: first_conv weight {key!r} is missing from {where}")
        src, dst = state[key], own[key]
        if src.shape != dst.shape:
            if src.shape[0] != dst.shape[0] or src.shape[2:] != dst.shape[2:]:
                raise ValueError(
                    f"{file}: first_conv {key!r} has shape {tuple(src.shape)}; only the input-channel axis can be "
                    f"adapted to the model's {tuple(dst.shape)}"
                )
            state[key] = adapt_input_conv_3d(dst.shape[1], src)

    dropped: set[str] = set()
    for head in _names(cfg.get("classifier")):
        for key in (f"{head}.weight", f"{head}.bias"):
            if key in state and (key not in own or own[key].shape != state[key].shape):
                del state[key]
                dropped.add(key)

    mis_shaped = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = sorted(set(own) - set(state) - dropped)
    unexpected = sorted(set(state) - set(own))
    if mis_shaped or missing or unexpected:
        raise RuntimeError(
            f"{file}: cannot load into {type(model).__name__}: mis-shaped {mis_shaped}, missing {missing}, "
            f"unexpected {unexpected}"
        )
    model.load_state_dict(state, strict=False)
