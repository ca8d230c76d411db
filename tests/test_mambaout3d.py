"""MambaOut3d and MlpHead: timm parity of the head, any input size, stage shapes, names, bad input."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from hypothesis import given
from hypothesis import strategies as st
from timm.models.mambaout import MambaOut
from timm.models.mambaout import MlpHead as TimmMlpHead

import backbones3d
from backbones3d.mambaout3d import MambaOut3d
from spectral3d.layers.heads import MlpHead

TINY = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))


# --- MlpHead --------------------------------------------------------------------------------------------------


def test_mlp_head_matches_timm():
    timm_head = TimmMlpHead(24, num_classes=5).double().eval()
    head = MlpHead(24, num_classes=5).double().eval()
    with torch.no_grad():
        for p in timm_head.parameters():
            p.copy_(torch.randn_like(p))
    assert set(head.state_dict()) == set(timm_head.state_dict())
    head.load_state_dict(timm_head.state_dict())
    image = torch.randn(3, 6, 7, 24, dtype=torch.float64)  # timm's head takes NHWC
    volume = image.permute(0, 3, 1, 2).unsqueeze(2)  # (N, C, 1, H, W)
    torch.testing.assert_close(head(volume), timm_head(image))
    torch.testing.assert_close(head(volume, pre_logits=True), timm_head(image, pre_logits=True))
    assert head.num_features == timm_head.num_features == 96


def test_mlp_head_pooling_modes_and_reset():
    head = MlpHead(8, num_classes=3, pool_type="max").eval()
    x = torch.randn(2, 8, 3, 4, 5)
    torch.testing.assert_close(head(x), head(x.amax((2, 3, 4))))  # (N, C) input: already pooled
    head.reset(4, pool_type="")
    assert head(x).shape == (2, 4, 3, 4, 5)  # per voxel, channels-first
    torch.testing.assert_close(head(x)[:, :, 1, 2, 3], head(x[:, :, 1, 2, 3]))
    head.reset(0, pool_type="avg")
    assert head(x).shape == (2, 32) and head.num_classes == 0
    assert MlpHead(8, mlp_ratio=None, num_classes=2).num_features == 8


def test_mlp_head_bad_input():
    head = MlpHead(8)
    with pytest.raises(ValueError, match=r"pool_type: expected one of"):
        MlpHead(8, pool_type="token")
    with pytest.raises(ValueError, match=r"num_classes: expected >= 0"):
        head.reset(-1)
    with pytest.raises(ValueError, match=r"expected 8 channels on axis 1, got 6"):
        head(torch.randn(2, 6, 3, 3, 3))
    with pytest.raises(ValueError, match=r"at least 2 dims"):
        head(torch.randn(8))


# --- MambaOut3d -----------------------------------------------------------------------------------------------


@given(d=st.integers(1, 17), h=st.integers(1, 17), w=st.integers(1, 17))
def test_any_size_and_stage_shapes(d, h, w):
    torch.manual_seed(0)
    model = MambaOut3d(in_chans=2, num_classes=3, **TINY).eval()
    x = torch.randn(1, 2, d, h, w)
    with torch.no_grad():
        stages = model.forward_stages(x)
        logits = model(x)
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()
    for feat, info in zip(stages, model.feature_info):
        expected = tuple(math.ceil(s / info["reduction"]) for s in (d, h, w))
        assert feat.shape == (1, info["num_chs"], *expected)
    torch.testing.assert_close(model.forward_head(stages[-1]), logits)


def test_feature_info_and_drop_path_schedule():
    model = MambaOut3d(depths=(2, 1, 3, 1), dims=(8, 16, 24, 32), drop_path_rate=0.3)
    assert model.feature_info == [
        dict(num_chs=8, reduction=4, module="stages.0"),
        dict(num_chs=16, reduction=8, module="stages.1"),
        dict(num_chs=24, reduction=16, module="stages.2"),
        dict(num_chs=32, reduction=32, module="stages.3"),
    ]
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for s in model.stages for b in s.blocks]
    assert rates == pytest.approx([0.3 * i / 6 for i in range(7)])
    assert model.num_features == 32 and model.head_hidden_size == 128


@pytest.mark.parametrize("variant", ["mambaout_femto", "mambaout_base"])
def test_parameter_names_equal_timms(variant):
    """Key for key (the precondition of inflation), with conv kernels one axis deeper."""
    with torch.device("meta"):
        model2d = timm.create_model(variant, pretrained=False, num_classes=2)
        model3d = backbones3d.create_model(variant + "_3d")
    state2d, state3d = model2d.state_dict(), model3d.state_dict()
    assert list(state2d) == list(state3d)
    for key, value in state2d.items():
        expected = value.shape[:2] + (value.shape[-1],) + value.shape[2:] if value.ndim == 4 else value.shape
        assert state3d[key].shape == expected, key


def test_float64_and_channels_last_3d():
    model = MambaOut3d(**TINY).double().eval()
    x = torch.randn(2, 3, 5, 8, 7, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        out_cl = model(x.contiguous(memory_format=torch.channels_last_3d))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out_cl, out)


def test_global_pool_max_and_none():
    model = MambaOut3d(global_pool="max", **TINY).eval()
    x = torch.randn(1, 3, 16, 16, 16)
    with torch.no_grad():
        pooled = model(x)
        model.reset_classifier(4, global_pool="")
        per_voxel = model(x)
    assert pooled.shape == (1, 2) and per_voxel.shape == (1, 4, 1, 1, 1)


def test_timm_mambaout_reference_same_config():
    """The tiny config builds in timm too: same parameter count minus what the 3rd kernel axis adds."""
    model2d = MambaOut(**TINY, num_classes=2)
    model3d = MambaOut3d(**TINY)
    extra = sum(p.numel() - model2d.get_parameter(n).numel() for n, p in model3d.named_parameters() if p.ndim == 5)
    n2d = sum(p.numel() for p in model2d.parameters())
    assert sum(p.numel() for p in model3d.parameters()) == n2d + extra


def test_bad_input_and_arguments():
    model = MambaOut3d(in_chans=2, **TINY)
    with pytest.raises(ValueError, match=r"x: expected a 5-D tensor"):
        model(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"expected 2 channels on axis 1, got 3"):
        model(torch.randn(1, 3, 8, 8, 8))
    with pytest.raises(TypeError, match=r"floating-point"):
        model(torch.ones(1, 2, 8, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"depths, dims: expected one depth per stage width"):
        MambaOut3d(depths=(1, 1), dims=(8, 16, 24))
    with pytest.raises(ValueError, match=r"global_pool: expected one of"):
        MambaOut3d(global_pool="token", **TINY)
    with pytest.raises(ValueError, match=r"drop_path_rate: expected a probability"):
        MambaOut3d(drop_path_rate=1.5, **TINY)
    with pytest.raises(ValueError, match=r"in_chans: expected a positive"):
        MambaOut3d(in_chans=0, **TINY)
