"""Grad-CAM of whole cases: NIfTI maps on the source grids, the PNG figure and ``spectral3d gradcam``.

Shared fixture (module scope): a synthetic spondylitis cohort (12 cases, t1 + t2fs on different
grids, 32³ at 1 mm, ROI per case) and ``desamba_spondylitis_tiny`` trained for 2 AdamW steps
(batch 4, lr 2e-3, Eq. 5 loss, seed 0) on the cases cropped around the field-of-view centre,
saved as a checkpoint with the layout ``spectral3d train`` writes.

Lesion localisation by a briefly trained model (issue 8's central claim) is *not* tested here:
it was not reached on the CPU budget (0–2 of 16 map maxima at the lesion against 8.5–9.4 % for a
random map, see the issue's closing note), and a test expected to fail would only hide that.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import backbones3d
from backbones3d.desamba import DeSambaLoss
from spectral3d.data import Cohort, PreprocessConfig, TabularStats, write_synthetic_cohort
from spectral3d.train.checkpoint import save_checkpoint, update_pointer
from spectral3d.train.explain import gradcam_case

MARGIN = 3  # voxels beyond the lesion radius that still count as "at the lesion"
MODEL = "desamba_spondylitis_tiny"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("gradcam_case")
    cohort_dir = write_synthetic_cohort(root / "cohort", task="spondylitis", cases=12, seed=0, size=32)
    cohort = Cohort.from_folder(cohort_dir)
    pre = PreprocessConfig(input_size=32, spacing=1.0, crop="centre")
    stats = TabularStats.fit(cohort.cases, cohort.clinical_columns)
    loaded = [cohort.load(rec, pre) for rec in cohort.cases]
    x = torch.from_numpy(np.stack([c.volume for c in loaded]))
    tab = torch.from_numpy(np.stack([stats.transform(rec.clinical) for rec in cohort.cases]))
    y = torch.tensor([cohort.label_index(rec) for rec in cohort.cases])

    torch.manual_seed(0)
    kwargs = {"sequences": list(cohort.sequences), "num_classes": cohort.num_classes, "num_tabular": 8}
    model = backbones3d.create_model(MODEL, **kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    criterion = DeSambaLoss()
    for step in range(2):
        idx = torch.arange(4) + 4 * step
        logits, aux = model.forward_with_aux(x[idx], tab[idx])
        loss, _ = criterion(logits, y[idx], aux)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    config = {
        "model": MODEL,
        "model_kwargs": kwargs,
        "class_names": list(cohort.classes),
        "sequences": list(cohort.sequences),
        "clinical_columns": list(cohort.clinical_columns),
        "preprocess": pre.to_dict(),
        "tabular_stats": stats.to_dict(),
    }
    ckpt = save_checkpoint(root / "run", "epoch_001", model.state_dict(), {"epoch": 1}, config)
    update_pointer(root / "run", "last", "epoch_001")
    return {"root": root, "cohort": cohort, "model": model, "x": x, "tab": tab, "loaded": loaded, "ckpt": ckpt}


def test_nifti_maps_round_trip_on_the_source_grids(trained: dict, tmp_path: Path) -> None:
    case_dir = trained["root"] / "cohort" / "case003"
    res = gradcam_case(trained["ckpt"], case_dir, tmp_path)
    assert res["case_id"] == "case003" and res["explained_class"] == res["predicted"]
    assert res["predicted"] in trained["cohort"].classes and 0.5 <= res["probability"] <= 1.0
    for seq in ("t1", "t2fs"):
        path = tmp_path / f"gradcam_{seq}.nii.gz"
        assert str(path) in res["files"]
        cam, src = nib.load(path), nib.load(case_dir / f"{seq}.nii.gz")
        assert cam.shape == src.shape  # t2fs has its own (1.25 mm) grid, t1 is 32³
        np.testing.assert_allclose(cam.affine, src.affine, atol=1e-5)
        data = np.asarray(cam.dataobj)
        # in [0, 1] and not blank after resampling (a sparse 4³ map can lose its peak on the 1.25 mm grid)
        assert np.isfinite(data).all() and data.min() >= 0 and 0 < data.max() <= 1 + 1e-5
    assert nib.load(tmp_path / "gradcam_t1.nii.gz").shape != nib.load(tmp_path / "gradcam_t2fs.nii.gz").shape
    assert json.loads((tmp_path / "gradcam.json").read_text())["layers"]["t1"] == [
        "encoders.t1.cnn.stages.1",
        "encoders.t1.mamba.stages.1",
    ]

    import matplotlib.image

    png = matplotlib.image.imread(tmp_path / "gradcam.png")
    assert png.shape[0] > 300 and png.shape[1] > 1000  # 2 sequence rows × 9 panels
    assert png[..., :3].std() > 0.1  # not a blank canvas
    hue = png[..., 0] - png[..., 2]  # the jet maps and overlays put strong red and blue on the figure
    assert (hue > 0.5).mean() > 0.001 and (hue < -0.5).mean() > 0.001  # present, however sparse the map


def test_cli_gradcam_end_to_end(trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from spectral3d.cli import main

    case_dir = trained["root"] / "cohort" / "case001"
    csv_path = trained["root"] / "cohort" / "cases.csv"
    args = ["gradcam", "--checkpoint", str(trained["ckpt"].parent), str(case_dir), "--out", str(tmp_path)]
    code = main([*args, "--method", "gradcam++", "--target-class", "tuberculous", "--tabular", str(csv_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "case001: predicted" in printed and "maps for tuberculous" in printed
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["gradcam.json", "gradcam.png", "gradcam_t1.nii.gz", "gradcam_t2fs.nii.gz"]
    summary = json.loads((tmp_path / "gradcam.json").read_text())
    assert summary["method"] == "gradcam++" and summary["clinical_from_csv"] is True


def test_baseline_checkpoint_writes_its_one_map_for_every_sequence(trained: dict, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = backbones3d.create_model("test_resnet_3d", in_chans=2, num_classes=2)
    config = json.loads((trained["ckpt"] / "config.json").read_text())
    config.update(model="test_resnet_3d", model_kwargs={"in_chans": 2, "num_classes": 2})
    ckpt = save_checkpoint(tmp_path / "run", "epoch_001", model.state_dict(), {"epoch": 1}, config)
    res = gradcam_case(ckpt, trained["root"] / "cohort" / "case002", tmp_path / "out")
    assert res["layers"] == {"input": ["layer2"]}
    a = nib.load(tmp_path / "out/gradcam_t1.nii.gz")
    b = nib.load(tmp_path / "out/gradcam_t2fs.nii.gz")
    assert a.shape != b.shape and float(np.asarray(a.dataobj).max()) > 0.5 and float(np.asarray(b.dataobj).max()) > 0.5
    assert "one Grad-CAM map for the fused input" in res["title"]  # not a per-sequence attribution


def test_figure_names_the_method(trained: dict, tmp_path: Path) -> None:
    res = gradcam_case(trained["ckpt"], trained["root"] / "cohort" / "case002", tmp_path, method="layercam")
    assert "LayerCAM for" in res["title"] and "Grad-CAM" not in res["title"] and "fused" not in res["title"]
    assert json.loads((tmp_path / "gradcam.json").read_text())["title"] == res["title"]


def test_bad_target_class_and_missing_sequence(trained: dict, tmp_path: Path) -> None:
    from spectral3d.data import DataError

    with pytest.raises(ValueError, match="target_class: expected one of"):
        gradcam_case(trained["ckpt"], trained["root"] / "cohort" / "case000", tmp_path, target_class="lung")
    (tmp_path / "case_x").mkdir()
    with pytest.raises(DataError, match="missing sequence 't1'"):
        gradcam_case(trained["ckpt"], tmp_path / "case_x", tmp_path / "out")
