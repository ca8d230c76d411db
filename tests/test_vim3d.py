"""Vision Mamba 3D: the bidirectional mixer's structure, the model contract, resizing and bad input."""

from __future__ import annotations

import copy

import pytest
import torch

import backbones3d
from backbones3d import vim3d
from backbones3d.vim3d import BiMambaMixer, VimBlock3d, VisionMamba3d
from spectral3d.ops import use_kernels
from tests.helpers.checks import assert_checkpointing_matches

_DIRECTION_PARAMS = ("conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D")


def _backward_name(name: str) -> str:
    return "A_b_log" if name == "A_log" else name.replace(".", "_b.", 1) if "." in name else name + "_b"


def _randomise(module: torch.nn.Module) -> None:
    """Perturb every parameter so that no two directions share values by construction."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))


def test_mixer_backward_direction_is_forward_on_flipped_sequence_with_swapped_weights():
    mixer = BiMambaMixer(16, d_state=4, chunk_size=4).double()
    _randomise(mixer)
    swapped = copy.deepcopy(mixer)
    state = mixer.state_dict()
    swapped.load_state_dict(
        {**state, **{n: state[_backward_name(n)] for n in _DIRECTION_PARAMS}}
        | {_backward_name(n): state[n] for n in _DIRECTION_PARAMS}
    )
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    # out(x) = P((f(x) + flip(b(flip x))) / 2): swapping f and b and flipping the input flips the output
    torch.testing.assert_close(swapped(x.flip(1)), mixer(x).flip(1), atol=1e-12, rtol=1e-12)
    assert not torch.allclose(mixer(x.flip(1)), mixer(x).flip(1), atol=1e-6)  # the directions are distinct


def test_mixer_sees_both_directions():
    mixer = BiMambaMixer(16, d_state=4).double()
    x = torch.randn(1, 9, 16, dtype=torch.float64)
    y = mixer(x)
    x_last, x_first = x.clone(), x.clone()
    x_last[:, -1] += 1.0
    x_first[:, 0] += 1.0
    assert (mixer(x_last)[:, 0] - y[:, 0]).abs().max() > 1e-6  # token 0 hears the last token (backward scan)
    assert (mixer(x_first)[:, -1] - y[:, -1]).abs().max() > 1e-6  # the last token hears token 0 (forward scan)


def test_mixer_scan_agrees_with_sequential_reference():
    mixer = BiMambaMixer(16, d_state=4, chunk_size=4).double()
    x = torch.randn(2, 13, 16, dtype=torch.float64)
    y = mixer(x)
    with use_kernels("autograd", ops={"selective_scan"}):  # the token loop of selective_scan_reference
        torch.testing.assert_close(mixer(x), y, atol=1e-12, rtol=1e-12)


def test_block_keeps_residual_in_float32():
    block = VimBlock3d(16, d_state=4).bfloat16()
    out = block(torch.randn(1, 5, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.float32
    assert VimBlock3d(16, d_state=4).double()(torch.randn(1, 5, 16, dtype=torch.float64)).dtype == torch.float64


def test_forward_backward_every_parameter_gets_gradient():
    model = backbones3d.create_model("test_vim_3d", num_classes=3, in_chans=2)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    x = torch.randn(2, 2, 32, 32, 32)
    out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.pretrained_cfg["input_size"] == (2, 32, 32, 32) and model.pretrained_cfg["num_classes"] == 3


def test_forward_features_and_pooling():
    model = vim3d.test_vim_3d().eval()
    x = torch.randn(2, 3, 32, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 4 * 4 * 4 + 1, model.num_features)
    mid = 64 // 2
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats[:, mid])
    model.reset_classifier(5, global_pool="avg")
    patches = torch.cat([feats[:, :mid], feats[:, mid + 1 :]], dim=1)
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), patches.mean(1))
    assert model(x).shape == (2, 5)
    model.reset_classifier(0, global_pool="")
    assert model(x).shape == feats.shape


def test_class_token_sits_in_the_middle():
    model = vim3d.test_vim_3d(depth=1).eval()
    with torch.no_grad():
        model.cls_token.fill_(0.0)
        model.cls_token[..., 0] = 1e3  # a marker no patch token carries
    captured = {}
    model.layers[0].register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    model(torch.randn(1, 3, 16, 32, 40))  # grid 2 x 4 x 5 = 40 tokens: class token at index 20
    assert captured["x"][0, :, 0].argmax().item() == 20


@pytest.mark.parametrize("size", [(32, 32, 32), (16, 32, 48), (40, 24, 8)])
def test_other_input_sizes_without_rebuilding(size):
    model = vim3d.test_vim_3d().eval()
    grid = tuple(s // 8 for s in size)
    pos = model.position_embedding(grid)
    n = grid[0] * grid[1] * grid[2]
    assert pos.shape == (1, n + 1, model.embed_dim)
    torch.testing.assert_close(pos[:, n // 2], model.pos_embed[:, 32])  # the class-token entry is kept
    assert model(torch.randn(1, 3, *size)).shape == (1, 2)


def test_grad_checkpointing_gives_same_output_and_gradients():
    model = vim3d.test_vim_3d().double()
    x = torch.randn(1, 3, 16, 16, 24, dtype=torch.float64)
    assert_checkpointing_matches(model, x)


def test_float64_stays_float64_and_drop_path_trains():
    model = vim3d.test_vim_3d(drop_path_rate=0.2, drop_rate=0.1).double().train()
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.layers]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.2)
    assert model(torch.randn(2, 3, 32, 32, 32, dtype=torch.float64)).dtype == torch.float64


def test_paper_scale_variants_on_meta():
    with torch.device("meta"):
        tiny, small = vim3d.vim_tiny_3d(), vim3d.vim_small_3d()
    n_tiny = sum(p.numel() for p in tiny.parameters())
    n_small = sum(p.numel() for p in small.parameters())
    # Vim-Ti/S have ~7 M / ~26 M parameters in 2D; the 16³ x 3 patch conv adds 3·16³·C - 3·16²·C
    assert 8e6 < n_tiny < 10e6 and 27e6 < n_small < 32e6, (n_tiny, n_small)
    assert tiny.pretrained_cfg["input_size"] == (3, 64, 96, 96)
    assert len(tiny.layers) == 24 and tiny.layers[0].mixer.d_inner == 384 and tiny.layers[0].mixer.d_state == 16


@pytest.mark.parametrize(
    ("shape", "error", "match"),
    [
        ((1, 3, 33, 32, 32), ValueError, r"size 33 on axis D .*patch \(8, 8, 8\)"),
        ((1, 3, 32, 32, 4), ValueError, r"size 4 on axis W .*multiple of 8"),
        ((1, 2, 32, 32, 32), ValueError, "expected 3 channels"),
        ((3, 32, 32, 32), ValueError, "expected a 5-D tensor"),
    ],
)
def test_bad_input(shape, error, match):
    model = vim3d.test_vim_3d()
    with pytest.raises(error, match=match):
        model(torch.randn(*shape))


def test_bad_arguments():
    with pytest.raises(ValueError, match="global_pool: expected one of"):
        VisionMamba3d(img_size=32, patch_size=8, embed_dim=16, depth=1, global_pool="mean")
    with pytest.raises(ValueError, match=r"size 30 on axis H"):
        VisionMamba3d(img_size=(32, 30, 32), patch_size=8, embed_dim=16, depth=1)
    with pytest.raises(ValueError, match="d_state: expected a positive int"):
        BiMambaMixer(16, d_state=0)
    with pytest.raises(ValueError, match="global_pool"):
        vim3d.test_vim_3d().reset_classifier(2, global_pool="cls")
