"""LayerNorm3d and GRN3d against timm's 2-D layers on depth-1 volumes, plus dtype behaviour."""

from __future__ import annotations

import pytest
import torch
from timm.layers import LayerNorm2d
from timm.layers.grn import GlobalResponseNorm

from spectral3d.layers import GRN3d, LayerNorm3d


def _randomise(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()


def test_layernorm3d_matches_timm_layernorm2d_on_depth1() -> None:
    ln3, ln2 = LayerNorm3d(6), LayerNorm2d(6, eps=1e-6)
    _randomise(ln2)
    ln3.load_state_dict(ln2.state_dict())
    x = torch.randn(2, 6, 1, 5, 7)
    torch.testing.assert_close(ln3(x)[:, :, 0], ln2(x[:, :, 0]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [True, False])
def test_grn3d_matches_timm_grn_on_depth1(channels_last: bool) -> None:
    g3 = GRN3d(8, channels_last=channels_last)
    g2 = GlobalResponseNorm(8, eps=1e-6, channels_last=channels_last)
    _randomise(g2)
    g3.load_state_dict(g2.state_dict())
    if channels_last:
        x = torch.randn(2, 1, 5, 6, 8)
        torch.testing.assert_close(g3(x)[:, 0], g2(x[:, 0]), rtol=1e-5, atol=1e-5)
    else:
        x = torch.randn(2, 8, 1, 5, 6)
        torch.testing.assert_close(g3(x)[:, :, 0], g2(x[:, :, 0]), rtol=1e-5, atol=1e-5)


def test_grn3d_identity_at_init_and_keeps_float64() -> None:
    x = torch.randn(1, 3, 3, 3, 4, dtype=torch.float64)
    g = GRN3d(4).double()
    y = g(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, x)


def test_grn3d_bf16_returns_bf16_and_is_finite() -> None:
    g = GRN3d(4)
    _randomise(g)
    y = g(torch.randn(1, 8, 8, 8, 4).bfloat16() * 100)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


def test_layernorm3d_channels_last_input() -> None:
    ln = LayerNorm3d(4)
    _randomise(ln)
    x = torch.randn(2, 4, 3, 5, 6)
    torch.testing.assert_close(ln(x.to(memory_format=torch.channels_last_3d)), ln(x))


@pytest.mark.parametrize(
    ("module", "x", "match"),
    [
        (LayerNorm3d(4), torch.randn(2, 4, 5, 5), "5-D"),
        (LayerNorm3d(4), torch.randn(2, 3, 5, 5, 5), "expected 4 channels"),
        (GRN3d(4), torch.randn(2, 5, 5, 5, 3), "expected 4 channels"),
    ],
)
def test_bad_input_names_the_problem(module: torch.nn.Module, x: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        module(x)
