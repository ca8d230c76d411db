"""spectral3d.data.dataset / transforms / cache: items, train-only tabular statistics, seeded
augmentation, and the content-keyed cache."""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from spectral3d.data import (
    AugmentConfig,
    Cohort,
    MRIDataset,
    PreprocessConfig,
    TabularStats,
    VolumeCache,
    augment_volume,
    augmentation_seed,
    collate,
    write_synthetic_cohort,
)
from spectral3d.data.transforms import resample_affine

CFG = PreprocessConfig(input_size=(16, 16, 16))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = write_synthetic_cohort(tmp_path_factory.mktemp("ds") / "c", task="spine", cases=10, size=16, seed=4)
    return Cohort.from_folder(root)


def test_items_and_collate(cohort):
    ds = MRIDataset(cohort, cohort.split("train"), CFG)
    s = ds[0]
    assert s.volume.shape == (3, 16, 16, 16) and s.volume.dtype == torch.float32
    assert s.tabular.shape == (8,) and s.tabular.dtype == torch.float32
    assert s.label.dtype == torch.int64 and s.label.ndim == 0
    assert int(s.label) == cohort.label_index(ds.cases[0]) and s.case_id == ds.cases[0].case_id
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate)
    batch = next(iter(loader))
    assert batch.volume.shape == (3, 3, 16, 16, 16) and batch.tabular.shape == (3, 8) and batch.label.shape == (3,)
    assert batch.case_ids == [c.case_id for c in ds.cases[:3]]
    assert ds.labels == [cohort.label_index(c) for c in ds.cases]
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]
    with pytest.raises(TypeError, match="preprocess: expected a PreprocessConfig"):
        MRIDataset(cohort, cohort.split("train"), {"input_size": 16})


def test_tabular_uses_training_statistics(cohort):
    train = MRIDataset(cohort, cohort.split("train"), CFG)
    val = MRIDataset(cohort, cohort.split("val"), CFG, tabular_stats=train.tabular_stats)
    x = np.array([c.clinical for c in cohort.split("train")])
    np.testing.assert_allclose(train.tabular_stats.mean, np.nanmean(x, axis=0))
    np.testing.assert_allclose(train.tabular_stats.std, np.nanstd(x, axis=0))
    rec = val.cases[0]
    expected = (np.array(rec.clinical) - np.nanmean(x, 0)) / np.nanstd(x, 0)
    got = val[0].tabular.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.array_equal(np.isnan(got), np.isnan(rec.clinical))  # missing stays missing
    own = MRIDataset(cohort, cohort.split("val"), CFG)  # fitted on val: differs
    assert not np.allclose(own.tabular_stats.mean, train.tabular_stats.mean)
    restored = TabularStats.from_dict(json.loads(json.dumps(train.tabular_stats.to_dict())))
    assert restored == train.tabular_stats
    empty = TabularStats.fit([[np.nan, 2.0], [np.nan, 2.0]], ("a", "b"))
    assert empty.mean == (0.0, 2.0) and empty.std == (1.0, 1.0)
    with pytest.raises(ValueError, match="tabular_stats: columns"):
        MRIDataset(cohort, cohort.split("val"), CFG, tabular_stats=TabularStats(("a",), (0.0,), (1.0,)))


def test_augmentation_seeded_per_epoch_and_index(cohort):
    ds = MRIDataset(cohort, cohort.split("train"), CFG, augment=True, seed=7)
    plain = MRIDataset(cohort, cohort.split("train"), CFG)
    a0, b0 = ds[0].volume, ds[0].volume
    assert torch.equal(a0, b0) and not torch.equal(a0, plain[0].volume)
    assert not torch.equal(ds[1].volume, plain[1].volume)
    ds.set_epoch(1)
    assert not torch.equal(ds[0].volume, a0)
    ds.set_epoch(0)
    assert torch.equal(ds[0].volume, a0)
    assert torch.equal(plain[0].volume, torch.from_numpy(plain.load(0).volume))


