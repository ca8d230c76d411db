"""spectral3d.data.synthetic: deterministic, loadable, the grids differ, the class cues are there."""

from __future__ import annotations

import filecmp

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from spectral3d.data import Cohort, PreprocessConfig, lesion_centres, write_synthetic_cohort


@pytest.fixture(scope="module")
def spine(tmp_path_factory):
    return write_synthetic_cohort(tmp_path_factory.mktemp("syn") / "spine", task="spine", cases=12, size=(16, 20, 18))


def test_deterministic_given_seed(spine, tmp_path):
    again = write_synthetic_cohort(tmp_path / "again", task="spine", cases=12, size=(16, 20, 18))
    files = ["cases.csv", "lesions.json", "case000/t1.nii.gz", "case007/t2.nii.gz", "case011/roi.nii.gz"]
    match, mismatch, errors = filecmp.cmpfiles(spine, again, files, shallow=False)
    assert mismatch == [] and errors == []
    other = write_synthetic_cohort(tmp_path / "other", task="spine", cases=12, size=(16, 20, 18), seed=1)
    assert not filecmp.cmp(spine / "case000" / "t1.nii.gz", other / "case000" / "t1.nii.gz", shallow=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_synthetic_cohort(tmp_path / "again", task="spine", cases=12)


def test_layout_grids_and_table(spine):
    cohort = Cohort.from_folder(spine)
    assert len(cohort) == 12 and cohort.num_classes == 6 and cohort.sequences == ("t1", "t2", "t2fs")
    assert cohort.clinical_columns == ("age", "sex", "crp", "esr", "wbc", "temperature", "symptom_weeks", "bmi")
    t1, t2, t2fs = (nib.load(spine / "case000" / f"{s}.nii.gz") for s in cohort.sequences)
    assert nib.aff2axcodes(t1.affine) == ("R", "A", "S") and nib.aff2axcodes(t2.affine) == ("L", "P", "S")
    assert t1.shape == (18, 20, 16) and t1.get_data_dtype() == np.int16 and t1.dataobj.slope != 1
    assert t2fs.header.get_zooms() == (1.25, 1.25, 1.25) and t2fs.shape != t1.shape
    clinical = np.array([c.clinical for c in cohort.cases])
    assert np.isnan(clinical).any() and not np.isnan(clinical[:, 0]).any()
    splits_of = {}
    for c in cohort.cases:
        splits_of.setdefault(c.patient_id, set()).add(c.split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert {c.split for c in cohort.cases} == {"train", "val", "test"}
    assert all((c.fold is None) == (c.split == "test") for c in cohort.cases)


def test_sequences_align_and_lesion_centres(spine):
    cohort = Cohort.from_folder(spine)
    centres = lesion_centres(spine)
    centres_dhw = lesion_centres(spine, space="dhw")
    cfg = PreprocessConfig(input_size=(16, 20, 18), crop="centre")
    for rec in cohort.cases[:4]:
        case = cohort.load(rec, cfg)
        # the model grid of this config is the t1 grid: both centre conventions agree
        np.testing.assert_allclose(case.world_to_model(centres[rec.case_id]), centres_dhw[rec.case_id], atol=1e-3)
        np.testing.assert_allclose(np.argwhere(case.roi).mean(0), centres_dhw[rec.case_id], atol=0.6)
        # outside the lesion the anatomy is shared: the resampled t2 (LPS) and t2fs (1.25 mm) align with t1
        outside = ~ndimage.binary_dilation(case.roi, iterations=2)
        for s in (1, 2):
            aligned = np.corrcoef(case.volume[0][outside], case.volume[s][outside])[0, 1]
            shifted = np.corrcoef(np.roll(case.volume[0], 2, axis=2)[outside], case.volume[s][outside])[0, 1]
            assert aligned > 0.8 and aligned > shifted + 0.1


def _lesion_frequency(case) -> float:
    """Power-weighted mean radial frequency of the t1 lesion texture inside the ROI."""
    x = case.volume[0] * case.roi
    x = (x - x[case.roi].mean()) * case.roi
    power = np.abs(np.fft.fftn(x)) ** 2
    f = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.fft.fftfreq(n) for n in x.shape], indexing="ij")))
    return float((power * f).sum() / power.sum())


def test_frequency_band_is_the_class_cue(tmp_path):
    root = write_synthetic_cohort(tmp_path / "sp", task="spondylitis", cases=8, size=24, seed=3)
    cohort = Cohort.from_folder(root)
    cfg = PreprocessConfig(input_size=24)
    freq = {name: [] for name in cohort.classes}
    for rec in cohort.cases:
        freq[rec.label].append(_lesion_frequency(cohort.load(rec, cfg)))
    assert min(freq["tuberculous"]) > max(freq["pyogenic"])


def test_intensity_cue_per_sequence_inside_the_anatomy(tmp_path):
    """The lesion mean rises with the class in t1 and falls in t2fs, and stays between background and column."""
    root = write_synthetic_cohort(tmp_path / "sp", task="spondylitis", cases=10, size=24, seed=5)
    cohort = Cohort.from_folder(root)
    cfg = PreprocessConfig(input_size=24, crop="centre", clip_percentiles=None, zscore=False)
    lesion_mean = {name: {s: [] for s in cohort.sequences} for name in cohort.classes}
    for rec in cohort.cases:
        case = cohort.load(rec, cfg)
        roi = ndimage.binary_erosion(case.roi, iterations=1)  # away from the soft edge
        for s, name in enumerate(cohort.sequences):
            v = case.volume[s]
            lesion_mean[rec.label][name].append(v[roi].mean())
            # the anatomy's range (background to column) brackets the lesion's mean, up to its texture
            lo, hi = np.percentile(v[~ndimage.binary_dilation(case.roi, iterations=2)], (2, 98))
            assert lo - 0.25 * (hi - lo) < v[roi].mean() < hi + 0.25 * (hi - lo), (rec.case_id, name)
    # pyogenic = the first class (low), tuberculous = the last (high): separated in each sequence alone
    assert min(lesion_mean["tuberculous"]["t1"]) > max(lesion_mean["pyogenic"]["t1"])
    assert max(lesion_mean["tuberculous"]["t2fs"]) < min(lesion_mean["pyogenic"]["t2fs"])


def test_argument_validation(tmp_path):
    with pytest.raises(ValueError, match="task: expected one of"):
        write_synthetic_cohort(tmp_path / "a", task="brain")
    with pytest.raises(ValueError, match=r"cases: expected an int >= 5"):
        write_synthetic_cohort(tmp_path / "a", cases=3)
    with pytest.raises(ValueError, match="size: expected at least 16 voxels on axis H"):
        write_synthetic_cohort(tmp_path / "a", size=(16, 8, 16))
