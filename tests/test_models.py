"""Registry-driven model contract (timm's tests/test_models.py is the model).

Every registered model is tested without anyone writing a test for it:

- small models (``test_*`` and ``*_tiny`` whose cfg input is at most 32³) are run on CPU: forward
  shape, no NaN, a gradient for every trainable parameter, ``forward_features`` width,
  ``forward_head(pre_logits=True)``, ``reset_classifier``, ``set_grad_checkpointing``;
- every model is built and run on the meta device at its cfg ``input_size`` (shapes only, no
  compute) and its ``pretrained_cfg`` is checked against what was built;
- every family has a ``test_*`` model.

Multi-sequence models (cfg has ``sequences``) get ``x: (N, S, D, H, W)`` and a random tabular
``(N, num_tabular)`` with some NaN (missing values).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import backbones3d
from backbones3d._registry import REQUIRED_CFG_KEYS

BATCH = 2  # > 1, so that BatchNorm models train on 1x1x1 maps
MAX_SMALL_SIDE = 32


def _is_small(name: str) -> bool:
    if not (name.startswith("test_") or name.endswith("_tiny")):
        return False
    return max(backbones3d.get_pretrained_cfg(name)["input_size"][1:]) <= MAX_SMALL_SIDE


ALL_MODELS = backbones3d.list_models()
# ``*_tiny`` presets (full architectures at CPU scale) cost far more than ``test_*`` models: marked slow.
SMALL_MODELS = [
    n if n.startswith("test_") else pytest.param(n, marks=pytest.mark.slow, id=n) for n in ALL_MODELS if _is_small(n)
]


def _inputs(cfg: dict[str, Any], batch: int = BATCH, device: str | torch.device = "cpu") -> tuple[tuple, dict]:
    """Random model inputs for a cfg: ``((x,), {})`` or, for multi-sequence models, ``((x,), {"tabular": t})``."""
    x = torch.randn(batch, *cfg["input_size"], device=device)
    if "sequences" not in cfg:
        return (x,), {}
    tabular = torch.randn(batch, cfg["num_tabular"], device=device)
    if tabular.device.type != "meta" and tabular.numel() > 1:
        tabular[0, 0] = float("nan")
        tabular[-1, -1] = float("nan")
    return (x,), {"tabular": tabular}


def _build(name: str, **kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    return backbones3d.create_model(name, **kwargs)


def _pre_logits_width(model: nn.Module) -> int:
    return getattr(model, "head_hidden_size", None) or model.num_features


def _check_feature_width(features: torch.Tensor, model: nn.Module) -> None:
    # CNNs: (N, C, d, h, w) channels-first; token models: (N, L, C); pooled/fused models: (N, C).
    width = features.shape[1] if features.ndim == 5 else features.shape[-1]
    assert width == model.num_features, f"forward_features width {width} != num_features {model.num_features}"


def _loss(model: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and a loss reaching every parameter: auxiliary losses (DeSamba's DRLM) are added when offered."""
    if hasattr(model, "forward_with_aux"):
        out, aux = model.forward_with_aux(*args, **kwargs)
    else:
        out, aux = model(*args, **kwargs), {}
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    return out, (out * weights).sum() + sum(aux.values())


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_forward_backward_and_grad_checkpointing(name):
    """Logits shape, no NaN, a gradient for every parameter; checkpointing changes neither output nor gradients."""
    model = _build(name).train()
    cfg = model.pretrained_cfg
    args, kwargs = _inputs(cfg)
    out, loss = _loss(model, args, kwargs)
    assert out.shape == (BATCH, cfg["num_classes"])
    assert torch.isfinite(out).all(), "non-finite logits"
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in params if p.grad is None]
    assert not no_grad, f"parameters without a gradient: {no_grad}"
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"
    if name.startswith("test_"):
        n_params = sum(p.numel() for p in model.parameters())
        assert n_params < 2_000_000, f"test models must stay below 2 M parameters, got {n_params}"

    reference = {n: p.grad.clone() for n, p in params}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing
    out_ckpt, loss_ckpt = _loss(model, args, kwargs)
    loss_ckpt.backward()
    torch.testing.assert_close(out_ckpt, out)
    for n, p in params:
        torch.testing.assert_close(p.grad, reference[n], msg=lambda m, n=n: f"{n}: {m}")
    model.set_grad_checkpointing(False)
    assert not model.grad_checkpointing


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_features_head_and_reset_classifier(name):
    model = _build(name).eval()
    cfg = model.pretrained_cfg
    args, kwargs = _inputs(cfg)
    with torch.no_grad():
        logits = model(*args, **kwargs)
        features = model.forward_features(*args, **kwargs)
        _check_feature_width(features, model)
        torch.testing.assert_close(model.forward_head(features), logits)
        pre = model.forward_head(features, pre_logits=True)
        assert pre.shape == (BATCH, _pre_logits_width(model))
        assert isinstance(model.get_classifier(), nn.Module)

        other = cfg["num_classes"] + 3
        model.reset_classifier(other)
        assert model.num_classes == other
        assert model.forward_head(features).shape == (BATCH, other)
        model.reset_classifier(0)
        torch.testing.assert_close(model.forward_head(features), pre)


