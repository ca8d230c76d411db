"""GatedCNNBlock3d: timm parity on depth-1 volumes, shapes/gradients, dtype, locality, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from timm.models.mambaout import GatedConvBlock

from spectral3d.layers.gated_cnn import GatedCNNBlock3d


def _randomize(module: torch.nn.Module) -> None:
    """Random values in every parameter (biases and norms included), so parity tests see them all."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("norm.weight") else 0.0))


def _copy_2d_into_3d(block2d: GatedConvBlock, block3d: GatedCNNBlock3d) -> None:
    """The 2-D kernel on the centre depth slice, zeros elsewhere; everything else copied as is."""
    state2d = block2d.state_dict()
    state3d = block3d.state_dict()
    assert set(state2d) == set(state3d), "parameter names must equal timm's"
    with torch.no_grad():
        for key, value in state2d.items():
            if key == "conv.weight":
                kd = state3d[key].shape[2]
                inflated = torch.zeros_like(state3d[key])
                inflated[:, :, kd // 2] = value
                state3d[key] = inflated
            else:
                state3d[key] = value.clone()
    block3d.load_state_dict(state3d)


@pytest.mark.parametrize(
    ("dim", "conv_ratio", "ls_init_value", "size"),
    [(12, 1.0, None, (9, 11)), (16, 0.5, 1e-1, (8, 5)), (10, 1.0, None, (1, 1))],
)
def test_matches_timm_gated_conv_block_on_depth_one(dim, conv_ratio, ls_init_value, size):
    block2d = GatedConvBlock(dim, conv_ratio=conv_ratio, ls_init_value=ls_init_value).double().eval()
    block3d = GatedCNNBlock3d(dim, conv_ratio=conv_ratio, ls_init_value=ls_init_value).double().eval()
    _randomize(block2d)
    _copy_2d_into_3d(block2d, block3d)
    image = torch.randn(2, *size, dim, dtype=torch.float64)  # timm's block is NHWC
    expected = block2d(image)
    got = block3d(image.permute(0, 3, 1, 2).unsqueeze(2))  # (N, C, 1, H, W)
    torch.testing.assert_close(got.squeeze(2).permute(0, 2, 3, 1), expected, rtol=1e-10, atol=1e-10)


@given(
    n=st.integers(1, 2),
    d=st.integers(1, 9),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    channels_last=st.booleans(),
)
def test_shapes_and_gradients(n, d, h, w, channels_last):
    torch.manual_seed(0)
    block = GatedCNNBlock3d(8, kernel_size=(3, 5, 3))
    x = torch.randn(n, 8, d, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    y = block(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_float64_stays_float64():
    block = GatedCNNBlock3d(6).double()
    x = torch.randn(1, 6, 3, 4, 5, dtype=torch.float64)
    assert block(x).dtype == torch.float64


def test_receptive_field_is_the_kernel_window():
    """A change at one voxel moves the output only within the kernel's half-width on each axis."""
    block = GatedCNNBlock3d(4, kernel_size=(3, 5, 7)).double().eval()
    x = torch.randn(1, 4, 9, 11, 13, dtype=torch.float64)
    x2 = x.clone()
    x2[0, :, 4, 5, 6] += torch.randn(4, dtype=torch.float64)  # not constant: LayerNorm ignores a shift
    changed = (block(x2) - block(x)).abs().sum(1)[0] > 0
    idx = changed.nonzero()
    assert idx.min(0).values.tolist() == [3, 3, 3] and idx.max(0).values.tolist() == [5, 7, 9]


def test_drop_path_is_per_sample_in_training_and_off_in_eval():
    block = GatedCNNBlock3d(4, drop_path=0.5)
    x = torch.randn(64, 4, 2, 2, 2)
    with torch.no_grad():
        y = block.train()(x)
        kept = (y - x).flatten(1).abs().amax(1) > 0
        assert 0 < kept.sum() < 64  # some samples lose their residual branch, some keep it
        assert not torch.equal(block.eval()(x), x)


def test_bad_input():
    block = GatedCNNBlock3d(8)
    with pytest.raises(ValueError, match=r"x: expected a 5-D tensor"):
        block(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match=r"expected 8 channels on axis 1, got 6"):
        block(torch.randn(2, 6, 4, 4, 4))
    with pytest.raises(TypeError, match=r"floating-point.*torch.int64"):
        block(torch.ones(1, 8, 2, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor"):
        block([1.0])


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"kernel_size: expected an odd size on axis H"):
        GatedCNNBlock3d(8, kernel_size=(3, 4, 3))
    with pytest.raises(ValueError, match=r"conv_ratio: .* 0 convolved channels"):
        GatedCNNBlock3d(8, conv_ratio=0.0)
    with pytest.raises(ValueError, match=r"conv_ratio: .* 40 convolved channels"):
        GatedCNNBlock3d(8, conv_ratio=5.0)
    with pytest.raises(ValueError, match=r"drop_path: expected a probability"):
        GatedCNNBlock3d(8, drop_path=1.0)
    with pytest.raises(ValueError, match=r"dim: expected a positive"):
        GatedCNNBlock3d(0)
