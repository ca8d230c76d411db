"""Does a briefly trained DeSamba look at the lesion? Grad-CAM maxima against two baselines.

``desamba_spondylitis_tiny`` (``share_encoders=True``) is trained with :func:`~spectral3d.train.fit` on
synthetic spondylitis cases (the lesion anywhere in the 32³ volume) and explained on the test cases at
the 8³ stage (the mean of the two sequence maps). A hit is a map maximum within the lesion radius + 3
voxels, against a uniformly random maximum and the same maxima scored against the other cases' lesions
(:func:`spectral3d.metrics.peak_hit_rates`). One intra-op thread bounds the cost. Recipe choice and
measurements: ``benchmarks/results/gradcam_localisation.md``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from spectral3d.data import (
    AugmentConfig,
    Cohort,
    MRIDataset,
    PreprocessConfig,
    collate,
    synthetic,
    write_synthetic_cohort,
)
from spectral3d.gradcam import GradCAM3d
from spectral3d.metrics import peak_hit_rates
from spectral3d.train import TrainConfig, fit
from spectral3d.train.trainer import batch_bounds

MARGIN = 3  # voxels around the lesion radius that still count as "on the lesion"
EPOCHS, BATCH, STEPS = 3, 4, 120


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gradcam_maximum_falls_on_the_lesion_more_often_than_by_chance_or_bias(tmp_path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_and_explain(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _train_and_explain(tmp_path) -> None:
    import backbones3d

    cpu0 = time.process_time()
    root = write_synthetic_cohort(tmp_path / "cohort", task="spondylitis", cases=200, seed=1, size=32)
    cohort = Cohort.from_folder(root)
    pre = PreprocessConfig(input_size=32, spacing=1.0, crop="centre")  # the lesion is anywhere
    train = [c for c in cohort.cases if c.split != "test"]
    test = [c for c in cohort.cases if c.split == "test"]
    flips = AugmentConfig(flip_axes=(0, 1, 2), affine_prob=0.0, intensity_scale=0.0, intensity_shift=0.0)
    train_ds = MRIDataset(cohort, train, pre, augment=flips, cache_dir=tmp_path / "cache")
    test_ds = MRIDataset(cohort, test, pre, tabular_stats=train_ds.tabular_stats)

    torch.manual_seed(0)
    # DeSamba-tiny for this task with one encoder shared by t1 and t2fs (= test_desamba_3d's layout)
    model = backbones3d.create_model(
        "desamba_spondylitis_tiny", share_encoders=True, num_tabular=len(cohort.clinical_columns)
    )
    assert model.sequences == cohort.sequences and model.num_classes == cohort.num_classes
    cfg = TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=6e-4, progress=False, keep_last=1)
    assert EPOCHS * len(batch_bounds(len(train_ds), BATCH)) == STEPS  # the cost bound
    fit(model, train_ds, None, cfg, tmp_path / "run")
    model.eval()

    batch = collate([test_ds[i] for i in range(len(test_ds))])
    out = GradCAM3d(model, min_grid=8)(batch.volume, batch.tabular)
    accuracy = float((out.logits.argmax(1) == batch.label).float().mean())
    case_maps = torch.stack([out.maps[s] for s in cohort.sequences]).mean(0)

    centres = synthetic.lesion_centres(root, space="dhw")  # the model grid is the t1 grid here
    radii = synthetic.lesion_radii(root)
    grid = np.stack(np.indices((32, 32, 32)), -1).astype(np.float64)
    balls = np.stack([np.linalg.norm(grid - centres[c], axis=-1) <= radii[c] + MARGIN for c in batch.case_ids])
    rates = peak_hit_rates(case_maps, balls)
    hit, others, random_map = rates["hit"], rates["other_cases"], rates["random"]

    report = (
        f"test accuracy {accuracy:.2f} (n = {len(test)}); Grad-CAM maxima on the lesion {hit:.2f}, "
        f"on another case's lesion {others:.2f}, random map {random_map:.3f}; "
        f"{time.process_time() - cpu0:.0f} s of CPU on one thread"
    )
    print(report)
    assert accuracy >= 0.8, report
    assert hit >= 2 * random_map and hit >= others + 0.1, report
