"""Registry and builder: timm integration, filters, errors, local pretrained loading and adaptation."""

from __future__ import annotations

import sys
import types

import pytest
import safetensors.torch
import timm
import torch
from torch import nn

import backbones3d
from backbones3d import _registry
from backbones3d._builder import adapt_input_conv_3d, build_model_with_cfg
from backbones3d.mambaout3d import MambaOut3d

NAME = "test_mambaout_3d"


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- timm integration -----------------------------------------------------------------------------------------


def test_timm_create_model_and_list_models():
    model = timm.create_model(NAME, num_classes=3, drop_path_rate=0.1)
    assert isinstance(model, MambaOut3d) and model.num_classes == 3
    assert model.pretrained_cfg["num_classes"] == 3 and model.pretrained_cfg["architecture"] == NAME
    assert model(torch.randn(1, 3, 8, 9, 10)).shape == (1, 3)
    ours = backbones3d.list_models()
    assert set(ours) <= set(timm.list_models("*"))
    assert timm.list_models("mambaout_*_3d") == backbones3d.list_models("mambaout_*_3d")
    assert "mambaout3d" in timm.list_modules()
    assert set(timm.list_models(module="mambaout3d")) == set(backbones3d.list_models(module="mambaout3d"))
    # timm's own 2-D models stay what they were.
    assert timm.is_model("mambaout_femto") and not backbones3d.is_model("mambaout_femto")
    cfg = timm.models.get_pretrained_cfg(NAME)
    assert cfg.input_size == (3, 32, 32, 32) and cfg.first_conv == "stem.conv1" and cfg.classifier == "head.fc"


