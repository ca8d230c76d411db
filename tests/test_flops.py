"""spectral3d.flops: FFT formulas, registration, meta counting, uncounted ops, fvcore/MONAI cross-checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from spectral3d import flops

aten = torch.ops.aten


class SpectralRoundTrip(nn.Module):
    """rfftn → irfftn over (D, H, W) and nothing else (SAMB's transform pair)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.rfftn(x, dim=(-3, -2, -1), norm="ortho")
        return torch.fft.irfftn(spec, s=x.shape[-3:], dim=(-3, -2, -1), norm="ortho")


class ComplexRoundTrip(nn.Module):
    """fftn → ifftn over (H, W) of a complex tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifftn(torch.fft.fftn(x, dim=(-2, -1)), dim=(-2, -1))


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv(x)).mean(dim=(-3, -2, -1))
        return self.fc(self.norm(y))


def _analytic_pair(shape: tuple[int, ...]) -> float:
    n = math.prod(shape[-3:])
    batch = math.prod(shape[:-3])
    return 2 * batch * 2.5 * n * math.log2(n)


@pytest.mark.parametrize("shape", [(2, 3, 8, 10, 12), (1, 2, 7, 9, 11), (3, 1, 16, 16, 5)])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_rfftn_irfftn_equals_analytic_formula(shape, device):
    x = torch.randn(*shape, device=device)
    rep = flops.count(SpectralRoundTrip(), x)
    expected = _analytic_pair(shape)
    assert rep.flops > 0
    assert rep.flops == pytest.approx(expected, abs=1)  # the issue allows 10 %; exact up to rounding
    # c2r's n is the real length (odd W included), so both halves cost the same
    assert rep.by_op["aten._fft_r2c"] == rep.by_op["aten._fft_c2r"]
    assert rep.macs == rep.flops / 2


def test_c2c_formula_and_batch_is_untransformed_dims():
    x = torch.randn(2, 3, 6, 10, dtype=torch.complex64)
    rep = flops.count(ComplexRoundTrip(), x)
    n, batch = 60, 6
    assert rep.flops == pytest.approx(2 * batch * 5 * n * math.log2(n), abs=1)


def test_fft_flops_helper_and_validation():
    assert flops.fft_flops((4, 8), dim=(-1,), kind="r2c") == round(4 * 2.5 * 8 * 3)
    assert flops.fft_flops((4, 8), dim=(0, 1), kind="c2c") == round(5 * 32 * 5)
    assert flops.fft_flops((5, 1), dim=(1,), kind="c2r") == 0  # a 1-point transform is free
    with pytest.raises(ValueError, match="kind: expected"):
        flops.fft_flops((4, 8), dim=(0,), kind="dct")
    with pytest.raises(ValueError, match="dim: axis 2 is out of range"):
        flops.fft_flops((4, 8), dim=(2,), kind="r2c")


def test_plain_flop_counter_mode_sees_ffts_after_import():
    x = torch.randn(1, 2, 8, 8, 8, device="meta")
    with FlopCounterMode(display=False) as counter:
        SpectralRoundTrip()(x)
    assert counter.get_total_flops() == pytest.approx(_analytic_pair(x.shape), abs=1)


def test_registration_is_idempotent_and_keeps_torch_formulas():
    mm_formula = flop_counter.flop_registry[aten.mm]
    r2c_formula = flop_counter.flop_registry[aten._fft_r2c]
    assert flops.register_flop_formulas() == []
    assert flops.register_flop_formulas() == []
    assert flop_counter.flop_registry[aten.mm] is mm_formula
    assert flop_counter.flop_registry[aten._fft_r2c] is r2c_formula


def test_sdpa_on_cpu_is_counted_like_on_meta():
    b, h, length, e = 2, 3, 40, 16
    q, k, v = (torch.randn(b, h, length, e) for _ in range(3))
    on_cpu = flops.count(lambda *t: F.scaled_dot_product_attention(*t), q, k, v)
    on_meta = flops.count(lambda *t: F.scaled_dot_product_attention(*t), q.to("meta"), k.to("meta"), v.to("meta"))
    expected = 4 * b * h * length * length * e
    assert on_cpu.flops == expected
    assert on_meta.flops == expected


def test_meta_count_equals_cpu_count_and_breakdowns_add_up():
    net = SmallNet()
    x = torch.randn(2, 2, 6, 5, 4)
    on_cpu = flops.count(net, x)
    on_meta = flops.count(net.to("meta"), x.to("meta"))
    conv = 2 * (2 * 6 * 5 * 4) * 4 * 2 * 27
    linear = 2 * 2 * 4 * 3
    assert on_cpu.flops == on_meta.flops == conv + linear
    assert on_meta.params == sum(p.numel() for p in net.parameters())
    assert sum(on_meta.by_op.values()) == on_meta.flops
    assert on_meta.module_flops()["SmallNet"] == on_meta.flops
    assert on_meta.module_flops(depth=2) == {"SmallNet": conv + linear, "SmallNet.conv": conv, "SmallNet.fc": linear}
    assert on_meta.inputs == [(2, 2, 6, 5, 4)]


def test_uncounted_ops_are_listed_with_call_counts():
    rep = flops.count(SmallNet().to("meta"), torch.randn(1, 2, 4, 4, 4, device="meta"))
    assert rep.uncounted.get("aten.gelu") == 1
    assert rep.uncounted.get("aten.mean") == 1
    assert any("layer_norm" in op for op in rep.uncounted)
    assert not any(op in rep.uncounted for op in ("aten.view", "aten.t", "aten.detach", "aten.convolution"))
    text = rep.table()
    assert "not counted" in text and "aten.gelu×1" in text


def test_count_restores_training_mode_and_validates():
    net = SmallNet().to("meta").train()
    flops.count(net, torch.randn(1, 2, 4, 4, 4, device="meta"))
    assert net.training
    with pytest.raises(TypeError, match="model: expected an nn.Module or a callable"):
        flops.count(3, torch.randn(1))


def test_pooling_is_opt_in():
    x = torch.randn(1, 2, 8, 8, 8, device="meta")
    pool = nn.MaxPool3d(3, stride=2, padding=1)
    assert flops.count(pool, x).flops == 0
    assert "aten.max_pool3d_with_indices" in flops.count(pool, x).uncounted
    assert flops.count(pool, x, count_pooling=True).flops == 2 * 4**3 * 27
    assert flops.count(nn.AvgPool3d(2), x, count_pooling=True).flops == 2 * 4**3 * 8


def test_model_inputs_from_cfg():
    (x,), _ = flops.model_inputs({"input_size": (3, 64, 96, 96)}, input_size=(8, 16, 24), batch=2)
    assert x.shape == (2, 3, 8, 16, 24) and x.is_meta
    cfg = {"input_size": (3, 64, 96, 96), "sequences": ["t1", "t2", "t2fs"], "num_tabular": 8}
    args, _ = flops.model_inputs(cfg, input_size=16)
    assert [tuple(a.shape) for a in args] == [(1, 3, 16, 16, 16), (1, 8)]
    with pytest.raises(ValueError, match="input_size: expected"):
        flops.model_inputs(cfg, input_size=(16, 16))
    with pytest.raises(ValueError, match="batch: expected"):
        flops.model_inputs(cfg, batch=0)


def test_fvcore_with_our_fft_handles_matches():
    x = torch.randn(2, 3, 7, 8, 9)
    macs, per_op = flops.fvcore_macs(SpectralRoundTrip(), x, by_operator=True)
    assert 2 * macs == pytest.approx(flops.count(SpectralRoundTrip(), x).flops, rel=1e-6)
    assert set(per_op) == {"fft_rfftn", "fft_irfftn"}


def _cross_check(model: nn.Module, x: torch.Tensor) -> None:
    """Our count == FlopCounterMode's own (on meta) == 2 × fvcore MACs (a CPU trace) within 1 %."""
    macs = flops.fvcore_macs(model, x)
    model, x = model.to("meta").eval(), x.to("meta")
    ours = flops.count(model, x)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert ours.flops > 0
    assert ours.flops == counter.get_total_flops()
    assert ours.flops == pytest.approx(2 * macs, rel=0.01)


@pytest.mark.parametrize("name", ["resnet50_3d", "densenet121_3d"])
def test_registry_baselines_cross_check(name):
    backbones3d = pytest.importorskip("backbones3d")
    if not backbones3d.is_model(name):
        pytest.skip(f"{name} is not registered yet")
    model = backbones3d.create_model(name, in_chans=1)
    _cross_check(model, torch.randn(1, 1, 32, 32, 32))


@pytest.mark.parametrize("name", ["DenseNet121", "resnet50"])
def test_monai_baselines_cross_check(name):
    nets = pytest.importorskip("monai.networks.nets")
    model = nets.DenseNet121(3, 1, 2) if name == "DenseNet121" else nets.resnet50(spatial_dims=3, n_input_channels=1)
    _cross_check(model, torch.randn(1, 1, 32, 32, 32))


def test_count_model_from_registry_on_meta():
    backbones3d = pytest.importorskip("backbones3d")
    names = backbones3d.list_models("test_*")
    if not names:
        pytest.skip("no test_* model registered yet")
    name = names[0]
    rep = flops.count_model(name)
    cfg = backbones3d.get_pretrained_cfg(name)
    assert rep.flops > 0
    assert rep.inputs[0] == (1, *cfg["input_size"])
    assert flops.count_model(name, batch=2).flops == 2 * rep.flops


def test_meta_fallback_for_constructors_that_read_values():
    class ReadsValues(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rates = torch.linspace(0, 0.1, 3).tolist()  # fails under torch.device("meta")
            self.conv = nn.Conv3d(1, 2, 3)
            self.register_buffer("scale", torch.full((2,), 0.5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * self.scale.view(1, 2, 1, 1, 1)

    with pytest.raises(NotImplementedError), torch.device("meta"):
        ReadsValues()
    with flops._parameters_on_meta():
        model = ReadsValues()
    assert model.conv.weight.is_meta and model.scale.is_meta and model.conv.weight.requires_grad
    assert flops.count(model, torch.randn(1, 1, 5, 5, 5, device="meta")).flops == 2 * 2 * 27 * 27
    assert not nn.Conv3d(1, 1, 1).weight.is_meta  # the patch is undone
