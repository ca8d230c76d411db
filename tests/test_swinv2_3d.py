"""SwinV2 3D: timm parity on depth-1 volumes, a dense masked-attention reference, any input size."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer_v2 import SwinTransformerV2Block

import backbones3d
from backbones3d.swinv2_3d import (
    PatchMerging3d,
    SwinTransformerV2_3d,
    SwinTransformerV2Block3d,
    WindowAttention3d,
    relative_coords_table_3d,
)
from tests.helpers.checks import assert_checkpointing_matches


def _randomise_post_norms(model: torch.nn.Module) -> None:
    """Res-post-norms start at zero (every block the identity); give them random affine params."""
    for m in model.modules():
        if isinstance(m, SwinTransformerV2Block3d):
            for norm in (m.norm1, m.norm2):
                torch.nn.init.normal_(norm.weight, 1.0, 0.2)
                torch.nn.init.normal_(norm.bias, 0.0, 0.2)


def _randomise_attention(attn: torch.nn.Module) -> None:
    with torch.no_grad():
        attn.q_bias.normal_(0, 0.5)
        attn.v_bias.normal_(0, 0.5)
        attn.logit_scale.uniform_(0.5, 5.0)  # up to exp(5) > 100: the clamp is active for some heads


def _dense_reference(block: SwinTransformerV2Block3d, x: torch.Tensor) -> torch.Tensor:
    """The block's attention branch computed densely over the unpadded volume.

    Token ``p`` may attend to token ``q`` iff on every axis ``floor((p - s) / w) == floor((q - s) / w)``
    with the effective window ``w`` and shift ``s`` (the windows of the original grid, offset by the
    shift; the wrapped pieces fall into their own groups). No padding, no roll: an independent
    statement of what the padded, rolled, partitioned implementation must compute.
    """
    attn = block.attn
    n, d, h, w, c = x.shape
    size = (d, h, w)
    wins = [min(wc, s) for wc, s in zip(block.window_size, size)]
    shifts = [0 if s <= wc else sh for s, wc, sh in zip(size, block.window_size, block.shift_size)]
    coords = torch.stack(torch.meshgrid(*[torch.arange(s) for s in size], indexing="ij"), -1).reshape(-1, 3)
    groups = torch.div(coords - torch.tensor(shifts), torch.tensor(wins), rounding_mode="floor")
    allowed = (groups[:, None, :] == groups[None, :, :]).all(-1)
    rel = coords[:, None, :] - coords[None, :, :]
    wc = block.window_size
    table = 16 * torch.sigmoid(attn.cpb_mlp(relative_coords_table_3d(wc).to(x.dtype)))
    table = table.view(2 * wc[0] - 1, 2 * wc[1] - 1, 2 * wc[2] - 1, -1)
    idx = [(rel[..., a] + wc[a] - 1).clamp(0, 2 * wc[a] - 2) for a in range(3)]
    bias = table[idx[0], idx[1], idx[2]].permute(2, 0, 1)  # (heads, L, L)

    tokens = x.reshape(n, -1, c)
    qkv_bias = torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
    q, k, v = F.linear(tokens, attn.qkv.weight, qkv_bias).view(n, -1, 3, attn.num_heads, c // attn.num_heads).unbind(2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    tau = attn.logit_scale.clamp(max=math.log(100.0)).exp()
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2) * tau + bias
    logits = logits.masked_fill(~allowed, float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(n, -1, c)
    return attn.proj(out).view(n, d, h, w, c)


@pytest.mark.parametrize(
    ("size", "window", "shifted"),
    [
        ((4, 6, 6), (2, 3, 3), True),  # exact tiling, shifted
        ((5, 7, 4), (2, 3, 3), True),  # padding on every axis, shifted
        ((5, 7, 4), (2, 3, 3), False),  # padding only
        ((3, 2, 8), (4, 6, 3), True),  # windows larger than the extent on D and H: shrink, no shift there
        ((3, 5, 6), (1, 3, 4), True),  # window 1 on D
    ],
)
def test_window_attention_equals_dense_masked_reference(size, window, shifted) -> None:
    block = SwinTransformerV2Block3d(8, num_heads=2, window_size=window, shifted=shifted).double()
    _randomise_attention(block.attn)
    x = torch.randn(2, *size, 8, dtype=torch.float64)
    torch.testing.assert_close(block._attention(x), _dense_reference(block, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shifted", [False, True])
def test_block_matches_timm_swinv2_block_on_a_depth_1_volume(shifted) -> None:
    """A 2-D timm block and our block with window (1, w, w) agree when D = 1 (cpb MLP's D column unused)."""
    shift = 1 if shifted else 0
    ref = SwinTransformerV2Block(16, input_resolution=(6, 9), num_heads=2, window_size=3, shift_size=shift)
    ours = SwinTransformerV2Block3d(16, num_heads=2, window_size=(1, 3, 3), shifted=shifted)
    ref, ours = ref.double(), ours.double()
    _randomise_attention(ref.attn)
    for p in ref.parameters():  # norms and biases too, so nothing is at a trivial value
        if p.ndim == 1:
            torch.nn.init.normal_(p, 0.3, 0.3)
    state = dict(ref.state_dict())
    w2 = state["attn.cpb_mlp.0.weight"]  # (512, 2): inputs (H, W)
    state["attn.cpb_mlp.0.weight"] = torch.cat([torch.randn(w2.shape[0], 1, dtype=w2.dtype), w2], dim=1)
    ours.load_state_dict(state)
    x = torch.randn(2, 6, 9, 16, dtype=torch.float64)
    # timm masks with -100 where we use -1e4: both give exp(...) < 1e-30 here (logits <= tau + 16 < 70).
    torch.testing.assert_close(ours(x[:, None])[:, 0], ref(x), rtol=1e-7, atol=1e-7)


def test_model_accepts_several_input_sizes_without_rebuilding() -> None:
    model = backbones3d.create_model("test_swinv2_3d").eval()
    _randomise_post_norms(model)
    for size in [(16, 16, 16), (8, 12, 20), (4, 6, 30), (2, 2, 2)]:
        x = torch.randn(2, 3, *size)
        out = model(x)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 2)
        assert torch.isfinite(out).all()
        feats = model.forward_features(x)
        expected = [math.ceil(s / 2 / 2 ** (len(model.layers) - 1)) for s in size]  # patch 2, odd sizes padded
        assert feats.shape == (2, model.num_features, *expected)


