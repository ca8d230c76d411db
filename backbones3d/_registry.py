"""The model registry: names → entry points and pretrained configs, mirrored into timm's registry.

:func:`register_model` records an entry point, its family (its module's last name) and ``default_cfgs`` entry here
and in timm; a missing config or key raises at import time. *(ours)* timm's ``PretrainedCfg`` rejects our extra keys
(``sequences``, ``num_tabular``): timm gets a copy of its own keys through a proxy module named after the family.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import fnmatch
import functools
import re
import sys
import types
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import timm.models
from torch import nn

__all__ = [
    "get_pretrained_cfg",
    "is_model",
    "is_multi_sequence",
    "list_models",
    "list_modules",
    "model_entrypoint",
    "register_model",
    "unknown_model_error",
]

REQUIRED_CFG_KEYS = ("input_size", "num_classes", "first_conv", "classifier")

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}
_model_to_module: dict[str, str] = {}
_module_to_models: defaultdict[str, set[str]] = defaultdict(set)
_model_cfgs: dict[str, dict[str, Any]] = {}

# Keys timm's PretrainedCfg accepts; everything else stays in our copy only.
_TIMM_CFG_KEYS = frozenset(f.name for f in dataclasses.fields(timm.models.PretrainedCfg))
_TIMM_PROXY_PREFIX = "backbones3d._timm_cfgs."

F = TypeVar("F", bound=Callable[..., nn.Module])


def _validate_cfg(name: str, cfg: Any) -> dict[str, Any]:
    if not isinstance(cfg, dict):
        raise TypeError(f"default_cfgs[{name!r}]: expected a dict, got {type(cfg).__name__}")
    missing = [k for k in REQUIRED_CFG_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"default_cfgs[{name!r}]: missing required keys {missing} (need {list(REQUIRED_CFG_KEYS)})")
    input_size = cfg["input_size"]
    if not (isinstance(input_size, (tuple, list)) and len(input_size) == 4 and all(int(v) >= 1 for v in input_size)):
        raise ValueError(
            f"default_cfgs[{name!r}]['input_size']: expected (C, D, H, W) positive ints, got {input_size!r}"
        )
    cfg = copy.deepcopy(cfg)
    cfg["input_size"] = tuple(int(v) for v in input_size)
    if "sequences" in cfg:
        cfg["sequences"] = list(cfg["sequences"])
        if len(cfg["sequences"]) != cfg["input_size"][0]:
            raise ValueError(
                f"default_cfgs[{name!r}]: {len(cfg['sequences'])} sequences {cfg['sequences']} but "
                f"input_size[0] = {cfg['input_size'][0]}"
            )
    return cfg


def _register_with_timm(fn: Callable[..., nn.Module], family: str, cfg: dict[str, Any]) -> None:
    """Register ``fn`` in timm's registry under its own name and family, with a timm-compatible cfg copy."""
    proxy_name = _TIMM_PROXY_PREFIX + family
    proxy = sys.modules.get(proxy_name)
    if proxy is None:
        proxy = types.ModuleType(proxy_name, f"timm-compatible configs of backbones3d's {family!r} models.")
        proxy.default_cfgs = {}  # type: ignore[attr-defined]
        sys.modules[proxy_name] = proxy
    proxy.default_cfgs[fn.__name__] = {k: v for k, v in cfg.items() if k in _TIMM_CFG_KEYS}  # type: ignore[attr-defined]

    @functools.wraps(fn)
    def timm_entrypoint(*args: Any, **kwargs: Any) -> nn.Module:
        return fn(*args, **kwargs)

    timm_entrypoint.__module__ = proxy_name
    timm.models.register_model(timm_entrypoint)


def register_model(fn: F) -> F:
    """Register a model entry point under its function name, here and in timm's registry.

    Args:
        fn: ``fn(pretrained=False, **kwargs) -> nn.Module``, returned unchanged; config ``default_cfgs[fn.__name__]``.

    Raises:
        ValueError: no config, a config lacking ``input_size``, ``num_classes``, ``first_conv`` or ``classifier``,
            or a name already registered by another module.
    """
    name = fn.__name__
    module = sys.modules[fn.__module__]
    cfgs = getattr(module, "default_cfgs", None)
    if not isinstance(cfgs, dict) or name not in cfgs:
        raise ValueError(
            f"register_model: {fn.__module__}.default_cfgs has no entry {name!r}; every registered model needs "
            f"a config with {list(REQUIRED_CFG_KEYS)} (docs/CONTRIBUTING.md)"
        )
    if name in _model_entrypoints and _model_to_module[name] != fn.__module__.rsplit(".", 1)[-1]:
        raise ValueError(
            f"register_model: {name!r} is already registered by family {_model_to_module[name]!r}; "
            f"refusing to overwrite it from {fn.__module__}"
        )
    family = fn.__module__.rsplit(".", 1)[-1]
    if timm.models.is_model(name) and not timm.models.is_model_in_modules(name, [family]):
        raise ValueError(f"register_model: {name!r} is a timm model name; a 3D model must not shadow it (add '_3d')")
    cfg = _validate_cfg(name, cfgs[name])
    _model_entrypoints[name] = fn
    _model_to_module[name] = family
    _module_to_models[family].add(name)
    _model_cfgs[name] = cfg
    _register_with_timm(fn, family, cfg)
    return fn


