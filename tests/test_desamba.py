"""DeSamba (paper Fig. 1, Eq. 5): ablation presets, aux losses, inputs, compile/export, paper scale, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import backbones3d
from backbones3d.desamba import ABLATION_ROWS, DeSamba, DeSambaConfig, DeSambaLoss, desamba_spine_tiny
from backbones3d.mambaout3d import MambaOut3d
from backbones3d.samnet import SAMNet
from spectral3d.layers import SAMB, MultiScaleFusion, SpectralStem3d
from spectral3d.layers.drlm import DRLM
from spectral3d.layers.samblock import ConvNeXtV2Block3d, SAMBlock
from spectral3d.layers.tabular import TabularEncoder

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: see tests/conftest.py


def _has(model: torch.nn.Module, cls: type) -> bool:
    return any(isinstance(m, cls) for m in model.modules())


def _check_ablation_structure(model: DeSamba, row: str, sequences: list[str]) -> None:
    te, ce, fp, me, de, c, s = map(bool, ABLATION_ROWS[row])
    assert model.config.flags == dict(TE=te, CE=ce, FP=fp, ME=me, De=de, C=c, S=s)
    # exactly the submodules the flags name
    assert _has(model, SAMNet) == ce and _has(model, SAMBlock) == (ce and fp)
    assert _has(model, ConvNeXtV2Block3d) == (ce and not fp) and _has(model, MambaOut3d) == me
    assert _has(model, DRLM) == de and _has(model, TabularEncoder) == te
    if de:
        assert (model.drlm.self_decoders is not None) == s and (model.drlm.cross_decoders is not None) == c
    assert list(model.encoders) == sequences


@pytest.mark.parametrize("row", list(ABLATION_ROWS))
def test_ablation_preset_modules_aux_and_training(row: str) -> None:
    te, ce, fp, me, de, c, s = map(bool, ABLATION_ROWS[row])
    model = backbones3d.create_model(f"desamba_spine_ablation_{row}", scale="tiny")
    _check_ablation_structure(model, row, ["t1", "t2", "t2fs"])

    x, tab, y = torch.randn(2, 3, SIZE, SIZE, SIZE), torch.randn(2, 8), torch.tensor([1, 4])
    criterion = DeSambaLoss()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    for _ in range(2):
        logits, aux = model.forward_with_aux(x, tab)
        assert logits.shape == (2, 6) and torch.isfinite(logits).all()
        assert set(aux) == ({k for k, on in (("self", s), ("cross", c)) if on} if de else set())
        loss, parts = criterion(logits, y, aux)
        assert set(parts) == {"cls"} | set(aux)
        opt.zero_grad()
        loss.backward()
        assert [n for n, p in model.named_parameters() if p.grad is None] == []
        opt.step()
    expected_width = (model.drlm.out_dim if de else 3 * model.config.feature_dim) + (
        model.config.tabular_dim if te else 0
    )
    assert model.forward_features(x, tab).shape == (2, model.num_features) and model.num_features == expected_width


@pytest.mark.parametrize("row", list(ABLATION_ROWS))
def test_spondylitis_ablation_presets(row: str) -> None:
    """``desamba_spondylitis_ablation_<row>``: the spine row's flags on t1/t2fs, two classes (Table 2's task)."""
    name = f"desamba_spondylitis_ablation_{row}"
    cfg = backbones3d.get_pretrained_cfg(name)
    assert cfg["sequences"] == ["t1", "t2fs"] and cfg["num_classes"] == 2 and cfg["input_size"] == (2, 64, 96, 96)
    spine_cfg = backbones3d.get_pretrained_cfg(f"desamba_spine_ablation_{row}")
    assert cfg["first_conv"] == [c for c in spine_cfg["first_conv"] if ".t2." not in c]
    model = backbones3d.create_model(name, scale="tiny").eval()
    _check_ablation_structure(model, row, ["t1", "t2fs"])
    assert model.pretrained_cfg["input_size"] == (2, 32, 32, 32)
    with torch.no_grad():
        logits, aux = model.forward_with_aux(torch.randn(1, 2, SIZE, SIZE, SIZE), torch.randn(1, 8))
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
    assert set(aux) == {k for k, flag in (("self", 6), ("cross", 5)) if ABLATION_ROWS[row][flag]}


def test_dict_input_tabular_none_and_loss() -> None:
    model = desamba_spine_tiny().eval()
    x = torch.randn(2, 3, SIZE, SIZE, SIZE)
    ref = model(x)
    as_dict = {"t2fs": x[:, 2], "t1": x[:, 0:1], "t2": x[:, 1]}  # any order, (N, D, H, W) or (N, 1, D, H, W)
    torch.testing.assert_close(model(as_dict), ref)
    torch.testing.assert_close(model(x, torch.full((2, 8), float("nan"))), ref)  # None = every value missing
    assert not torch.allclose(model(x, torch.randn(2, 8)), ref)
    logits, aux = model.forward_with_aux(x)
    total, parts = DeSambaLoss(self_weight=0.5, cross_weight=0.5)(logits, torch.tensor([0, 5]), aux)
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 5])) + 0.5 * aux["self"] + 0.5 * aux["cross"]
    torch.testing.assert_close(total, expected)
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        DeSambaLoss()(logits, torch.tensor([0, 5]), {"extra": total})


def test_spondylitis_shared_encoders_and_contract() -> None:
    model = backbones3d.create_model("desamba_spondylitis_tiny", share_encoders=True, num_classes=3)
    cfg = model.pretrained_cfg
    assert cfg["sequences"] == ["t1", "t2fs"] and cfg["input_size"] == (2, 32, 32, 32) and cfg["num_tabular"] == 8
    assert list(model.encoders) == ["shared"]
    x = torch.randn(2, 2, SIZE, SIZE, SIZE)
    assert model(x).shape == (2, 3)
    # one encoder applied to each sequence: swapping the sequences swaps the per-sequence features
    f = model._encode_sequences(x)
    torch.testing.assert_close(model._encode_sequences(x.flip(1)), f.flip(1))
    model.eval()
    y = model(x)
    model.set_grad_checkpointing(True)
    torch.testing.assert_close(model(x), y)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


def test_samblock_residual_reaches_every_block() -> None:
    for residual in ("paper", "identity"):
        model = backbones3d.create_model("desamba_spondylitis_tiny", samblock_residual=residual)
        blocks = [m for m in model.modules() if isinstance(m, SAMBlock)]
        assert len(blocks) == 2 * 4 and {b.residual for b in blocks} == {residual}
    samnet = backbones3d.create_model("samnet_tiny", residual="identity", dims=(8, 16, 24, 32), depths=(1, 1, 1, 1))
    assert {m.residual for m in samnet.modules() if isinstance(m, SAMBlock)} == {"identity"}


def test_literal_switches_reach_every_module() -> None:
    """``literal=True``: channel f_m, no band embedding, paper skip, all-stage fusion, one Enc_u, live targets."""
    model = backbones3d.create_model("desamba_spondylitis_tiny", literal=True)
    sambs = [m for m in model.modules() if isinstance(m, SAMB)]
    assert len(sambs) == 8 and {(m.fm_mode, m.band_embed) for m in sambs} == {("channel", None)}
    assert {m.residual for m in model.modules() if isinstance(m, SAMBlock)} == {"paper"}
    assert {m.stages for m in model.modules() if isinstance(m, MultiScaleFusion)} == {"all"}
    assert len(model.drlm.unique_encoders) == 1 and not model.drlm.detach_targets
    # explicit arguments still win over literal=True; the default stays ours
    model = backbones3d.create_model("desamba_spine_ablation_desn", scale="tiny", literal=True, fm_mode="band")
    assert {m.fm_mode for m in model.modules() if isinstance(m, SAMB)} == {"band"}
    default = desamba_spine_tiny()
    assert len(default.drlm.unique_encoders) == 3 and default.drlm.detach_targets
    with pytest.raises(TypeError, match="literal: expected a bool"):
        desamba_spine_tiny(literal="yes")


def test_spectral_stem_option() -> None:
    model = backbones3d.create_model("desamba_spondylitis_tiny", spectral_stem=True)
    stems = [m for m in model.modules() if isinstance(m, SpectralStem3d)]
    assert len(stems) == 2 and all(
        name.endswith("cnn.stem.spectral") for name, m in model.named_modules() if m in stems
    )
    logits, aux = model.forward_with_aux(torch.randn(2, 2, SIZE, SIZE, SIZE), torch.randn(2, 8))
    (logits.square().sum() + sum(aux.values())).backward()
    assert all(p.grad is not None for s in stems for p in s.parameters())
    assert not any(isinstance(m, SpectralStem3d) for m in desamba_spine_tiny().modules())
    with pytest.raises(ValueError, match="spectral_stem: .* needs FP"):
        backbones3d.create_model("desamba_spine_ablation_cnv2", scale="tiny", spectral_stem=True)


def test_paper_literal_switches_through_the_config_and_the_registry() -> None:
    """DRLM's shared ``Enc_u`` / live targets, SAMB without band embedding and last-stage fusion, each one field
    of ``DeSambaConfig`` reaching its module; live targets send the self loss's gradient into the encoders."""
    kw = dict(cnn_dims=(8, 8, 8, 8), mamba_dims=(8, 8, 8, 8), cnn_depths=(1, 1, 1, 1), mamba_depths=(1, 1, 1, 1))
    kw.update(feature_dim=16, tabular_dim=8, sequences=("t1", "t2fs"), num_classes=2)
    model = DeSamba(DeSambaConfig(**kw, drlm_share_unique_encoder=True, band_embedding=False, fusion_stages="last"))
    assert len(model.drlm.unique_encoders) == 1 and model.drlm.detach_targets
    assert {m.band_embed for m in model.modules() if isinstance(m, SAMB)} == {None}
    fusions = [m for m in model.modules() if isinstance(m, MultiScaleFusion)]
    assert len(fusions) == 2 and {(m.stages, m.in_features) for m in fusions} == {("last", 16)}
    registered = backbones3d.create_model("desamba_spondylitis_tiny", drlm_detach_targets=False)
    assert not registered.drlm.detach_targets and len(registered.drlm.unique_encoders) == 2
    x, tab = torch.randn(2, 2, SIZE, SIZE, SIZE), torch.randn(2, 8)
    grads = {}
    for detach in (True, False):
        torch.manual_seed(0)
        m = DeSamba(DeSambaConfig(**kw, drlm_detach_targets=detach))
        m.forward_with_aux(x, tab)[1]["self"].backward()
        grads[detach] = torch.cat([p.grad.flatten() for p in m.encoders.parameters() if p.grad is not None])
    assert grads[True].abs().sum() > 0 and not torch.allclose(grads[True], grads[False])
    with pytest.raises(ValueError, match="spectral_stem: .* needs FP"):
        DeSambaConfig(**kw, frequency_pathway=False, spectral_stem=True)


