"""MultiScaleFusion and TabularEncoder: shapes, gradients, dtypes, missing values, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spectral3d.layers.fusion import MultiScaleFusion
from spectral3d.layers.tabular import TabularEncoder

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see tests/conftest.py


DIMS_A, DIMS_B = (4, 8, 12, 16), (6, 10, 14, 18)


def _stages(dims, size, batch=2, dtype=torch.float32, channels_last=False):
    out = []
    for k, c in enumerate(dims):
        s = tuple(max(1, v >> k) for v in size)
        x = torch.randn(batch, c, *s, dtype=dtype)
        out.append(x.to(memory_format=torch.channels_last_3d) if channels_last else x)
    return out


@given(d=st.integers(1, 17), h=st.integers(1, 17), w=st.integers(1, 17), cl=st.booleans())
def test_fusion_shapes_and_gradients(d: int, h: int, w: int, cl: bool) -> None:
    fuse = MultiScaleFusion(DIMS_A, DIMS_B, out_dim=24)
    a = [x.requires_grad_() for x in _stages(DIMS_A, (d, h, w), channels_last=cl)]
    b = [x.requires_grad_() for x in _stages(DIMS_B, (d, h, w), channels_last=cl)]
    y = fuse(a, b)
    assert y.shape == (2, 24) and torch.isfinite(y).all()
    y.square().sum().backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in a + b)
    assert all(p.grad is not None for p in fuse.parameters())


def test_fusion_single_branch_max_pool_and_dtypes() -> None:
    fuse = MultiScaleFusion(DIMS_A, None, out_dim=16, global_pool="max")
    a = _stages(DIMS_A, (8, 8, 8))
    assert fuse(a).shape == (2, 16) and fuse.in_features == sum(DIMS_A)
    # max pooling: changing a non-maximal voxel leaves the output unchanged
    a2 = [x.clone() for x in a]
    a2[0][:, :, 0, 0, 0] = a[0].amin() - 1
    torch.testing.assert_close(fuse(a2), fuse(a))
    y64 = fuse.double()(_stages(DIMS_A, (8, 8, 8), dtype=torch.float64))
    assert y64.dtype == torch.float64
    fuse = MultiScaleFusion(DIMS_A, DIMS_B, out_dim=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fuse(_stages(DIMS_A, (8, 8, 8)), _stages(DIMS_B, (8, 8, 8)))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_fusion_matches_its_definition() -> None:
    """f = proj(LN(concat[pool(F_k)])) against a plain re-computation, in float64 on random stages."""
    torch.manual_seed(0)
    fuse = MultiScaleFusion(DIMS_A, DIMS_B, out_dim=12).double()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        fuse.norm.weight.normal_()
        fuse.norm.bias.normal_()
    a = _stages(DIMS_A, (9, 6, 7), dtype=torch.float64)
    b = _stages(DIMS_B, (9, 6, 7), dtype=torch.float64)
    z = torch.cat([f.mean(dim=(2, 3, 4)) for f in a + b], dim=1)
    z = (z - z.mean(1, keepdim=True)) / torch.sqrt(z.var(1, unbiased=False, keepdim=True) + fuse.norm.eps)
    expected = (z * fuse.norm.weight + fuse.norm.bias) @ fuse.proj.weight.T + fuse.proj.bias
    torch.testing.assert_close(fuse.eval()(a, b), expected)
    # every stage of both branches reaches the output: changing one stage's mean changes f
    a[1] = a[1] + 1.0
    assert not torch.allclose(fuse(a, b), expected)


def test_fusion_last_stages_only() -> None:
    """``stages="last"``: f = proj(LN(concat[pool(F_a[-1]), pool(F_b[-1])])); earlier stages do not reach it."""
    fuse = MultiScaleFusion(DIMS_A, DIMS_B, out_dim=12, stages="last").double().eval()
    assert fuse.in_features == DIMS_A[-1] + DIMS_B[-1] and "stages='last'" in repr(fuse)
    a = _stages(DIMS_A, (9, 6, 7), dtype=torch.float64)
    b = _stages(DIMS_B, (9, 6, 7), dtype=torch.float64)
    z = torch.cat([a[-1].mean(dim=(2, 3, 4)), b[-1].mean(dim=(2, 3, 4))], dim=1)
    z = torch.nn.functional.layer_norm(z, z.shape[1:], fuse.norm.weight, fuse.norm.bias, fuse.norm.eps)
    expected = fuse.proj(z)
    torch.testing.assert_close(fuse(a, b), expected)
    a[0], b[2] = a[0] + 1.0, b[2] - 1.0
    torch.testing.assert_close(fuse(a, b), expected)
    with pytest.raises(ValueError, match=r"stages: expected 'all' or 'last', got 'first'"):
        MultiScaleFusion(DIMS_A, stages="first")


def test_fusion_bad_input() -> None:
    fuse = MultiScaleFusion(DIMS_A, DIMS_B, out_dim=16)
    a, b = _stages(DIMS_A, (8, 8, 8)), _stages(DIMS_B, (8, 8, 8))
    with pytest.raises(ValueError, match=r"feats_a: expected a list of 4 stage outputs, got 3 tensors"):
        fuse(a[:3], b)
    with pytest.raises(ValueError, match=r"feats_b\[2\]: expected 14 channels on axis 1, got shape \(2, 13"):
        fuse(a, b[:2] + [torch.randn(2, 13, 2, 2, 2)] + b[3:])
    with pytest.raises(ValueError, match=r"feats_a\[0\]: expected a 5-D tensor"):
        fuse([a[0][:, :, 0]] + a[1:], b)
    with pytest.raises(ValueError, match=r"batch size 3 differs"):
        fuse(a, b[:3] + [torch.randn(3, 18, 1, 1, 1)])
    with pytest.raises(ValueError, match=r"no second branch"):
        MultiScaleFusion(DIMS_A, out_dim=8)(a, b)
    with pytest.raises(ValueError, match=r"global_pool: expected 'avg' or 'max', got ''"):
        MultiScaleFusion(DIMS_A, global_pool="")
    with pytest.raises(ValueError, match=r"in_dims_a"):
        MultiScaleFusion((4, 0))


def test_tabular_shapes_gradients_and_missing_values() -> None:
    enc = TabularEncoder(6, 16)
    x = torch.randn(5, 6, requires_grad=True)
    y = enc(x)
    assert y.shape == (5, 16)
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())

    x = torch.randn(5, 6)
    x_missing = x.clone()
    x_missing[:, 2] = float("nan")
    x_zero = x.clone()
    x_zero[:, 2] = 0.0
    y_missing = enc(x_missing)
    assert torch.isfinite(y_missing).all()
    # missing is not the same as a measured zero: the mask reaches the encoder
    assert not torch.allclose(y_missing, enc(x_zero))
    # a missing value's gradient never turns into NaN
    x_missing.requires_grad_()
    enc(x_missing).sum().backward()
    assert torch.isfinite(x_missing.grad).all() and (x_missing.grad[:, 2] == 0).all()


def test_tabular_all_missing_and_dtypes() -> None:
    enc = TabularEncoder(4, 8)
    all_missing = enc(None, batch_size=3)
    torch.testing.assert_close(all_missing, enc(torch.full((3, 4), float("nan"))))
    assert enc.missing(2).isnan().all()
    assert enc(torch.randn(3, 4, dtype=torch.float64)).dtype == torch.float32  # cast to the encoder's dtype
    assert enc.double()(torch.randn(3, 4)).dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert enc.float()(torch.randn(3, 4)).dtype == torch.bfloat16


def test_tabular_bad_input() -> None:
    enc = TabularEncoder(4, 8)
    with pytest.raises(ValueError, match=r"tabular: expected shape \(N, F=4\), got \(3, 5\)"):
        enc(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"tabular: expected shape \(N, F=4\), got \(4,\)"):
        enc(torch.randn(4))
    with pytest.raises(TypeError, match=r"tabular: expected a real floating-point tensor, got dtype torch.int64"):
        enc(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"needs batch_size"):
        enc(None)
    with pytest.raises(ValueError, match=r"num_features: expected a positive int"):
        TabularEncoder(0, 8)