def test_augment_ops():
    x = torch.randn(2, 6, 7, 8, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    flip_only = AugmentConfig(flip_axes=(0, 2), flip_prob=1.0, affine_prob=0.0, intensity_scale=0, intensity_shift=0)
    assert torch.equal(augment_volume(x, g, flip_only), x.flip(1, 3))
    identity = AugmentConfig(
        flip_prob=0.0, affine_prob=1.0, rotate_deg=0, scale=0, translate=0, intensity_scale=0, intensity_shift=0
    )
    torch.testing.assert_close(augment_volume(x, g, identity), x)
    shifted = resample_affine(x, torch.eye(3, dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(shifted[:, :-1], x[:, 1:])
    # a 90 degree rotation in the (H, W) plane of a cube is a transpose + flip
    c = torch.randn(1, 5, 5, 5, dtype=torch.float64)
    rot = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)
    torch.testing.assert_close(resample_affine(c, rot, torch.zeros(3, dtype=torch.float64)), c.transpose(2, 3).flip(3))
    jitter = AugmentConfig(flip_prob=0.0, affine_prob=0.0, intensity_scale=0.2, intensity_shift=0.3)
    y = augment_volume(x, torch.Generator().manual_seed(1), jitter)
    for s in range(2):  # per-sequence affine intensity map within the bounds
        slope = ((y[s] - y[s].mean()) / (x[s] - x[s].mean())).median()
        assert 0.8 <= float(slope) <= 1.2
    assert augmentation_seed(0, 1, 2) != augmentation_seed(0, 2, 1)
    with pytest.raises(ValueError, match="flip_axes"):
        AugmentConfig(flip_axes=(3,))
    with pytest.raises(ValueError, match=r"volume: expected a 4-D tensor"):
        augment_volume(x[0], g, flip_only)


def test_cache_hit_identical_and_misses_on_change(cohort, tmp_path):
    cohort = Cohort.from_folder(shutil.copytree(cohort.root, tmp_path / "copy"))  # files are rewritten below
    cache_dir = tmp_path / "cache"
    ds = MRIDataset(cohort, cohort.split("train")[:2], CFG, cache_dir=cache_dir)
    first = ds[0].volume
    second = ds[0].volume
    assert ds.cache.misses == 1 and ds.cache.hits == 1 and torch.equal(first, second)
    fresh = ds.load(0)
    direct = cohort.load(ds.cases[0], CFG)
    np.testing.assert_array_equal(fresh.volume, direct.volume)
    np.testing.assert_array_equal(fresh.roi, direct.roi)
    np.testing.assert_allclose(fresh.sources["t2"].model_to_source, direct.sources["t2"].model_to_source)
    assert fresh.case_id == direct.case_id and fresh.sources["t1"].path == direct.sources["t1"].path
    other = MRIDataset(cohort, cohort.split("train")[:2], PreprocessConfig(input_size=16, order=3), cache_dir=cache_dir)
    other[0]
    assert other.cache.misses == 1 and other.cache.hits == 0  # a changed parameter misses
    rec = ds.cases[0]
    cache = VolumeCache(cache_dir)
    key = cache.key(rec.sequences, rec.roi, CFG)
    img = nib.load(rec.sequences["t2"])
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 1.01, img.affine), rec.sequences["t2"])  # new content
    assert cache.key(rec.sequences, rec.roi, CFG) != key
    cache.load_case(rec.sequences, rec.roi, CFG, rec.case_id)
    assert cache.misses == 1
    assert not any(p.suffix == ".tmp" for p in cache_dir.rglob("*")), os.listdir(cache_dir)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_an_unreadable_cache_entry_is_a_miss_with_one_warning(cohort, tmp_path, damage):
    rec = cohort.split("train")[0]
    cache = VolumeCache(tmp_path / "cache")
    expected = cache.load_case(rec.sequences, rec.roi, CFG, rec.case_id).volume
    (entry,) = (tmp_path / "cache").rglob("*.npz")
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not an npz archive")
    with pytest.warns(UserWarning, match=r"cache entry .*\.npz is unreadable") as record:
        again = cache.load_case(rec.sequences, rec.roi, CFG, rec.case_id)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    np.testing.assert_array_equal(again.volume, expected)
    assert (cache.hits, cache.misses) == (0, 2) and entry.read_bytes() != b"not an npz archive"
    cache.load_case(rec.sequences, rec.roi, CFG, rec.case_id)  # rewritten: a hit again
    assert cache.hits == 1
