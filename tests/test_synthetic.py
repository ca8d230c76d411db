"""spectral3d.data.synthetic: deterministic, loadable, the grids differ, the class cues are there."""

from __future__ import annotations

import dataclasses
import filecmp
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from spectral3d.data import (
    FREQUENCY_ONLY,
    Cohort,
    LesionSpec,
    PreprocessConfig,
    lesion_centres,
    write_synthetic_cohort,
)


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


def _cohort_digest(root: Path) -> str:
    """sha256 of the tables and of every image's stored array (floats rounded to 0.1) and scaling."""
    h = hashlib.sha256()
    for name in ("cases.csv", "lesions.json"):
        h.update((root / name).read_bytes())
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(case.glob("*.nii.gz")):
            img = nib.load(f)
            raw = np.asarray(img.dataobj.get_unscaled())
            if raw.dtype.kind == "f":
                raw = np.round(raw.astype(np.float64), 1)
            scale = f"{float(img.dataobj.slope):.6g} {float(img.dataobj.inter):.6g}"
            h.update(f"{case.name}/{f.name}{raw.shape}{raw.dtype}{scale}".encode())
            h.update(np.ascontiguousarray(raw).tobytes())
    return h.hexdigest()


def test_default_lesion_spec_writes_the_former_cohort(tmp_path):
    """The digest was taken from the generator before ``LesionSpec`` existed (same call, same seed)."""
    root = write_synthetic_cohort(tmp_path / "spine", task="spine", cases=6, seed=3, size=(16, 20, 18))
    assert _cohort_digest(root) == "518f37867e709f91ecf2dc31f78b2f6e6dc31025d4012cc6c6b53ff4078ded2d"
    again = write_synthetic_cohort(
        tmp_path / "b", task="spine", cases=6, seed=3, size=(16, 20, 18), lesion=LesionSpec()
    )
    assert _cohort_digest(again) == _cohort_digest(root)


def _band_and_intensity_accuracy(root: Path, spec: LesionSpec) -> tuple[float, float]:
    """Accuracy of two crude classifiers on t1: the class band with the most excess volume energy, and a
    leave-one-out nearest class mean on the lesion's (mean, standard deviation)."""
    cohort = Cohort.from_folder(root, sequences=("t1",))
    freq = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.fft.fftfreq(32)] * 3, indexing="ij")))
    in_band = [np.abs(freq - spec.band_centre(k / 3)) <= spec.band_half_width for k in range(4)]
    labels, energy, stats = [], [], []
    for rec in cohort.cases:
        case = cohort.load(rec, PreprocessConfig(input_size=32, crop="centre"))
        power = np.abs(np.fft.fftn(case.volume[0])) ** 2
        energy.append([np.log(power[b].mean()) for b in in_band])
        lesion = case.volume[0][case.roi.astype(bool)]
        stats.append([lesion.mean(), lesion.std()])
        labels.append(cohort.label_index(rec))
    y, energy, stats = np.array(labels), np.array(energy), np.array(stats)
    band_acc = float((np.argmax(energy - np.median(energy, 0), 1) == y).mean())
    z = (stats - stats.mean(0)) / stats.std(0)
    hits = 0
    for i in range(len(y)):
        rest = np.arange(len(y)) != i
        means = np.stack([z[rest & (y == k)].mean(0) for k in range(4)])
        hits += int(np.argmin(((means - z[i]) ** 2).sum(1)) == y[i])
    return band_acc, hits / len(y)


def test_frequency_only_task_carries_the_class_in_the_band_alone(tmp_path):
    root = write_synthetic_cohort(tmp_path / "f", task="texture", cases=40, lesion=FREQUENCY_ONLY)
    band_acc, intensity_acc = _band_and_intensity_accuracy(root, FREQUENCY_ONLY)
    assert band_acc >= 0.6 and intensity_acc <= 0.4, (band_acc, intensity_acc)  # chance 0.25
    t1, pd = (nib.load(root / "case000" / f"{s}.nii.gz") for s in ("t1", "pd"))
    np.testing.assert_array_equal(t1.affine, pd.affine)  # pd shares t1's grid: no resampling blurs the band
    # the same classifiers see an intensity cue when there is one
    cued = dataclasses.replace(FREQUENCY_ONLY, intensity_cue=1.0)
    root = write_synthetic_cohort(tmp_path / "i", task="texture", cases=40, lesion=cued)
    assert _band_and_intensity_accuracy(root, cued)[1] >= 0.8


def test_lesion_spec_validation(tmp_path):
    with pytest.raises(ValueError, match=r"bands: expected \(first, last\)"):
        LesionSpec(bands=(0.1, 0.6))
    with pytest.raises(ValueError, match="amplitude: expected a number > 0"):
        LesionSpec(amplitude=0)
    with pytest.raises(ValueError, match="radius: expected a fraction"):
        LesionSpec(radius=0.5)
    with pytest.raises(ValueError, match="texture_norm: expected"):
        LesionSpec(texture_norm="roi")
    with pytest.raises(ValueError, match="intensity_cue: expected a finite number"):
        LesionSpec(intensity_cue=float("nan"))
    with pytest.raises(ValueError, match="clinical_cue: expected a finite number, got True"):
        LesionSpec(clinical_cue=True)
    with pytest.raises(ValueError, match=r"bands: expected \(first, last\).*got \(0.1,\)"):
        LesionSpec(bands=(0.1,))
    with pytest.raises(ValueError, match="band_half_width: expected a number > 0.0, got -0.01"):
        LesionSpec(band_half_width=-0.01)
    with pytest.raises(AttributeError):  # frozen: a spec cannot change under a cohort written with it
        FREQUENCY_ONLY.amplitude = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"lesion.radius: expected at most 0.299 for size \(16, 16, 16\)"):
        write_synthetic_cohort(tmp_path / "a", size=16, lesion=LesionSpec(radius=0.3))
    with pytest.raises(TypeError, match="lesion: expected a LesionSpec"):
        write_synthetic_cohort(tmp_path / "a", lesion={"amplitude": 0.1})
