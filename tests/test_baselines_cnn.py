"""The CNN baselines (ResNet-50 / ResNeXt-50, DenseNet-121, EfficientNet) against references nobody here wrote.

* MONAI: parameter counts (and FLOPs) of ``resnet50_3d`` / ``densenet121_3d`` equal its 3D
  ``resnet50`` / ``DenseNet121`` built with the same channels (meta device: no memory, no compute).
* timm: the 2D checkpoints of ``resnet50``, ``resnext50_32x4d``, ``efficientnet_b0`` and
  ``densenet121`` inflate key for key; after centre inflation the 3D network on a depth-1 volume
  computes the 2D network's function (eval mode, float64, every BN statistic randomised).
* Our contract: odd input sizes, bad inputs, constructor validation, heads, checkpointing.
"""

from __future__ import annotations

import math
import re

import pytest
import timm
import torch
from monai.networks.nets import DenseNet121 as MonaiDenseNet121
from monai.networks.nets import resnet50 as monai_resnet50
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import backbones3d
from backbones3d.densenet3d import DenseNet3d
from backbones3d.efficientnet3d import EfficientNet3d
from backbones3d.inflate import inflate_2d
from backbones3d.resnet3d import ResNet3d

TEST_MODELS = ("test_resnet_3d", "test_densenet_3d", "test_efficientnet_3d")
# The smallest cube each test model takes whole (DenseNet's transitions need ceil(n / 4) % 8 == 0).
TEST_SIZE = {"test_resnet_3d": 16, "test_densenet_3d": 32, "test_efficientnet_3d": 16}
# MONAI's resnet50 has a bias on each shortcut conv (bias_downsample=True); timm's has none.
SHORTCUT_BIASES = [f"layer{i}.0.downsample.0.bias" for i in range(1, 5)]


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _macs(model: nn.Module, size: tuple[int, ...]) -> int:
    with torch.device("meta"), FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.empty(1, *size))
    return counter.get_total_flops() // 2


# --------------------------------------------------------------------------------------- MONAI parity


@pytest.mark.parametrize("stem_stride", [1, 2])
@pytest.mark.parametrize(("in_chans", "num_classes"), [(3, 2), (2, 6), (1, 400)])
def test_resnet50_parameter_count_equals_monai(in_chans: int, num_classes: int, stem_stride: int) -> None:
    with torch.device("meta"):
        ours = backbones3d.create_model(
            "resnet50_3d", in_chans=in_chans, num_classes=num_classes, stem_stride=stem_stride
        )
        ref = monai_resnet50(spatial_dims=3, n_input_channels=in_chans, num_classes=num_classes)
    assert _num_params(ours) == _num_params(ref)


@pytest.mark.parametrize(("in_chans", "num_classes"), [(3, 2), (2, 6), (1, 400)])
def test_densenet121_parameter_count_equals_monai(in_chans: int, num_classes: int) -> None:
    with torch.device("meta"):
        ours = backbones3d.create_model("densenet121_3d", in_chans=in_chans, num_classes=num_classes)
        ref = MonaiDenseNet121(spatial_dims=3, in_channels=in_chans, out_channels=num_classes)
    assert _num_params(ours) == _num_params(ref)


def test_macs_equal_monai_and_stem_stride_costs_8x() -> None:
    """Same layers, same arithmetic: MONAI's stride-1 stem ResNet-50 and DenseNet-121 count the same MACs."""
    size = (2, 64, 96, 96)
    with torch.device("meta"):
        resnet_s1 = backbones3d.create_model("resnet50_3d", in_chans=2, stem_stride=1)
        resnet_s2 = backbones3d.create_model("resnet50_3d", in_chans=2)
        densenet = backbones3d.create_model("densenet121_3d", in_chans=2)
        monai_resnet = monai_resnet50(spatial_dims=3, n_input_channels=2, num_classes=2)
        monai_densenet = MonaiDenseNet121(spatial_dims=3, in_channels=2, out_channels=2)
    assert _macs(resnet_s1, size) == _macs(monai_resnet, size)
    assert _macs(densenet, size) == _macs(monai_densenet, size)
    assert _macs(resnet_s1, size) / _macs(resnet_s2, size) == pytest.approx(8.0, rel=0.01)


