"""ViT 3D: timm parity on depth-1 volumes, any size the patch tiles, the patch-size error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

import backbones3d
from backbones3d.vit3d import PatchEmbed3d, VisionTransformer3d
from tests.helpers.checks import assert_checkpointing_matches


def test_matches_timm_vit_on_a_depth_1_volume() -> None:
    """Patch (1, 8, 8) on (N, C, 1, H, W) is timm's 2-D ViT with patch 8 (same weights, same tokens)."""
    ref = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3).double()
    ours = VisionTransformer3d(
        img_size=(1, 32, 32), patch_size=(1, 8, 8), embed_dim=32, depth=2, num_heads=2, num_classes=3
    ).double()
    state = ref.state_dict()
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"][:, :, None]
    ours.load_state_dict(state)  # strict: every name is timm's
    ref.eval(), ours.eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x[:, :, None]), ref(x))
        torch.testing.assert_close(ours.forward_features(x[:, :, None]), ref.forward_features(x))


def test_accepts_several_input_sizes_without_rebuilding() -> None:
    model = backbones3d.create_model("test_vit_3d").eval()
    with torch.no_grad():
        for size in [(32, 32, 32), (16, 24, 40), (8, 48, 8), (8, 8, 8)]:
            out = model(torch.randn(2, 3, *size))
            assert isinstance(out, torch.Tensor) and out.shape == (2, 2) and torch.isfinite(out).all()
            tokens = model.forward_features(torch.randn(1, 3, *size))
            assert tokens.shape == (1, 1 + (size[0] // 8) * (size[1] // 8) * (size[2] // 8), model.embed_dim)


def test_position_embedding_is_stored_for_its_grid_and_resampled_for_others() -> None:
    model = backbones3d.create_model("test_vit_3d")  # grid (4, 4, 4)
    assert model.position_embedding((4, 4, 4)) is model.pos_embed
    pe = model.position_embedding((2, 6, 4))
    assert pe.shape == (1, 1 + 48, model.embed_dim)
    torch.testing.assert_close(pe[:, 0], model.pos_embed[:, 0])  # the class token keeps its embedding
    grid = model.pos_embed[:, 1:].reshape(1, 4, 4, 4, -1).permute(0, 4, 1, 2, 3)
    expected = F.interpolate(grid, size=(2, 6, 4), mode="trilinear", align_corners=False)
    torch.testing.assert_close(pe[:, 1:], expected.flatten(2).transpose(1, 2))
    # W unchanged and D halved: each new D slice is the mean of two stored ones (trilinear, half-pixel)
    pe_d = model.position_embedding((2, 4, 4))[:, 1:].reshape(1, 2, 4, 4, -1)
    stored = model.pos_embed[:, 1:].reshape(1, 4, 4, 4, -1)
    torch.testing.assert_close(pe_d[:, 0], stored[:, 0:2].mean(1))


def test_per_axis_patch() -> None:
    model = VisionTransformer3d(img_size=(8, 16, 32), patch_size=(2, 4, 8), embed_dim=16, depth=1, num_heads=2)
    assert model.grid_size == (4, 4, 4)
    assert model.forward_features(torch.randn(1, 3, 4, 8, 8)).shape == (1, 1 + 2 * 2 * 1, 16)


def test_a_size_the_patch_cannot_tile_raises_naming_axis_size_and_patch() -> None:
    model = backbones3d.create_model("test_vit_3d")
    with pytest.raises(ValueError, match=r"size 20 on axis H cannot be tiled by the patch \(8, 8, 8\)"):
        model(torch.randn(1, 3, 16, 20, 16))
    with pytest.raises(ValueError, match=r"size 4 on axis W"):
        model(torch.randn(1, 3, 16, 16, 4))
    with pytest.raises(ValueError, match=r"img_size \(30, 32, 32\): size 30 on axis D"):
        VisionTransformer3d(img_size=(30, 32, 32), patch_size=8)
    with pytest.raises(ValueError, match="expected 3 channels"):
        model(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(TypeError, match="patch_size"):
        PatchEmbed3d(patch_size=(8, 8))
    with pytest.raises(ValueError, match="embed_dim"):
        VisionTransformer3d(embed_dim=30, num_heads=4)


@pytest.mark.parametrize(("pool", "shape"), [("token", (2, 5)), ("avg", (2, 5)), ("max", (2, 5)), ("", (2, 9, 5))])
def test_pooling_and_head_contract(pool: str, shape: tuple[int, ...]) -> None:
    model = backbones3d.create_model("test_vit_3d", num_classes=5, global_pool=pool)
    x = torch.randn(2, 3, 16, 16, 16)
    assert model(x).shape == shape
    tokens = model.forward_features(x)
    if pool == "token":
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 0])
    elif pool == "avg":
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 1:].mean(1))
    model.reset_classifier(0)
    assert model(x).shape[-1] == model.num_features


def test_gradients_reach_every_parameter() -> None:
    model = backbones3d.create_model("test_vit_3d", drop_path_rate=0.1)
    model(torch.randn(2, 3, 16, 24, 16)).square().sum().backward()  # a resampled position embedding
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_grad_checkpointing_gives_the_same_outputs_and_gradients() -> None:
    model = backbones3d.create_model("test_vit_3d")
    x = torch.randn(2, 3, 16, 16, 32)
    assert_checkpointing_matches(model, x)