def _readme_params(prefixes: tuple[str, ...]) -> dict[str, float]:
    """``{registered name: parameters in M}`` of the README's model table."""
    rows = {}
    for line in (Path(__file__).parents[1] / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 4 and cells[2].strip("`").startswith(prefixes) and cells[3].endswith(" M"):
            rows[cells[2].strip("`")] = float(cells[3][:-2])
    return rows


@pytest.mark.parametrize(
    "name", ["desamba_spine", "desamba_spondylitis", "desamba_spine_tiny", "desamba_spondylitis_tiny", "samnet_tiny"]
)
def test_registered_defaults_keep_the_readme_parameter_counts(name: str) -> None:
    """The registered models are built without the new options (no spectral stem, band embedding on, per-sequence
    Enc_u, detached targets) and hold the README table's parameters (meta device)."""
    with torch.device("meta"):
        model = backbones3d.create_model(name)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(_readme_params((name,))[name], abs=0.005)
    assert not any(isinstance(m, SpectralStem3d) for m in model.modules())
    assert all(m.band_embed is not None and m.fm_mode == "band" for m in model.modules() if isinstance(m, SAMB))
    if isinstance(model, DeSamba):
        assert len(model.drlm.unique_encoders) == len(model.sequences) and model.drlm.detach_targets


def test_compile_fullgraph_and_export() -> None:
    model = desamba_spine_tiny().eval()
    x, tab = torch.randn(2, 3, SIZE, SIZE, SIZE), torch.randn(2, 8)
    with torch.no_grad():
        ref = model(x, tab)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x, tab), ref, atol=1e-5, rtol=1e-5)
        exported = torch.export.export(model, (x, tab))
        torch.testing.assert_close(exported.module()(x, tab), ref, atol=1e-5, rtol=1e-5)


