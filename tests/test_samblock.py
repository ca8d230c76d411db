"""SAMBlock (paper Eq. 1) and the ConvNeXtV2 block: shapes, gradients, dtypes, Eq. 1 itself, timm parity."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spectral3d.layers.samblock import ConvNeXtV2Block3d, ConvNeXtV2Body3d, SAMBlock

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see tests/conftest.py


C = 8


def _perturb(module: torch.nn.Module, scale: float = 0.1) -> None:
    """Move every parameter off its init so that zero-initialised parts (GRN, SAMB) take part."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


@given(d=st.integers(1, 17), h=st.integers(1, 17), w=st.integers(1, 17), cl=st.booleans())
def test_samblock_shapes_and_gradients(d: int, h: int, w: int, cl: bool) -> None:
    block = SAMBlock(4)
    _perturb(block)
    x = torch.randn(1, 4, d, h, w)
    if cl:
        x = x.to(memory_format=torch.channels_last_3d)
    x.requires_grad_()
    y = block(x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.parameters())


def test_samblock_implements_eq1() -> None:
    block = SAMBlock(C)
    _perturb(block)
    block.eval()
    x = torch.randn(2, C, 6, 7, 8, dtype=torch.float64)
    block.double()
    f1 = block.spatial(x)
    f2 = block.frequency(block.conv_freq(block.samb(x)))
    theta = torch.sigmoid(block.gate(torch.cat([f1, f2], 1)))
    w1, w2 = block.branch_weights
    expected = 0.5 * x + 0.5 * theta * (w1 * f1 + w2 * f2)
    torch.testing.assert_close(block(x), expected)
    assert torch.equal(SAMBlock(C).branch_weights, torch.tensor([0.5, 0.5]))
    # residual="identity": the same block with the plain skip x + F_out
    plain = SAMBlock(C, residual="identity").double().eval()
    plain.load_state_dict(block.state_dict())
    torch.testing.assert_close(plain(x), x + theta * (w1 * f1 + w2 * f2))
    # the frequency branch matters: changing SAMB's parameters changes the output
    with torch.no_grad():
        block.samb.beta.add_(1.0)
    assert not torch.allclose(block(x), expected)


def test_drop_path_only_in_training() -> None:
    block = SAMBlock(C, drop_path=0.5)
    x = torch.randn(8, C, 4, 4, 4)
    block.eval()
    torch.testing.assert_close(block(x), block(x))
    block.train()
    torch.manual_seed(3)
    y = block(x)
    dropped = [(y[i] - 0.5 * x[i]).abs().max() == 0 for i in range(8)]
    assert any(dropped) and not all(dropped)  # some samples keep only the 0.5·x residual


def test_float64_and_bf16_autocast() -> None:
    block = SAMBlock(C)
    _perturb(block)
    x = torch.randn(2, C, 5, 6, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    torch.testing.assert_close(y, block(x), atol=0.1, rtol=0.1)
    block64 = block.double()
    y64 = block64(x.double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), block.float()(x), atol=1e-4, rtol=1e-4)


def test_convnextv2_block_matches_timm_on_a_depth1_volume() -> None:
    """A timm ConvNeXtV2 block's weights, kernel on the centre depth slice, give the same output."""
    timm_convnext = pytest.importorskip("timm.models.convnext")
    ref = timm_convnext.ConvNeXtBlock(C, use_grn=True, ls_init_value=None, conv_mlp=False)
    _perturb(ref, 0.2)
    ref.eval()
    ours = ConvNeXtV2Block3d(C).eval()
    state = ref.state_dict()
    assert set(state) == set(ours.state_dict())  # the same parameter names
    k = state["conv_dw.weight"]
    w3 = torch.zeros(C, 1, 7, 7, 7)
    w3[:, :, 3] = k
    state["conv_dw.weight"] = w3
    ours.load_state_dict(state)
    x = torch.randn(2, C, 9, 10)
    torch.testing.assert_close(ours(x.unsqueeze(2)).squeeze(2), ref(x), atol=1e-5, rtol=1e-5)


def test_convnextv2_block_shapes_and_residual() -> None:
    block = ConvNeXtV2Block3d(C)
    x = torch.randn(2, C, 3, 4, 5)
    # GRN starts as the identity and fc2 is random, so the body is not zero: the block is x + body(x)
    torch.testing.assert_close(block(x), x + ConvNeXtV2Body3d.forward(block, x))
    assert ConvNeXtV2Body3d(C, kernel_size=3).conv_dw.kernel_size == (3, 3, 3)


def test_bad_input() -> None:
    block = SAMBlock(C)
    with pytest.raises(ValueError, match=r"expected a 5-D tensor"):
        block(torch.randn(2, C, 4, 4))
    with pytest.raises(ValueError, match=r"expected 8 channels on axis 1, got 6"):
        block(torch.randn(2, 6, 4, 4, 4))
    with pytest.raises(ValueError, match=r"expected 8 channels on axis 1, got 6"):
        ConvNeXtV2Block3d(C)(torch.randn(2, 6, 4, 4, 4))
    with pytest.raises(ValueError, match=r"kernel_size: expected an odd positive int"):
        ConvNeXtV2Body3d(C, kernel_size=4)
    with pytest.raises(ValueError, match=r"dim: expected a positive int, got 0"):
        SAMBlock(0)
    with pytest.raises(ValueError, match=r"fm_mode"):
        SAMBlock(C, fm_mode="wavelet")
    with pytest.raises(ValueError, match=r"residual: expected one of \('paper', 'identity'\), got 'half'"):
        SAMBlock(C, residual="half")
