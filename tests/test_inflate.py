"""inflate_2d: timm mambaout_femto → mambaout_femto_3d parity, the mean mode, and the report's honesty."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.mambaout import MambaOut
from torch import nn

import backbones3d
from backbones3d import InflationReport, inflate_2d

TINY = dict(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64))


@pytest.fixture(scope="module")
def femto_pair() -> tuple[nn.Module, nn.Module, InflationReport]:
    """timm's mambaout_femto (random init, no download) and its centre-inflated 3-D twin."""
    torch.manual_seed(0)
    model2d = timm.create_model("mambaout_femto", pretrained=False, num_classes=2).eval()
    with torch.device("meta"):  # every parameter is overwritten below (strict inflation), so skip the init
        model3d = backbones3d.create_model("mambaout_femto_3d")
    model3d = model3d.to_empty(device="cpu").eval()
    report = inflate_2d(model3d, model2d)
    return model2d, model3d, report


@pytest.mark.parametrize("hw", [(32, 32), (23, 45)])
def test_center_inflated_femto_reproduces_timm_logits(femto_pair, hw):
    model2d, model3d, report = femto_pair
    assert report.complete and len(report.matched) == len(model3d.state_dict())
    image = torch.randn(2, 3, *hw)
    with torch.no_grad():
        expected = model2d(image)
        got = model3d(image.unsqueeze(2))  # a depth-1 volume
    rel = ((got - expected).abs().max() / expected.abs().max()).item()
    assert rel <= 1e-4, f"max relative difference {rel:.2e}"
    assert expected.std() > 0  # the comparison is not between constants


def test_mean_mode_kernels_give_the_2d_response_on_depth_constant_volumes():
    """Every inflated kernel, on a volume constant along depth, equals its 2-D conv (valid depth positions)."""
    torch.manual_seed(0)
    model2d = MambaOut(**TINY, num_classes=3).double()
    model3d = backbones3d.create_model("test_mambaout_3d", num_classes=3).double()
    report = inflate_2d(model3d, model2d, mode="mean")
    assert report.complete and len(report.inflated) == 9  # 2 stem, 3 downsampling, 4 block convs
    convs2d = dict(model2d.named_modules())
    for name in report.inflated:
        conv3d = model3d.get_submodule(name.removesuffix(".weight"))
        conv2d = convs2d[name.removesuffix(".weight")]
        kd = conv3d.kernel_size[0]
        image = torch.randn(2, conv2d.in_channels, 9, 10, dtype=torch.float64)
        volume = image.unsqueeze(2).expand(-1, -1, kd + 2, -1, -1)
        expected = conv2d(image)
        got = F.conv3d(
            volume,
            conv3d.weight,
            conv3d.bias,
            stride=(1, *conv3d.stride[1:]),
            padding=(0, *conv3d.padding[1:]),
            groups=conv3d.groups,
        )
        assert got.shape[2] == 3
        for d in range(3):
            torch.testing.assert_close(got[:, :, d], expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(conv3d.weight.sum(2), conv2d.weight)  # replicate ÷ kd


def test_center_mode_puts_the_kernel_on_the_middle_slice():
    model2d = MambaOut(**TINY)
    model3d = backbones3d.create_model("test_mambaout_3d", num_classes=1000)
    inflate_2d(model3d, model2d.state_dict())
    w3, w2 = model3d.stem.conv1.weight, model2d.stem.conv1.weight
    assert torch.equal(w3[:, :, 1], w2) and not w3[:, :, 0].any() and not w3[:, :, 2].any()
    assert torch.equal(model3d.head.fc.weight, model2d.head.fc.weight)


def test_strict_raises_and_loads_nothing():
    state2d = MambaOut(**TINY, num_classes=1000).state_dict()  # 1000 classes vs 2: reported, not fatal
    state2d["stages.0.blocks.0.fc1.weight"] = torch.randn(7, 16)  # a mis-shaped body weight: fatal
    model3d = backbones3d.create_model("test_mambaout_3d")
    before = {k: v.clone() for k, v in model3d.state_dict().items()}
    with pytest.raises(RuntimeError, match=r"1 mis-shaped[\s\S]*fc1.weight: source \(7, 16\)"):
        inflate_2d(model3d, state2d)
    assert all(torch.equal(v, before[k]) for k, v in model3d.state_dict().items())


def test_non_strict_loads_the_matched_keys_and_reports_the_rest():
    state2d = MambaOut(**TINY, num_classes=1000).state_dict()
    state2d["extra.weight"] = torch.randn(3)
    del state2d["stages.3.blocks.0.fc2.weight"]
    model3d = backbones3d.create_model("test_mambaout_3d")
    report = inflate_2d(model3d, state2d, strict=False)
    assert report.unmatched_2d == ["extra.weight"]
    assert report.unmatched_3d == ["stages.3.blocks.0.fc2.weight"]
    assert [k for k, _, _ in report.classifier] == ["head.fc.weight", "head.fc.bias"] and not report.mis_shaped
    assert not report.complete and not report.body_complete
    assert torch.equal(model3d.stages[3].blocks[0].fc1.weight, state2d["stages.3.blocks.0.fc1.weight"])
    text = str(report)
    assert "2 classifier tensors left at initialisation" in text and "unmatched source: extra.weight" in text
    assert "unmatched 3-D: stages.3.blocks.0.fc2.weight" in text


def test_bad_arguments():
    model3d = backbones3d.create_model("test_mambaout_3d")
    with pytest.raises(ValueError, match=r"mode: expected one of \('center', 'mean'\), got 'edge'"):
        inflate_2d(model3d, {}, mode="edge")
    with pytest.raises(TypeError, match=r"source: expected an nn.Module or a mapping"):
        inflate_2d(model3d, [1, 2])