# ------------------------------------------------------------------------------------ timm key parity


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("name_2d", "name_3d", "kwargs"),
    [
        ("resnet50", "resnet50_3d", dict(downsample_bias=False)),
        ("resnext50_32x4d", "resnext50_32x4d_3d", dict(downsample_bias=False)),
        ("densenet121", "densenet121_3d", {}),
        ("efficientnet_b0", "efficientnet_b0_3d", {}),
        ("efficientnet_b1", "efficientnet_b1_3d", {}),
        ("efficientnet_b2", "efficientnet_b2_3d", {}),
        ("efficientnet_b3", "efficientnet_b3_3d", {}),
    ],
)
def test_state_dict_is_timm_2d_plus_a_kernel_axis(name_2d: str, name_3d: str, kwargs: dict) -> None:
    with torch.device("meta"):
        ref = _shapes(timm.create_model(name_2d, pretrained=False, num_classes=5, in_chans=2))
        ours = _shapes(backbones3d.create_model(name_3d, num_classes=5, in_chans=2, **kwargs))
    assert ours.keys() == ref.keys()
    for key, shape in ref.items():
        expected = shape + shape[-1:] if len(shape) == 4 else shape  # (O, I, k, k) → (O, I, k, k, k)
        assert ours[key] == expected, key


def test_resnet50_default_adds_only_monai_shortcut_biases() -> None:
    with torch.device("meta"):
        ref = _shapes(timm.create_model("resnet50", pretrained=False))
        ours = _shapes(backbones3d.create_model("resnet50_3d"))
    extra = sorted(set(ours) - set(ref))
    assert extra == SHORTCUT_BIASES
    assert set(ref) <= set(ours)
    assert sum(math.prod(ours[k]) for k in extra) == 256 + 512 + 1024 + 2048


# ------------------------------------------------------------------------------------ 2D → 3D inflation