def _natural_key(name: str) -> list[int | str]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name.lower())]


def _as_list(value: str | Iterable[str] | None) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _has_weights(cfg: dict[str, Any]) -> bool:
    return bool(cfg.get("file") or cfg.get("url") or cfg.get("hf_hub_id") or cfg.get("state_dict"))


def list_models(
    filter: str | Iterable[str] = "",
    module: str | Iterable[str] = "",
    pretrained: bool = False,
    exclude_filters: str | Iterable[str] = "",
    name_matches_cfg: bool = False,
    include_tags: bool | None = None,
) -> list[str]:
    """Registered model names, naturally sorted (``test_2`` before ``test_10``); timm's signature.

    Args:
        filter, exclude_filters: fnmatch pattern(s) a name must match (any, e.g. ``"desamba*"``), then not match.
        module: family/families to list from (``"mambaout3d"``); see :func:`list_modules`.
        pretrained: only models whose config names weights (``file``, ``url``, ``hf_hub_id``).
        name_matches_cfg, include_tags: accepted for timm compatibility (every name has its config; no tags).

    Example::

        >>> list_models(["mambaout_femto*", "mambaout_kobe*"])
        ['mambaout_femto_3d', 'mambaout_kobe_3d']
    """
    del name_matches_cfg, include_tags  # every model has exactly one config and no tags
    modules = _as_list(module)
    if modules:
        names: set[str] = set().union(*(_module_to_models.get(m, set()) for m in modules))
    else:
        names = set(_model_entrypoints)
    includes = _as_list(filter)
    if includes:
        names = {n for n in names if any(fnmatch.fnmatch(n, f) for f in includes)}
    for pattern in _as_list(exclude_filters):
        names = {n for n in names if not fnmatch.fnmatch(n, pattern)}
    if pretrained:
        names = {n for n in names if _has_weights(_model_cfgs[n])}
    return sorted(names, key=_natural_key)


def list_modules() -> list[str]:
    """The registered families (model file names), sorted.

    Example::

        >>> "mambaout3d" in list_modules()
        True
    """
    return sorted(_module_to_models)


def is_model(model_name: str) -> bool:
    """Whether ``model_name`` is registered.

    Example::

        >>> is_model("mambaout_femto_3d"), is_model("mambaout_femto")
        (True, False)
    """
    return model_name in _model_entrypoints


def unknown_model_error(model_name: str) -> ValueError:
    """A ``ValueError`` for an unregistered name, suggesting the closest registered names."""
    close = difflib.get_close_matches(model_name, list(_model_entrypoints), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"model_name: unknown model {model_name!r}{hint} (backbones3d.list_models() lists all "
        f"{len(_model_entrypoints)} registered names)"
    )


def model_entrypoint(model_name: str) -> Callable[..., nn.Module]:
    """The entry point function of a registered model; unknown names raise with suggestions."""
    if model_name not in _model_entrypoints:
        raise unknown_model_error(model_name)
    return _model_entrypoints[model_name]


def get_pretrained_cfg(model_name: str) -> dict[str, Any]:
    """A copy of a registered model's config: ``input_size`` ``(C, D, H, W)``, ``num_classes``, ``first_conv``,
    ``classifier`` (and ``sequences``, ``num_tabular`` for multi-sequence models); unknown names raise ``ValueError``.

    Example::

        >>> get_pretrained_cfg("mambaout_femto_3d")["classifier"]
        'head.fc'
    """
    if model_name not in _model_cfgs:
        raise unknown_model_error(model_name)
    return copy.deepcopy(_model_cfgs[model_name])


def is_multi_sequence(model: nn.Module | str | Mapping[str, Any]) -> bool:
    """Whether ``model`` is a multi-sequence model (DeSamba): one input channel per named MRI sequence,
    called as ``model(x, tabular)``, with ``forward_with_aux(x, tabular)`` for Eq. 5's auxiliary terms.

    The one rule: the model names its ``sequences`` (a key of its config, an attribute of the module).

    Args:
        model: a registered name, a config (``model.pretrained_cfg``) or a model.

    Raises:
        ValueError: the name is not registered (the message suggests close names).

    Example::

        >>> import backbones3d
        >>> backbones3d.is_multi_sequence("desamba_spine_tiny"), backbones3d.is_multi_sequence("test_resnet_3d")
        (True, False)
    """
    if isinstance(model, str):
        model = get_pretrained_cfg(model)
    if isinstance(model, Mapping):
        return model.get("sequences") is not None
    return getattr(model, "sequences", None) is not None