def test_paper_scale_size() -> None:
    with torch.device("meta"):
        model = backbones3d.create_model("desamba_spine")
    params = sum(p.numel() for p in model.parameters())
    assert params == pytest.approx(433.82e6, rel=0.02)
    assert model.pretrained_cfg["input_size"] == (3, 64, 96, 96)


def test_bad_input() -> None:
    model = desamba_spine_tiny()
    x = torch.randn(1, 3, SIZE, SIZE, SIZE)
    with pytest.raises(ValueError, match=r"expected S=3 sequences \['t1', 't2', 't2fs'\] on axis 1, got 2"):
        model(x[:, :2])
    with pytest.raises(ValueError, match=r"missing \['t2fs'\], unknown \[\]"):
        model({"t1": x[:, 0], "t2": x[:, 1]})
    with pytest.raises(ValueError, match=r"missing \[\], unknown \['flair'\]"):
        model({"t1": x[:, 0], "t2": x[:, 1], "t2fs": x[:, 2], "flair": x[:, 2]})
    with pytest.raises(ValueError, match=r"x\['t2'\]: shape \(1, 32, 32, 16\) differs"):
        model({"t1": x[:, 0], "t2": x[:, 1, :, :, :16], "t2fs": x[:, 2]})
    with pytest.raises(ValueError, match=r"size 40 on axis D would be truncated .* multiple of 32 on axis D"):
        model(torch.randn(1, 3, 40, 32, 32))
    with pytest.raises(ValueError, match=r"tabular: expected shape \(N, F=8\), got \(1, 7\)"):
        model(x, torch.randn(1, 7))
    with pytest.raises(ValueError, match=r"tabular: batch size 2 differs from the images' 1"):
        model(x, torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"expected a 5-D tensor"):
        model(x[0])
    with pytest.raises(ValueError, match=r"in_chans: .* expected 3 .* got 4"):
        desamba_spine_tiny(in_chans=4)
    with pytest.raises(ValueError, match=r"scale: expected one of"):
        backbones3d.create_model("desamba_spine", scale="huge")
    with pytest.raises(ValueError, match=r"need DRLM"):
        DeSambaConfig(decouple=False)
    with pytest.raises(ValueError, match=r"needs CE"):
        DeSamba(cnn_encoder=False, frequency_pathway=True)
    with pytest.raises(ValueError, match=r"at least one image encoder"):
        DeSamba(cnn_encoder=False, frequency_pathway=False, mamba_encoder=False)


def test_mamba_only_accepts_any_size() -> None:
    model = backbones3d.create_model("desamba_spine_ablation_mo", scale="tiny")
    assert model(torch.randn(1, 3, 17, 20, 9)).shape == (1, 6)
