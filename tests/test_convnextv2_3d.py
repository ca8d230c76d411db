"""ConvNeXt V2 3D: key-for-key inflation from timm, 2-D parity on depth-1 volumes, size checks."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

import backbones3d
from backbones3d.convnextv2_3d import ConvNeXtV2_3d
from backbones3d.inflate import inflate_2d
from spectral3d.layers.samblock import ConvNeXtV2Block3d
from tests.helpers.checks import assert_checkpointing_matches


def _randomise_grn(model: torch.nn.Module) -> None:
    """GRN starts as the identity (zero weight and bias); make it act."""
    for name, p in model.named_parameters():
        if ".grn." in name:
            torch.nn.init.normal_(p, 0.0, 0.5)


@pytest.fixture(scope="module")
def atto() -> tuple[torch.nn.Module, torch.nn.Module, object]:
    """timm's convnextv2_atto (random init, GRN randomised, float64) and our inflated 3-D atto."""
    torch.manual_seed(0)
    model2d = timm.create_model("convnextv2_atto", pretrained=False).double().eval()
    _randomise_grn(model2d)
    model3d = backbones3d.create_model("convnextv2_atto_3d", num_classes=1000).double().eval()
    report = inflate_2d(model3d, model2d, mode="center")  # strict: raises on any unmatched or mis-shaped key
    return model2d, model3d, report


def test_every_timm_atto_key_inflates(atto) -> None:
    model2d, model3d, report = atto
    assert report.complete and len(report.matched) == len(model2d.state_dict()) == len(model3d.state_dict())
    # stem, 3 downsamplings, and per block conv_dw + the 1x1 fc1/fc2 of atto's conv-MLP layout
    assert len(report.inflated) == 1 + 3 + 3 * sum(len(s.blocks) for s in model2d.stages)
    dw3d, dw2d = model3d.stages[1].blocks[0].conv_dw.weight, model2d.stages[1].blocks[0].conv_dw.weight
    torch.testing.assert_close(dw3d[:, :, 3], dw2d)  # centre slice holds the 2-D kernel, the rest is zero
    assert dw3d[:, :, [0, 1, 2, 4, 5, 6]].abs().sum() == 0


def test_every_timm_tiny_key_inflates_on_the_meta_device() -> None:
    """tiny/base use timm's channels-last layout (Linear MLP); shapes are all that matter here."""
    with torch.device("meta"):
        model2d = timm.create_model("convnextv2_tiny", pretrained=False, num_classes=2)
        model3d = backbones3d.create_model("convnextv2_tiny_3d")
    assert inflate_2d(model3d, model2d).complete


def test_inflated_atto_reproduces_timm_blocks_on_a_depth_1_volume(atto) -> None:
    """Centre inflation: a (N, C, 1, H, W) volume through the 3-D stages equals the 2-D stages."""
    model2d, model3d, _ = atto
    x = torch.randn(2, 40, 6, 7, dtype=torch.float64)
    y = torch.randn(2, 160, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model3d.stages[0](x[:, :, None])[:, :, 0], model2d.stages[0](x))
        torch.testing.assert_close(model3d.stages[2].blocks(y[:, :, None])[:, :, 0], model2d.stages[2].blocks(y))


def test_mean_inflated_stem_reproduces_the_2d_stem_on_depth_constant_volumes(atto) -> None:
    model2d, model3d, _ = atto
    stem = copy.deepcopy(model3d.stem)
    inflate_2d(stem, model2d.stem, mode="mean")
    z = torch.randn(2, 3, 16, 20, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(stem(z[:, :, None].expand(-1, -1, 4, -1, -1))[:, :, 0], model2d.stem(z))


@pytest.mark.parametrize("conv_mlp", [False, True])
def test_block_matches_timm_block_in_both_layouts(conv_mlp: bool) -> None:
    ref = timm.models.convnext.ConvNeXtBlock(24, use_grn=True, ls_init_value=None, conv_mlp=conv_mlp).double()
    _randomise_grn(ref)
    ours = ConvNeXtV2Block3d(24, conv_mlp=conv_mlp).double()
    inflate_2d(ours, ref)
    x = torch.randn(2, 24, 7, 10, dtype=torch.float64)
    torch.testing.assert_close(ours(x[:, :, None])[:, :, 0], ref(x))


def test_channels_first_and_channels_last_layouts_compute_the_same_function() -> None:
    a = ConvNeXtV2Block3d(16, conv_mlp=False).double()
    b = ConvNeXtV2Block3d(16, conv_mlp=True).double()
    _randomise_grn(a)
    state = {k: v.reshape(b.state_dict()[k].shape) for k, v in a.state_dict().items()}
    b.load_state_dict(state)
    x = torch.randn(2, 16, 5, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x))


def test_forward_contract_and_gradients() -> None:
    model = backbones3d.create_model("test_convnextv2_3d", num_classes=3, drop_path_rate=0.1)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    _randomise_grn(model)
    x = torch.randn(1, 3, 32, 32, 64)
    feats = model.forward_features(x)
    assert feats.shape == (1, model.num_features, 1, 1, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)
    model.eval()
    out = model(x)
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    model(x).square().sum().backward()  # eval: no block is dropped, so every parameter must get a gradient
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.reset_classifier(4, "")
    assert model(x).shape == (1, 4, 1, 1, 2)
    model.reset_classifier(0, "max")
    assert model(x).shape == (1, model.num_features)


def test_grad_checkpointing_gives_the_same_outputs_and_gradients() -> None:
    model = ConvNeXtV2_3d(depths=(2, 1, 1, 1), dims=(8, 8, 16, 16), kernel_size=3)
    _randomise_grn(model)
    x = torch.randn(2, 3, 32, 32, 32)
    assert_checkpointing_matches(model, x)


def test_truncating_sizes_are_rejected() -> None:
    model = backbones3d.create_model("test_convnextv2_3d")
    with pytest.raises(ValueError, match=r"size 48 on axis H.*multiple of 32 on axis H"):
        model(torch.randn(1, 3, 32, 48, 32))
    with pytest.raises(ValueError, match=r"size 16 on axis D.*multiple of 32"):
        model(torch.randn(1, 3, 16, 32, 32))
    with pytest.raises(ValueError, match="expected 3 channels"):
        model(torch.randn(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="global_pool"):
        ConvNeXtV2_3d(global_pool="token")
    with pytest.raises(ValueError, match="depths, dims"):
        ConvNeXtV2_3d(depths=(1, 1), dims=(8, 16, 32))