def test_multi_sequence_cfg_keys_survive_the_timm_path(monkeypatch):
    """Keys timm's PretrainedCfg rejects (sequences, num_tabular) register cleanly and reach the model."""
    for table in ("_model_entrypoints", "_model_to_module", "_model_cfgs"):
        monkeypatch.setattr(_registry, table, dict(getattr(_registry, table)))
    monkeypatch.setattr(_registry, "_module_to_models", type(_registry._module_to_models)(set, {}))

    class TwoSequenceNet(nn.Module):
        def __init__(self, num_classes: int = 4, num_tabular: int = 5, sequences=("t1", "t2")) -> None:
            super().__init__()
            self.sequences, self.num_tabular, self.num_classes = list(sequences), num_tabular, num_classes
            self.stem = nn.Conv3d(1, 4, 3)
            self.fc = nn.Linear(4 + num_tabular, num_classes)

        def forward(self, x: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
            f = self.stem(x.flatten(0, 1).unsqueeze(1)).mean((1, 2, 3, 4)).view(x.shape[0], -1).mean(1, keepdim=True)
            return self.fc(torch.cat([f.expand(-1, 4), tabular.nan_to_num()], 1))

    module = types.ModuleType("fakeseq3d")
    module.default_cfgs = {
        "fakeseq_3d": dict(
            input_size=(2, 8, 8, 8),
            num_classes=4,
            first_conv="stem",
            classifier="fc",
            sequences=["t1", "t2"],
            num_tabular=5,
        )
    }
    monkeypatch.setitem(sys.modules, "fakeseq3d", module)

    def fakeseq_3d(pretrained: bool = False, **kwargs):
        return build_model_with_cfg(TwoSequenceNet, "fakeseq_3d", pretrained, **kwargs)

    fakeseq_3d.__module__ = "fakeseq3d"
    backbones3d.register_model(fakeseq_3d)
    assert backbones3d.list_models("fakeseq*") == ["fakeseq_3d"] == timm.list_models("fakeseq*")
    model = timm.create_model("fakeseq_3d", sequences=("a", "b", "c"), num_tabular=7)
    assert model.pretrained_cfg["sequences"] == ["a", "b", "c"]
    assert model.pretrained_cfg["num_tabular"] == 7 and model.pretrained_cfg["input_size"] == (3, 8, 8, 8)
    assert backbones3d.get_pretrained_cfg("fakeseq_3d")["sequences"] == ["t1", "t2"]


# --- list_models / is_model / get_pretrained_cfg ----------------------------------------------------------------


def test_list_models_filters():
    femto_kobe = ["mambaout_femto_3d", "mambaout_kobe_3d"]
    assert backbones3d.list_models(["mambaout_femto*", "mambaout_k?be_3d"]) == femto_kobe
    assert backbones3d.list_models("mambaout_*", exclude_filters=["*_tiny_3d", "*_s*"]) == [
        "mambaout_base_3d",
        "mambaout_femto_3d",
        "mambaout_kobe_3d",
    ]
    assert backbones3d.list_models(module="mambaout3d", filter="test_*") == [NAME]
    assert backbones3d.list_models(module="no_such_family") == []
    assert backbones3d.list_models("mambaout*", pretrained=True) == []  # no cfg here names weights
    assert backbones3d.list_models(name_matches_cfg=True, include_tags=True) == backbones3d.list_models()
    assert "mambaout3d" in backbones3d.list_modules()
    assert backbones3d.is_model(NAME) and not backbones3d.is_model("mambaout_femto")


def test_list_models_natural_sort():
    names = backbones3d.list_models()
    assert names == sorted(names, key=_registry._natural_key)
    assert _registry._natural_key("b2") < _registry._natural_key("b10")


def test_get_pretrained_cfg_is_a_complete_copy():
    cfg = backbones3d.get_pretrained_cfg(NAME)
    assert cfg == dict(input_size=(3, 32, 32, 32), num_classes=2, first_conv="stem.conv1", classifier="head.fc")
    cfg["num_classes"] = 99
    assert backbones3d.get_pretrained_cfg(NAME)["num_classes"] == 2


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown model 'mambaout_femto3d'; did you mean 'mambaout_femto_3d'"):
        backbones3d.create_model("mambaout_femto3d")
    with pytest.raises(ValueError, match=r"did you mean 'test_mambaout_3d'"):
        backbones3d.get_pretrained_cfg("test_mambaout3d")
    with pytest.raises(ValueError, match=r"unknown model 'zzzz'.*list_models"):
        backbones3d.create_model("zzzz")


def test_register_model_needs_a_complete_cfg(monkeypatch):
    module = types.ModuleType("brokenfamily3d")
    module.default_cfgs = {"half_cfg_3d": dict(input_size=(1, 8, 8, 8), num_classes=2)}
    monkeypatch.setitem(sys.modules, "brokenfamily3d", module)

    def no_cfg_3d(pretrained=False, **kwargs):
        raise AssertionError("never called")

    def half_cfg_3d(pretrained=False, **kwargs):
        raise AssertionError("never called")

    def resnet50(pretrained=False, **kwargs):
        raise AssertionError("never called")

    for fn in (no_cfg_3d, half_cfg_3d, resnet50):
        fn.__module__ = "brokenfamily3d"
    with pytest.raises(ValueError, match=r"default_cfgs has no entry 'no_cfg_3d'"):
        backbones3d.register_model(no_cfg_3d)
    with pytest.raises(ValueError, match=r"missing required keys \['first_conv', 'classifier'\]"):
        backbones3d.register_model(half_cfg_3d)
    module.default_cfgs["resnet50"] = dict(input_size=(1, 8, 8, 8), num_classes=2, first_conv="a", classifier="b")
    with pytest.raises(ValueError, match=r"'resnet50' is a timm model name"):
        backbones3d.register_model(resnet50)
    assert not backbones3d.is_model("half_cfg_3d")


def test_none_kwargs_are_dropped_and_timm_kwargs_tolerated():
    model = backbones3d.create_model(NAME, drop_path_rate=None, num_classes=None, cache_dir="/nonexistent")
    assert model.num_classes == 2
    with pytest.raises(ValueError, match=r"has no pretrained tag 'in1k'"):
        timm.create_model(NAME + ".in1k")


@pytest.mark.parametrize("dataset", ["spine", "spondylitis"])
def test_ablation_presets_are_registered_for_both_datasets(dataset):
    """Table 3's ten rows per dataset, one generated entry point each, seen by timm; ``full`` is the full model."""
    from backbones3d.desamba import ABLATION_ROWS

    names = [f"desamba_{dataset}_ablation_{row}" for row in ABLATION_ROWS]
    assert backbones3d.list_models(f"desamba_{dataset}_ablation_*") == sorted(names, key=_registry._natural_key)
    assert timm.list_models(f"desamba_{dataset}_ablation_*") == backbones3d.list_models(f"desamba_{dataset}_ablation_*")
    entry = _registry.model_entrypoint(names[0])
    assert entry.__name__ == names[0] and entry.__module__ == "backbones3d.desamba" and entry.__doc__
    full = timm.create_model(f"desamba_{dataset}_ablation_full", scale="tiny").state_dict()
    reference = backbones3d.create_model(f"desamba_{dataset}_tiny").state_dict()
    assert {k: v.shape for k, v in full.items()} == {k: v.shape for k, v in reference.items()}


# --- pretrained=True: local files only ----------------------------------------------------------------------


def test_pretrained_without_file_raises():
    with pytest.raises(ValueError, match=r"no local weights file.*pretrained_cfg_overlay=dict\(file="):
        backbones3d.create_model(NAME, pretrained=True)
    with pytest.raises(ValueError, match=r"no local weights file"):
        timm.create_model(NAME, pretrained=True)
    with pytest.raises(FileNotFoundError, match=r"not found"):
        backbones3d.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file="/nonexistent.safetensors"))


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "pth_wrapped"])
def test_pretrained_round_trip(tmp_path, fmt):
    source = backbones3d.create_model(NAME).eval()
    state = _state(source)
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        safetensors.torch.save_file(state, str(path))
    else:
        path = tmp_path / "w.pth"
        torch.save({"state_dict": state, "epoch": 3} if fmt == "pth_wrapped" else state, path)
    torch.manual_seed(123)  # a different random init, overwritten by the file
    model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert model.pretrained_cfg["file"] == str(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = torch.randn(2, 3, 9, 10, 11)
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def test_torch_file_is_read_with_weights_only(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": backbones3d.create_model(NAME).state_dict(), "config": types.SimpleNamespace(a=1)}, path)
    with pytest.raises(Exception, match=r"[Ww]eights only load failed|Unsupported global"):
        backbones3d.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_in_chans_and_num_classes_adaptation(tmp_path):
    source = backbones3d.create_model(NAME).eval()
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(_state(source), str(path))
    overlay = dict(file=str(path))
    w = source.stem.conv1.weight.detach()

    one = backbones3d.create_model(NAME, pretrained=True, in_chans=1, pretrained_cfg_overlay=overlay)
    torch.testing.assert_close(one.stem.conv1.weight, w.sum(1, keepdim=True))
    six = backbones3d.create_model(NAME, pretrained=True, in_chans=6, pretrained_cfg_overlay=overlay)
    assert six.pretrained_cfg["input_size"] == (6, 32, 32, 32)
    # Tiled and scaled by 3/6: an input constant across channels gives the original first-layer response.
    x = torch.randn(1, 1, 5, 6, 7)
    expected = source.stem.conv1(x.expand(-1, 3, -1, -1, -1))
    torch.testing.assert_close(six.stem.conv1(x.expand(-1, 6, -1, -1, -1)), expected)
    torch.testing.assert_close(one.stem.conv1(x), expected)

    five = backbones3d.create_model(NAME, pretrained=True, num_classes=5, pretrained_cfg_overlay=overlay).eval()
    assert five.head.fc.weight.shape == (5, 256)
    loaded = {k: v for k, v in five.state_dict().items() if not k.startswith("head.fc.")}
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.items())
    x = torch.randn(2, 3, 8, 8, 8)
    pre_logits = source.forward_head(source.forward_features(x), pre_logits=True)
    torch.testing.assert_close(five.forward_head(five.forward_features(x), pre_logits=True), pre_logits)
    headless = backbones3d.create_model(NAME, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay).eval()
    torch.testing.assert_close(headless(x), pre_logits)


def test_mismatched_file_raises(tmp_path):
    state = _state(backbones3d.create_model(NAME))
    state["stages.0.blocks.0.fc1.weight"] = state["stages.0.blocks.0.fc1.weight"][:5]
    del state["stages.1.downsample.norm.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    safetensors.torch.save_file(state, str(path))
    expected = r"mis-shaped \['stages.0.blocks.0.fc1.weight.*missing \['stages.1.downsample.norm.bias'\]"
    expected += r".*unexpected \['extra.weight'\]"
    with pytest.raises(RuntimeError, match=expected):
        backbones3d.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_adapt_input_conv_3d_rules():
    w = torch.randn(4, 3, 3, 3, 3, dtype=torch.float64)
    assert adapt_input_conv_3d(3, w) is w
    assert adapt_input_conv_3d(1, w).dtype == torch.float64
    two = adapt_input_conv_3d(2, w)
    torch.testing.assert_close(two, w[:, :2] * 1.5)
    with pytest.raises(ValueError, match=r"in_chans: expected a positive"):
        adapt_input_conv_3d(0, w)


@pytest.mark.parametrize("name", backbones3d.list_models("test_*"))
@pytest.mark.parametrize(("arg", "value"), [("drop_path_rate", 1.5), ("drop_rate", -0.1)])
def test_a_rate_outside_the_unit_interval_names_the_argument(name, arg, value):
    with torch.device("meta"), pytest.raises(ValueError, match=rf"{arg}: expected a probability in \[0, 1\)"):
        backbones3d.create_model(name, **{arg: value})


def test_layers_check_their_rates():
    from spectral3d.layers import ConvNeXtV2Block3d, GatedCNNBlock3d, MlpHead, SAMBlock, TabularEncoder

    for build, arg in (
        (lambda: SAMBlock(8, drop_path=1.5), "drop_path"),
        (lambda: ConvNeXtV2Block3d(8, drop_path=1.0), "drop_path"),
        (lambda: GatedCNNBlock3d(8, drop_path=-0.1), "drop_path"),
        (lambda: MlpHead(8, 2, drop_rate=1.2), "drop_rate"),
        (lambda: TabularEncoder(3, 8, drop_rate=2.0), "drop_rate"),
    ):
        with pytest.raises(ValueError, match=rf"^{arg}: expected a probability"):
            build()


def test_is_multi_sequence_gives_one_answer_for_a_name_its_config_and_its_model():
    """The one rule (the model names its ``sequences``) agrees with what DeSamba alone has: ``forward_with_aux``."""
    names = [n for n in backbones3d.list_models() if n.startswith("test_") or n.endswith("_tiny")]
    seen = set()
    for name in names:
        with torch.device("meta"):
            model = backbones3d.create_model(name)
        answers = {
            backbones3d.is_multi_sequence(name),
            backbones3d.is_multi_sequence(model.pretrained_cfg),
            backbones3d.is_multi_sequence(model),
            hasattr(model, "forward_with_aux"),
        }
        assert len(answers) == 1, name
        seen |= answers
    assert seen == {True, False}
    assert not backbones3d.is_multi_sequence({"input_size": (3, 8, 8, 8)})
    with pytest.raises(ValueError, match="desamba_spine_tiny"):
        backbones3d.is_multi_sequence("desamba_spine_tinny")
