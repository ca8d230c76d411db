"""3D Grad-CAM: the CAM identity for GAP+linear heads, localisation of a known feature, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spectral3d.gradcam import GradCAM3d, cam_from_activations
from spectral3d.metrics import peak_hit_rates


class _GapNet(nn.Module):
    """conv → ReLU → global average pool → linear: Grad-CAM must equal CAM (Zhou et al. 2016)."""

    def __init__(self, in_chans: int = 2, width: int = 6, num_classes: int = 3) -> None:
        super().__init__()
        self.stages = nn.Sequential(nn.Conv3d(in_chans, width, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(x).mean(dim=(2, 3, 4)))


def test_gradcam_equals_cam_for_a_gap_linear_head() -> None:
    torch.manual_seed(1)
    model = _GapNet().double()
    x = torch.randn(2, 2, 6, 7, 5, dtype=torch.float64)
    out = GradCAM3d(model)(x, class_idx=1)
    acts = model.stages(x)
    cam = F.relu(torch.einsum("k,nkdhw->ndhw", model.fc.weight[1], acts))
    lo = cam.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = cam.flatten(1).max(1).values.view(-1, 1, 1, 1)
    torch.testing.assert_close(out.maps["input"].double(), (cam - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    assert out.class_idx.tolist() == [1, 1]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_map_peaks_at_the_feature_the_class_responds_to(method: str) -> None:
    torch.manual_seed(2)
    model = _GapNet(in_chans=1, width=1, num_classes=2)
    with torch.no_grad():
        model.stages[0].weight.zero_()
        model.stages[0].weight[0, 0, 1, 1, 1] = 1.0  # the activation is the (rectified) input
        model.stages[0].bias.zero_()
        model.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    x = 0.05 * torch.rand(1, 1, 16, 16, 16)
    x[0, 0, 10:13, 3:6, 7:10] = 1.0  # a bright blob
    out = GradCAM3d(model, method=method)(x, class_idx=0)
    peak = torch.nonzero(out.maps["input"][0] == out.maps["input"][0].max())[0].tolist()
    assert 10 <= peak[0] <= 12 and 3 <= peak[1] <= 5 and 7 <= peak[2] <= 9


def test_maps_are_upsampled_to_the_input_grid_and_normalised() -> None:
    model = nn.Sequential()
    model.stages = nn.Sequential(nn.Conv3d(1, 4, 3, stride=2, padding=1), nn.GELU())
    net = _GapNet(in_chans=1, width=4)
    net.stages = model.stages
    out = GradCAM3d(net)(torch.randn(3, 1, 9, 10, 11))
    m = out.maps["input"]
    assert m.shape == (3, 9, 10, 11) and float(m.min()) >= 0 and float(m.max()) <= 1 + 1e-6


def test_layercam_weights_each_position_by_its_own_gradient() -> None:
    a = torch.rand(2, 3, 4, 5, 6)
    g = torch.randn(2, 3, 4, 5, 6)
    torch.testing.assert_close(cam_from_activations(a, g, "layercam"), F.relu((F.relu(g) * a).sum(1)))
    # uniform activations, a gradient at one position: LayerCAM points there, Grad-CAM cannot
    a, g = torch.ones(1, 2, 3, 3, 3), torch.zeros(1, 2, 3, 3, 3)
    g[0, :, 1, 2, 0] = 1.0
    layer, grad = cam_from_activations(a, g, "layercam"), cam_from_activations(a, g, "gradcam")
    assert int(layer.flatten().argmax()) == 1 * 9 + 2 * 3 + 0 and float(grad.std()) == 0.0


def test_bad_input_and_method() -> None:
    with pytest.raises(ValueError, match="method"):
        GradCAM3d(_GapNet(), method="scorecam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="5-D"):
        GradCAM3d(_GapNet())(torch.randn(2, 8, 8, 8))
    with pytest.raises(ValueError, match="equal"):
        cam_from_activations(torch.randn(1, 2, 3, 3, 3), torch.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match="no default Grad-CAM layer"):
        GradCAM3d(nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("test_resnet_3d", "layer2"),  # layer3/4 are 2³/1³ at 32³: below min_grid=4
        ("test_convnextv2_3d", "stages.1"),
        ("test_swinv2_3d", "layers.2"),  # channels-last stage output, permuted
        ("test_vit_3d", "blocks.0"),  # the last block's patch tokens get no gradient from the class token
        ("test_vim_3d", "layers.0"),  # middle class token dropped, tokens back on the 4³ patch grid
    ],
)
def test_registered_models_get_a_localising_layer(name: str, layer: str) -> None:
    import backbones3d

    torch.manual_seed(0)
    model = backbones3d.create_model(name).eval()
    out = GradCAM3d(model)(torch.randn(1, 3, 32, 32, 32))
    m = out.maps["input"]
    assert out.layers == {"input": [layer]}
    assert m.shape == (1, 32, 32, 32) and float(m.max()) == pytest.approx(1.0) and float(m.std()) > 0.05


def test_min_grid_one_explains_the_last_stage_and_explicit_layers_are_kept() -> None:
    import backbones3d

    model = backbones3d.create_model("test_resnet_3d").eval()
    x = torch.randn(1, 3, 32, 32, 32)
    assert GradCAM3d(model, min_grid=1)(x).layers == {"input": ["layer4"]}
    assert GradCAM3d(model, target_layers={"mine": model.layer3})(x).layers == {"mine": ["layer3"]}
    with pytest.raises(ValueError, match="min_grid"):
        GradCAM3d(model, min_grid=0)
    with pytest.raises(ValueError, match=r"class_idx: expected classes in \[0, 2\)"):
        GradCAM3d(model)(x, class_idx=5)


def test_desamba_gets_one_map_per_sequence_from_both_encoders() -> None:
    import backbones3d

    torch.manual_seed(0)
    model = backbones3d.create_model("desamba_spondylitis_tiny").eval()
    out = GradCAM3d(model)(torch.randn(1, 2, 32, 32, 32), torch.randn(1, 8))
    assert out.layers == {
        "t1": ["encoders.t1.cnn.stages.1", "encoders.t1.mamba.stages.1"],
        "t2fs": ["encoders.t2fs.cnn.stages.1", "encoders.t2fs.mamba.stages.1"],
    }
    assert not torch.equal(out.maps["t1"], out.maps["t2fs"])


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_shared_encoder_maps_equal_those_of_per_sequence_copies(method) -> None:
    """A DeSamba with one shared encoder explains each sequence as a copy of it per sequence does."""
    import backbones3d

    torch.manual_seed(0)
    shared = backbones3d.create_model("test_desamba_3d").eval()  # share_encoders=True
    copies = backbones3d.create_model("test_desamba_3d", share_encoders=False).eval()
    state = {}
    for key, value in shared.state_dict().items():
        if key.startswith("encoders.shared."):
            state.update({key.replace(".shared.", f".{name}.", 1): value for name in shared.sequences})
        else:
            state[key] = value
    copies.load_state_dict(state)
    x, tab = torch.randn(3, 3, 32, 32, 32), torch.randn(3, shared.num_tabular)
    a = GradCAM3d(shared, method=method)(x, tab)
    b = GradCAM3d(copies, method=method)(x, tab)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-5)
    assert a.layers["t2"] == ["encoders.shared.cnn.stages.1", "encoders.shared.mamba.stages.1"]
    for name in shared.sequences:
        assert a.maps[name].shape == (3, 32, 32, 32) and a.maps[name].amax() > 0
        torch.testing.assert_close(a.maps[name], b.maps[name], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a.maps["t1"], a.maps["t2"], atol=1e-3)  # the rows differ per sequence


def test_peak_hit_rates_separates_following_maps_from_a_fixed_bias() -> None:
    rng = np.random.default_rng(0)
    n, size = 12, 16
    grid = np.stack(np.indices((size,) * 3), -1)
    centres = rng.integers(3, size - 3, size=(n, 3))
    masks = np.stack([np.linalg.norm(grid - c, axis=-1) <= 2.5 for c in centres])
    noise = rng.random(masks.shape)
    following = peak_hit_rates(torch.from_numpy(masks + 0.5 * noise), torch.from_numpy(masks))
    assert following["hit"] == 1.0 and following["other_cases"] < 0.3
    assert following["random"] == pytest.approx(masks.reshape(n, -1).mean())
    # a map that always peaks at the centre scores the same against its own and the other cases' masks
    centre = np.linalg.norm(grid - (size - 1) / 2, axis=-1)
    biased = peak_hit_rates(np.broadcast_to(-centre, masks.shape) + 1e-3 * noise, masks)
    assert abs(biased["hit"] - biased["other_cases"]) < 0.15
    with pytest.raises(ValueError, match="one shape"):
        peak_hit_rates(noise[:, :8], masks)
    with pytest.raises(TypeError, match="masks: expected booleans"):
        peak_hit_rates(noise, masks.astype(np.float32))
    with pytest.raises(ValueError, match="at least 2 cases"):
        peak_hit_rates(noise[:1], masks[:1])


def test_gradcam_module_holds_cam_maths_only() -> None:
    """``spectral3d/gradcam.py`` imports nothing from ``backbones3d`` and names no model class: models own
    their Grad-CAM layers and layouts; the moved application names still import from the old place."""
    import ast
    from pathlib import Path

    import spectral3d.gradcam as gradcam

    root = Path(gradcam.__file__).parents[1]
    model_classes = {
        node.name
        for path in (root / "backbones3d").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
    }
    tree = ast.parse(Path(gradcam.__file__).read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None
    }
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.split(".")[0] == "backbones3d"]
    named = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    named |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    strings = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]
    assert len(model_classes) > 20 and not named & model_classes
    assert not [(c, s) for c in model_classes for s in strings if c in s]

    from spectral3d.gradcam import gradcam_case, peak_hit_rates, render_gradcam_figure
    from spectral3d.metrics import peak_hit_rates as moved_rates
    from spectral3d.train.explain import gradcam_case as moved_case
    from spectral3d.train.explain import render_gradcam_figure as moved_figure

    assert (gradcam_case, peak_hit_rates, render_gradcam_figure) == (moved_case, moved_rates, moved_figure)


@pytest.mark.parametrize("name", ["test_vit_3d", "test_vim_3d"])
def test_token_models_reshape_their_patch_tokens_onto_the_grid(name: str) -> None:
    import backbones3d

    model = backbones3d.create_model(name)
    n, c = 2, model.embed_dim
    grid = torch.randn(n, c, 2, 3, 4)  # the patch grid of a 16 x 24 x 32 input (patch 8)
    tokens = grid.flatten(2).transpose(1, 2)
    cls_at = 0 if name == "test_vit_3d" else 24 // 2
    tokens = torch.cat([tokens[:, :cls_at], torch.randn(n, 1, c), tokens[:, cls_at:]], dim=1)
    torch.testing.assert_close(model.gradcam_reshape(tokens, (16, 24, 32)), grid, rtol=0, atol=0)
    with pytest.raises(ValueError, match="tokens: expected"):
        model.gradcam_reshape(tokens[:, 1:], (16, 24, 32))
