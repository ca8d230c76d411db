"""DRLM (paper Eq. 3–5): shapes, symmetry, exact-zero losses, training, detached targets, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spectral3d.layers.drlm import DRLM, DRLMOutput

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see tests/conftest.py


class _TakeFirst(nn.Module):
    """A decoder that returns the first ``dim`` entries of its input (i.e. the unique vector)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[..., : self.dim]


@pytest.mark.parametrize("s", [2, 3, 4])
def test_shapes_gradients_and_list_input(s: int) -> None:
    drlm = DRLM(s, 16, unique_dim=8, shared_dim=12, hidden_dim=20)
    feats = torch.randn(3, s, 16, requires_grad=True)
    out = drlm(feats)
    assert isinstance(out, DRLMOutput)
    assert out.representation.shape == (3, s * 8 + 12) and drlm.out_dim == s * 8 + 12
    assert set(out.losses) == {"self", "cross"} and all(v.ndim == 0 and v > 0 for v in out.losses.values())
    (out.representation.square().mean() + sum(out.losses.values())).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in drlm.parameters())
    out_list = drlm(list(feats.detach().unbind(1)))
    torch.testing.assert_close(out_list.representation, out.representation.detach())


def test_shared_encoder_is_symmetric() -> None:
    drlm = DRLM(3, 16)
    a, b = torch.randn(4, 16), torch.randn(4, 16)
    torch.testing.assert_close(drlm.shared_encoder(a, b), drlm.shared_encoder(b, a), rtol=0, atol=0)
    assert not torch.allclose(drlm.shared_encoder(a, a), drlm.shared_encoder(a, b))


@pytest.mark.parametrize("s", [2, 3])
def test_losses_exactly_zero_when_decoders_reproduce_targets(s: int) -> None:
    d = 8
    drlm = DRLM(s, d)
    feats = torch.randn(5, s, d)
    assert all(v > 0 for v in drlm(feats).losses.values())
    # Make U_i = f_i and let the decoders return U_i: SRF_i = CRF_i = f_i exactly.
    drlm.unique_encoders = nn.ModuleList(nn.Identity() for _ in range(s))
    drlm.self_decoders = nn.ModuleList(_TakeFirst(d) for _ in range(s))
    drlm.cross_decoders = nn.ModuleList(_TakeFirst(d) for _ in range(s))
    losses = drlm(feats).losses
    assert losses["self"].item() == 0.0 and losses["cross"].item() == 0.0


def test_cross_path_for_two_sequences_uses_the_other_sequence_alone() -> None:
    torch.manual_seed(1)
    drlm = DRLM(2, 8)
    f = torch.randn(4, 2, 8)
    g = f.clone()
    g[:, 0] = torch.randn(4, 8)  # change sequence 0 only
    # CRF_1 = CDec_1(U_1, Enc_s(f_0, f_0)) changes, while the cross input of sequence 0 is U_0 and Enc_s(f_1, f_1).
    seen = []
    drlm.cross_decoders[0].register_forward_hook(lambda m, i, o: seen.append(i[0][:, 8:].clone()))
    drlm(f)
    drlm(g)
    torch.testing.assert_close(seen[0], seen[1])  # sequence 0's shared input does not depend on f_0
    torch.testing.assert_close(seen[0], drlm.shared_encoder(f[:, 1], f[:, 1]))


@pytest.mark.parametrize("s", [2, 3])
def test_trains_with_decreasing_loss(s: int) -> None:
    torch.manual_seed(0)
    drlm = DRLM(s, 16, hidden_dim=32)
    feats = torch.randn(16, s, 16)
    opt = torch.optim.Adam(drlm.parameters(), lr=1e-2)
    history = []
    for _ in range(40):
        losses = drlm(feats).losses
        loss = losses["self"] + losses["cross"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.6 * history[0] and min(history[-5:]) < min(history[:5])


def test_detach_targets() -> None:
    f = torch.randn(2, 3, 8, requires_grad=True)
    DRLM(3, 8, detach_targets=True)(f).losses["self"].backward()
    g_detached = f.grad.clone()
    f.grad = None
    DRLM(3, 8, detach_targets=False)(f).losses["self"].backward()
    # With targets attached, the loss also pulls f toward the reconstruction: a different gradient.
    assert not torch.allclose(g_detached, f.grad)


def test_flags_build_only_requested_decoders_and_shared_unique_encoder() -> None:
    drlm = DRLM(3, 8, self_reconstruction=False, share_unique_encoder=True)
    assert drlm.self_decoders is None and len(drlm.unique_encoders) == 1
    assert set(drlm(torch.randn(2, 3, 8)).losses) == {"cross"}
    assert set(DRLM(3, 8, cross_reconstruction=False)(torch.randn(2, 3, 8)).losses) == {"self"}


def test_float64_and_bf16_autocast() -> None:
    drlm = DRLM(3, 8).double()
    out = drlm(torch.randn(2, 3, 8, dtype=torch.float64))
    assert out.representation.dtype == torch.float64 and out.losses["self"].dtype == torch.float64
    drlm = DRLM(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = drlm(torch.randn(2, 3, 8))
    assert out.representation.dtype == torch.bfloat16
    assert out.losses["cross"].dtype == torch.float32 and torch.isfinite(out.losses["cross"])


def test_bad_input() -> None:
    drlm = DRLM(3, 8)
    with pytest.raises(ValueError, match=r"expected a 3-D tensor"):
        drlm(torch.randn(2, 24))
    with pytest.raises(ValueError, match=r"expected shape \(N, S=3, d=8\), got \(2, 2, 8\)"):
        drlm(torch.randn(2, 2, 8))
    with pytest.raises(ValueError, match=r"expected shape \(N, S=3, d=8\), got \(2, 3, 7\)"):
        drlm(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match=r"expected S=3 tensors .* got 2"):
        drlm([torch.randn(2, 8), torch.randn(2, 8)])
    with pytest.raises(ValueError, match=r"features\[1\]: expected shape \(N, d=8\), got \(2, 9\)"):
        drlm([torch.randn(2, 8), torch.randn(2, 9), torch.randn(2, 8)])
    with pytest.raises(ValueError, match=r"features\[2\]: batch size 3 differs"):
        drlm([torch.randn(2, 8), torch.randn(2, 8), torch.randn(3, 8)])
    with pytest.raises(ValueError, match=r"num_sequences: expected an int >= 2, got 1"):
        DRLM(1, 8)
    with pytest.raises(ValueError, match=r"dim: expected a positive int"):
        DRLM(2, 0)


def test_self_and_cross_losses_start_equal_because_the_decoders_start_near_zero() -> None:
    """The logged L_self and L_cross of a short run agree to several decimals: both are mean |f_i| while the
    decoders output almost nothing. The two paths are nevertheless different functions."""
    drlm = DRLM(3, 16)
    feats = torch.randn(4, 3, 16)
    with torch.no_grad():
        losses = drlm(feats).losses
        assert float(losses["self"]) == pytest.approx(float(feats.abs().mean()), rel=1e-2)
        assert float(losses["cross"]) == pytest.approx(float(feats.abs().mean()), rel=1e-2)
        for p in drlm.parameters():  # decoders that have learned something: the losses part
            p.normal_(0.0, 0.3)
        losses = drlm(feats).losses
    assert abs(float(losses["self"] - losses["cross"])) > 1e-2 * float(losses["self"])