def test_padding_does_not_leak_into_real_tokens() -> None:
    """Padded tokens are masked as keys, and a shrunk window keeps the configured bias scale.

    In a (3, 5, 5) map, window (2, 3, 3) pads to (4, 6, 6); the corner window holds the real tokens
    [2:3, 3:5, 3:5] plus padding. Their outputs must equal those of the (1, 2, 2) crop alone (where
    the window shrinks to the crop and there is no padding at all).
    """
    block = SwinTransformerV2Block3d(8, num_heads=2, window_size=(2, 3, 3)).double()
    _randomise_attention(block.attn)
    x = torch.randn(1, 3, 5, 5, 8, dtype=torch.float64)
    corner = (slice(None), slice(2, 3), slice(3, 5), slice(3, 5))
    torch.testing.assert_close(block._attention(x)[corner], block._attention(x[corner].contiguous()))


def test_window_of_one_and_oversized_windows_give_finite_outputs_and_gradients() -> None:
    model = SwinTransformerV2_3d(
        in_chans=2, embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=(1, 8, 3), patch_size=2
    )
    _randomise_post_norms(model)
    x = torch.randn(2, 2, 4, 6, 10, requires_grad=True)
    out = model(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert model.layers[0].blocks[1].window_and_shift((2, 3, 5)) == ((1, 3, 3), (0, 0, 1))


def test_continuous_position_bias_is_finite_and_bounded() -> None:
    table = relative_coords_table_3d((1, 2, 7))
    assert table.shape == (1 * 3 * 13, 3)
    assert torch.isfinite(table).all()
    assert (table[:, 0] == 0).all()  # window 1: only the offset 0, no 0 / 0
    edge = math.log2(9) / math.log2(8)  # offset ±(w - 1) -> ±8 -> sign * log2(1 + 8) / log2(8)
    assert table[:, 1].abs().max() == pytest.approx(edge) and table[:, 2].abs().max() == pytest.approx(edge)
    w_offsets = table[:, 2].unique()
    assert len(w_offsets) == 13 and (w_offsets.diff() > 0).all()  # 13 distinct, increasing offsets on W
    attn = WindowAttention3d(8, (1, 2, 7), num_heads=4)
    for window in [(1, 2, 7), (1, 1, 3)]:
        bias = attn.position_bias(window)
        n = math.prod(window)
        assert bias.shape == (4, n, n)
        assert torch.isfinite(bias).all() and (bias > 0).all() and (bias < 16).all()


def test_patch_merging_groups_2x2x2_neighbourhoods_and_pads_odd_sizes() -> None:
    merge = PatchMerging3d(4, 6)
    x = torch.randn(1, 3, 4, 5, 4)
    out = merge(x)
    assert out.shape == (1, 2, 2, 3, 6)
    # the output at (0, 1, 2) depends only on input voxels d in {0,1}, h in {2,3}, w in {4} (+ padding)
    x2 = x.clone()
    x2[:, 2:, :, :] += 1.0
    x2[:, :, :2] += 1.0
    x2[:, :, :, :4] += 1.0
    torch.testing.assert_close(merge(x2)[:, 0, 1, 2], out[:, 0, 1, 2])


def test_gradients_reach_every_parameter() -> None:
    model = backbones3d.create_model("test_swinv2_3d", num_classes=3)
    _randomise_post_norms(model)
    model(torch.randn(2, 3, 8, 12, 14)).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_grad_checkpointing_gives_the_same_outputs_and_gradients() -> None:
    model = backbones3d.create_model("test_swinv2_3d")
    _randomise_post_norms(model)
    x = torch.randn(1, 3, 8, 12, 12)
    assert_checkpointing_matches(model, x)


def test_head_contract() -> None:
    model = backbones3d.create_model("test_swinv2_3d", num_classes=4)
    x = torch.randn(2, 3, 8, 8, 8)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, 1, 1, 1)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(5, "max")
    assert model(x).shape == (2, 5) and model.get_classifier().out_features == 5
    model.reset_classifier(3, "")
    assert model(torch.randn(2, 3, 16, 8, 8)).shape == (2, 3, 2, 1, 1)
    model.reset_classifier(0, "avg")
    assert model(x).shape == (2, model.num_features)


def test_bad_inputs_raise() -> None:
    model = backbones3d.create_model("test_swinv2_3d")
    with pytest.raises(ValueError, match=r"size 15 on axis W.*multiple of 2"):
        model(torch.randn(1, 3, 16, 16, 15))
    with pytest.raises(ValueError, match=r"expected 3 channels"):
        model(torch.randn(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="global_pool"):
        SwinTransformerV2_3d(global_pool="token")
    with pytest.raises(ValueError, match="window_size"):
        SwinTransformerV2_3d(window_size=(0, 3, 3))