def _randomise_batchnorm(model: nn.Module) -> None:
    """Random affine parameters and running statistics, so that BN is not the identity at init."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize(
    ("name_2d", "name_3d", "kwargs", "only_3d", "dtype"),
    [
        ("resnet50", "resnet50_3d", {}, SHORTCUT_BIASES, torch.float64),  # MONAI's shortcut biases, zero at init
        ("resnext50_32x4d", "resnext50_32x4d_3d", dict(downsample_bias=False), [], torch.float64),  # timm's keys
        # float32: CPU depthwise conv2d in float64 takes seconds per layer (no fast kernel).
        ("efficientnet_b0", "efficientnet_b0_3d", {}, [], torch.float32),
    ],
)
def test_centre_inflated_network_equals_2d_on_a_depth_1_volume(
    name_2d: str, name_3d: str, kwargs: dict, only_3d: list[str], dtype: torch.dtype
) -> None:
    """Every timm key matches, and in eval mode the 3D network on (N, C, 1, H, W) is the 2D one on (N, C, H, W).

    Depth 1 is exact, not approximate: a centre-inflated k³ kernel only sees the real slice (its
    other depth taps meet zero padding), strided layers map depth 1 → 1, and BN (eval) and the
    global pool over a single slice are the 2D operations.
    """
    model2d = timm.create_model(name_2d, pretrained=False, in_chans=2, num_classes=5).to(dtype).eval()
    _randomise_batchnorm(model2d)
    model3d = backbones3d.create_model(name_3d, in_chans=2, num_classes=5, **kwargs).to(dtype).eval()
    report = inflate_2d(model3d, model2d, mode="center")  # strict: the zero shortcut biases are reported only
    assert report.left_at_init == only_3d and not report.unmatched_3d and not report.classifier
    assert not report.unmatched_2d and not report.mis_shaped
    assert len(report.matched) == len(model2d.state_dict())
    for key in only_3d:
        assert not model3d.state_dict()[key].any()
    x = torch.randn(2, 2, 40, 24, dtype=dtype)
    tolerance = {} if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)  # float32: summation order differs
    with torch.no_grad():
        expected = model2d(x)
        torch.testing.assert_close(model3d(x.unsqueeze(2)), expected, **tolerance)
    assert expected.std() > 0.01  # a non-degenerate function was compared


def test_zero_biases_and_another_class_count_are_reported_not_fatal() -> None:
    """timm's rule for the head (a classifier of another class count stays at its init) and zero biases the
    source lacks (the identity) are reported; a mis-shaped body weight or a non-zero extra bias still raise."""
    model3d = backbones3d.create_model("test_resnet_3d", num_classes=2)
    state = model3d.state_dict()
    source = {k: (v[:, :, v.shape[2] // 2] if v.ndim == 5 else v).clone() for k, v in state.items()}
    for key in SHORTCUT_BIASES:  # what a timm ResNet lacks
        assert not source.pop(key).any()
    source["fc.weight"], source["fc.bias"] = torch.randn(7, 256), torch.randn(7)  # a 7-class 2-D checkpoint
    head = model3d.fc.weight.detach().clone()
    report = inflate_2d(model3d, source)
    assert report.left_at_init == SHORTCUT_BIASES and not report.unmatched_3d
    assert report.classifier == [("fc.weight", (7, 256), (2, 256)), ("fc.bias", (7,), (2,))]
    assert report.body_complete and not report.complete and "classifier left at initialisation" in str(report)
    assert torch.equal(model3d.fc.weight, head)
    torch.testing.assert_close(model3d.conv1.weight[:, :, 3], source["conv1.weight"])
    with pytest.raises(RuntimeError, match=r"mis-shaped: layer1\.0\.conv1\.weight"):
        inflate_2d(model3d, {**source, "layer1.0.conv1.weight": torch.randn(9, 8, 1, 1)})
    with torch.no_grad():
        model3d.layer1[0].downsample[0].bias.fill_(0.1)
    with pytest.raises(RuntimeError, match=r"unmatched 3-D: layer1\.0\.downsample\.0\.bias"):
        inflate_2d(model3d, source)


def test_densenet121_inflates_key_for_key() -> None:
    report = inflate_2d(backbones3d.create_model("densenet121_3d"), timm.create_model("densenet121", num_classes=2))
    assert report.complete and len(report.inflated) == 1 + 2 * 58 + 3  # stem, 58 dense layers, 3 transitions


# ------------------------------------------------------------------------------------ shapes and input


@pytest.mark.parametrize("name", TEST_MODELS)
def test_test_models_are_small(name: str) -> None:
    model = backbones3d.create_model(name)
    assert _num_params(model) < 2_000_000
    assert model.pretrained_cfg["input_size"] == (3, 32, 32, 32)


@pytest.mark.parametrize("size", [(1, 1, 1), (5, 7, 33), (17, 2, 9)])
@pytest.mark.parametrize(
    ("name", "kwargs", "reduction"),
    [
        ("test_resnet_3d", {}, 32),
        ("test_resnet_3d", dict(stem_stride=(1, 2, 1)), (16, 32, 16)),
        ("test_efficientnet_3d", {}, 32),
    ],
)
def test_padded_networks_accept_any_size(name: str, kwargs: dict, reduction, size: tuple[int, int, int]) -> None:
    model = backbones3d.create_model(name, num_classes=3, **kwargs).eval()
    reduction = (reduction,) * 3 if isinstance(reduction, int) else reduction
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert features.shape == (2, model.num_features, *(math.ceil(s / r) for s, r in zip(size, reduction)))
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()


def test_densenet_accepts_sizes_it_does_not_truncate() -> None:
    model = backbones3d.create_model("test_densenet_3d").eval()
    x = torch.randn(1, 3, 29, 32, 61)  # ceil(n / 4) = 8, 8, 16: every transition sees an even extent
    with torch.no_grad():
        assert model.forward_features(x).shape == (1, model.num_features, 1, 1, 2)


@pytest.mark.parametrize(("size", "axis", "transition"), [((32, 28, 32), "H", 1), ((32, 32, 80), "W", 3)])
def test_densenet_rejects_sizes_a_transition_would_truncate(size, axis: str, transition: int) -> None:
    model = backbones3d.create_model("test_densenet_3d")
    bad = size[("D", "H", "W").index(axis)]
    with pytest.raises(ValueError, match=rf"size {bad} on axis {axis} would be truncated by transition{transition}"):
        model(torch.randn(1, 3, *size))


@pytest.mark.parametrize("name", TEST_MODELS)
def test_bad_input(name: str) -> None:
    model = backbones3d.create_model(name, in_chans=2)
    with pytest.raises(ValueError, match=r"expected a 5-D tensor \(N, C, D, H, W\), got shape \(2, 32, 32, 32\)"):
        model(torch.randn(2, 32, 32, 32))
    with pytest.raises(ValueError, match="expected 2 channels on axis 1, got 3"):
        model(torch.randn(1, 3, 32, 32, 32))
    with pytest.raises(TypeError, match="floating-point tensor, got dtype torch.int64"):
        model(torch.ones(1, 2, 32, 32, 32, dtype=torch.long))
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        model([[0.0]])


@pytest.mark.parametrize("cls", [ResNet3d, DenseNet3d, EfficientNet3d])
def test_constructor_validation(cls: type[nn.Module]) -> None:
    with pytest.raises(ValueError, match="global_pool: expected one of 'avg', 'max' or ''"):
        cls(global_pool="mean")
    with pytest.raises(ValueError, match=r"drop_rate: expected a probability in \[0, 1\), got 1.0"):
        cls(drop_rate=1.0)
    with pytest.raises(ValueError, match="drop_path_rate: expected a probability"):
        cls(drop_path_rate=-0.1)
    with pytest.raises(ValueError, match="in_chans: expected an int >= 1, got 0"):
        cls(in_chans=0)
    with pytest.raises(TypeError, match="num_classes: expected an int, got float"):
        cls(num_classes=2.0)


def test_resnet_constructor_validation() -> None:
    with pytest.raises(ValueError, match="layers: expected 4 stage depths, got 3"):
        ResNet3d(layers=(3, 4, 6))
    with pytest.raises(ValueError, match="stem_stride: expected a positive size on axis H, got 0"):
        ResNet3d(stem_stride=(1, 0, 2))


# ------------------------------------------------------------------------------------ the model contract


@pytest.mark.parametrize("name", TEST_MODELS)
def test_heads_and_classifier_reset(name: str) -> None:
    model = backbones3d.create_model(name, in_chans=2, num_classes=4).eval()
    x = torch.randn(2, 2, *(TEST_SIZE[name],) * 3)
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        logits = model(x)
        torch.testing.assert_close(pooled, features.mean(dim=(2, 3, 4)))
        torch.testing.assert_close(model.get_classifier()(pooled), logits)
        assert model.get_classifier().out_features == 4

        model.reset_classifier(6, global_pool="max")
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), features.amax(dim=(2, 3, 4)))
        assert model(x).shape == (2, 6)

        model.reset_classifier(5, global_pool="")  # no pooling: the classifier runs at every voxel
        dense = model(x)
        assert dense.shape == (2, 5, *features.shape[2:])
        torch.testing.assert_close(dense[:, :, 0, 0, 0], model.get_classifier()(features[:, :, 0, 0, 0]))

        model.reset_classifier(0, global_pool="avg")
        assert model(x).shape == (2, model.num_features)


#: Parameters whose gradient is zero in exact arithmetic, for every input: their output reaches the loss only
#: through train-mode BatchNorms, which subtract each channel's batch mean (so a float32 run shows either 0 or
#: rounding noise there, depending on the machine).
ZERO_GRADIENT = {
    "test_resnet_3d": r"layer\d\.0\.downsample\.0\.bias",  # a shortcut conv's bias straight into its BatchNorm
    "test_densenet_3d": r"(?!)",  # none: every BatchNorm is followed by a ReLU
    # a block ends in a BatchNorm without activation (bn3; bn2 of the depthwise-separable first block): its bias
    # meets only residual sums and 1×1×1 convolutions (constant-preserving) before the next train-mode BatchNorm
    "test_efficientnet_3d": r"blocks\.0\.0\.bn2\.bias|blocks\.\d\.\d\.bn3\.bias",
}


def _structured_input(name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Batch 3 (a train-mode BatchNorm over 2 values outputs ±1 whatever its input, which leaves tiny
    gradients upstream), with half of the volume constant and of opposite signs in the two channels: some
    stem max-pool windows then hold no positive value, so the stem BatchNorm's bias is not a pure shift
    (with noise alone every window maximum is positive and that bias has a zero gradient too)."""
    size = TEST_SIZE[name]
    x = torch.randn(3, 2, size, size, size, dtype=dtype)
    x[:, 0, : size // 2], x[:, 1, : size // 2] = -2.0, 2.0
    return x


@pytest.mark.parametrize("name", TEST_MODELS)
def test_zero_gradients_are_exactly_the_structural_ones(name: str) -> None:
    """In float64, shifting a bias by 1 leaves the output unchanged exactly for the ``ZERO_GRADIENT`` biases
    and changes it for every other one."""
    model = backbones3d.create_model(name, in_chans=2).double()
    x = _structured_input(name, torch.float64)
    invariant = set()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # dozens of small forwards: extra threads only spin on a busy machine
    try:
        _shift_each_bias(model, x, invariant)
    finally:
        torch.set_num_threads(threads)
    expected = {n for n, _ in model.named_parameters() if re.fullmatch(ZERO_GRADIENT[name], n)}
    assert invariant == expected


def _shift_each_bias(model: nn.Module, x: torch.Tensor, invariant: set[str]) -> None:
    with torch.no_grad():
        reference = model(x)
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.add_(1.0)
                if (model(x) - reference).abs().max() <= 1e-7 * reference.abs().max():
                    invariant.add(n)
                p.sub_(1.0)


@pytest.mark.parametrize("name", TEST_MODELS)
def test_backward_reaches_every_parameter_and_checkpointing_is_exact(name: str) -> None:
    """Every parameter outside ``ZERO_GRADIENT`` gets a gradient well above rounding noise; those inside
    get none beyond it."""
    model = backbones3d.create_model(name, in_chans=2)
    x = _structured_input(name)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        out = model(x)
        out.square().sum().backward()
        return out.detach(), [p.grad for p in model.parameters()]

    out, grads = run()
    size = {n: float(p.grad.abs().max()) if p.grad is not None else 0.0 for n, p in model.named_parameters()}
    top = max(size.values())
    zero = {n for n in size if re.fullmatch(ZERO_GRADIENT[name], n)}
    assert not [n for n, g in size.items() if n not in zero and g <= 1e-6 * top], "no gradient reaches these"
    assert not [n for n in zero if size[n] > 1e-6 * top], "a gradient where the structure allows none"
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing
    out_ckpt, grads_ckpt = run()
    torch.testing.assert_close(out_ckpt, out)
    for g, g_ckpt in zip(grads, grads_ckpt):
        torch.testing.assert_close(g_ckpt, g)


@pytest.mark.parametrize("name", TEST_MODELS)
def test_drop_path_is_stochastic_in_training_only(name: str) -> None:
    model = backbones3d.create_model(name, drop_path_rate=0.5).train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eval()  # batch statistics of a tiny batch would renormalise the dropped paths away
    x = torch.randn(2, 3, *(TEST_SIZE[name],) * 3)
    with torch.no_grad():
        a, b = model.forward_features(x), model.forward_features(x)
        assert not torch.allclose(a, b)
        model.eval()
        torch.testing.assert_close(model.forward_features(x), model.forward_features(x))


def test_stem_stride_is_a_documented_choice() -> None:
    with torch.device("meta"):
        model = backbones3d.create_model("resnet50_3d")
    assert model.stem_stride == (2, 2, 2) and model.conv1.stride == (2, 2, 2)
    assert model.conv1.bias is None and model.conv1.kernel_size == (7, 7, 7)
    assert "stem_stride=(2, 2, 2)" in repr(model)