def _check_cfg(name: str, model: nn.Module) -> None:
    cfg = model.pretrained_cfg
    missing = [k for k in REQUIRED_CFG_KEYS if k not in cfg]
    assert not missing, f"pretrained_cfg lacks {missing}"
    assert len(cfg["input_size"]) == 4, f"input_size must be (C, D, H, W), got {cfg['input_size']}"
    registered = backbones3d.get_pretrained_cfg(name)
    assert {k: v for k, v in cfg.items() if k != "architecture"} == registered, "class defaults != variant cfg"
    assert cfg["num_classes"] == model.num_classes
    multi_sequence = "sequences" in cfg
    if multi_sequence:
        assert "num_tabular" in cfg
        assert cfg["input_size"][0] == len(cfg["sequences"])
    firsts = [cfg["first_conv"]] if isinstance(cfg["first_conv"], str) else list(cfg["first_conv"])
    for first in firsts:
        layer = model.get_submodule(first)
        in_channels = getattr(layer, "in_channels", getattr(layer, "in_features", None))
        assert in_channels is not None, f"first_conv {first!r} is a {type(layer).__name__} without an input width"
        if not multi_sequence and isinstance(layer, nn.modules.conv._ConvNd):
            assert in_channels == cfg["input_size"][0], f"first_conv {first!r} takes {in_channels} channels"
    heads = [cfg["classifier"]] if isinstance(cfg["classifier"], str) else list(cfg["classifier"])
    for head in heads:
        layer = model.get_submodule(head)
        if cfg["num_classes"] > 0:
            assert getattr(layer, "out_features", getattr(layer, "out_channels", None)) == cfg["num_classes"]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_meta_forward_and_cfg(name):
    with torch.device("meta"):
        model = backbones3d.create_model(name).eval()
        args, kwargs = _inputs(model.pretrained_cfg, batch=1, device="meta")
        out = model(*args, **kwargs)
    _check_cfg(name, model)
    assert out.shape == (1, model.pretrained_cfg["num_classes"])


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_cfg_follows_build_kwargs(name):
    """``pretrained_cfg`` records what was built, not the variant's defaults."""
    default = backbones3d.get_pretrained_cfg(name)
    overrides: dict[str, Any] = {"num_classes": default["num_classes"] + 2}
    if "sequences" not in default:
        overrides["in_chans"] = default["input_size"][0] + 1
    with torch.device("meta"):
        model = backbones3d.create_model(name, **overrides).eval()
        cfg = model.pretrained_cfg
        args, kwargs = _inputs(cfg, batch=1, device="meta")
        out = model(*args, **kwargs)
    assert cfg["num_classes"] == overrides["num_classes"] and out.shape == (1, overrides["num_classes"])
    assert cfg["input_size"][0] == overrides.get("in_chans", default["input_size"][0])
    assert cfg["input_size"][1:] == default["input_size"][1:]


def test_every_family_has_a_test_model():
    for module in backbones3d.list_modules():
        names = backbones3d.list_models(module=module)
        assert any(n.startswith("test_") for n in names), f"family {module!r} has no test_* model ({names})"
