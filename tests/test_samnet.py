"""SAMNet (paper Fig. 2): the model contract, stage outputs, the ConvNeXtV2 variant, input-size checks."""

from __future__ import annotations

import pytest
import torch

import backbones3d
from backbones3d import samnet as samnet_module
from backbones3d.samnet import SAMNet, samnet_small, samnet_tiny
from spectral3d.layers.samb import SAMB
from spectral3d.layers.samblock import ConvNeXtV2Block3d, SAMBlock

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see tests/conftest.py


def test_contract_forward_backward_stages() -> None:
    model = backbones3d.create_model("test_samnet_3d", num_classes=3, in_chans=2)
    assert model.pretrained_cfg["input_size"] == (2, 32, 32, 32) and model.pretrained_cfg["num_classes"] == 3
    x = torch.randn(2, 2, 32, 32, 64).to(memory_format=torch.channels_last_3d)
    y = model(x)
    assert y.shape == (2, 3) and torch.isfinite(y).all()
    y.square().sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []

    stages = model.forward_stages(x)
    assert [tuple(s.shape) for s in stages] == [
        (2, info["num_chs"], 32 // info["reduction"], 32 // info["reduction"], 64 // info["reduction"])
        for info in model.feature_info
    ]
    torch.testing.assert_close(model.forward_features(x), stages[-1])
    assert model.forward_head(stages[-1], pre_logits=True).shape == (2, model.num_features)
    assert all(isinstance(b, SAMBlock) for s in model.stages for b in s.blocks)


def test_grad_checkpointing_and_reset_classifier() -> None:
    model = samnet_module.test_samnet_3d().eval()
    x = torch.randn(1, 3, 32, 32, 32)
    y = model(x)
    model.set_grad_checkpointing(True)
    torch.testing.assert_close(model(x), y)
    model.reset_classifier(5, global_pool="max")
    assert model(x).shape == (1, 5) and model.get_classifier().out_features == 5
    model.reset_classifier(0)
    assert model(x).shape == (1, model.num_features)
    model.reset_classifier(4, global_pool="")
    assert model(x).shape == (1, 4, 1, 1, 1)


def test_features_only_and_convnextv2_variant() -> None:
    features = SAMNet(in_chans=1, depths=(1, 1, 1, 1), dims=(4, 8, 12, 16), features_only=True)
    assert features.head is None and [f.shape[1] for f in features(torch.randn(1, 1, 32, 32, 32))] == [4, 8, 12, 16]
    with pytest.raises(RuntimeError, match="features_only"):
        features.reset_classifier(3)
    cnv2 = SAMNet(depths=(1, 2, 1, 1), dims=(4, 8, 12, 16), frequency=False)
    blocks = [m for m in cnv2.modules() if isinstance(m, (SAMBlock, ConvNeXtV2Block3d))]
    assert len(blocks) == 5 and all(type(b) is ConvNeXtV2Block3d for b in blocks)
    assert not any("samb" in n for n, _ in cnv2.named_modules())


def test_registered_sizes_and_stochastic_depth() -> None:
    with torch.device("meta"):
        tiny, small = samnet_tiny(), samnet_small(drop_path_rate=0.3)
    assert [i["num_chs"] for i in tiny.feature_info] == [48, 96, 192, 384]
    assert [i["num_chs"] for i in small.feature_info] == [96, 192, 384, 768]
    assert [len(s.blocks) for s in small.stages] == [3, 4, 6, 3]
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for s in small.stages for b in s.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3) and rates == sorted(rates)
    assert sum(p.numel() for p in samnet_module.test_samnet_3d().parameters()) < 2_000_000


def test_spectral_stem_option() -> None:
    """``spectral_stem=True`` adds ``stem.spectral`` (the stem's output = patch stem + band energies); default off."""
    model = SAMNet(in_chans=2, depths=(1, 1), dims=(8, 16), spectral_stem=True).eval()
    assert [n for n in model.state_dict() if n.startswith("stem.")][:4] == [
        "stem.0.weight",
        "stem.0.bias",
        "stem.1.weight",
        "stem.1.bias",
    ]
    x = torch.randn(2, 2, 16, 16, 16)
    torch.testing.assert_close(model.stem(x), model.stem[1](model.stem[0](x)) + model.stem.spectral(x))
    assert model(x).shape == (2, 2)
    with torch.device("meta"):
        assert not any("spectral" in n for n in samnet_tiny().state_dict())
    with pytest.raises(ValueError, match="spectral_stem: .* needs frequency=True"):
        SAMNet(frequency=False, spectral_stem=True)


def test_band_embedding_reaches_every_samb() -> None:
    for flag in (True, False):
        model = SAMNet(in_chans=1, depths=(1, 2), dims=(8, 16), band_embedding=flag, fm_mode="channel")
        sambs = [m for m in model.modules() if isinstance(m, SAMB)]
        assert len(sambs) == 3 and {m.band_embed is not None for m in sambs} == {flag}


def test_bad_input() -> None:
    model = samnet_module.test_samnet_3d()
    with pytest.raises(
        ValueError,
        match=r"size 48 on axis H would be truncated by SAMNet's stride-4 stem and 3 "
        r"stride-2 downsamplings; it must be a positive multiple of 32 on axis H",
    ):
        model(torch.randn(1, 3, 32, 48, 32))
    with pytest.raises(ValueError, match=r"axis W .* multiple of 8 on axis W"):
        SAMNet(depths=(1, 1), dims=(4, 8))(torch.randn(1, 3, 8, 8, 12))
    with pytest.raises(ValueError, match=r"expected 3 channels on axis 1, got 1"):
        model(torch.randn(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match=r"expected a 5-D tensor"):
        model(torch.randn(3, 32, 32, 32))
    with pytest.raises(ValueError, match=r"depths, dims"):
        SAMNet(depths=(1, 1), dims=(4, 8, 16))
