"""spectral3d.data.nifti: orientation, resampling, the way back, and bad files (nibabel's own files too)."""

from __future__ import annotations

import gzip
import json
import os

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_to_output
from nibabel.testing import data_path

from spectral3d.data import DataError, PreprocessConfig, canonical_grid, load_case, read_volume

RAW = dict(clip_percentiles=None, zscore=False)


def _nib(name: str) -> str:
    return os.path.join(data_path, name)


def _save(path, data, affine, dtype=None):
    img = nib.Nifti1Image(data, affine)
    if dtype is not None:
        img.set_data_dtype(dtype)
    nib.save(img, path)
    return str(path)


def _smooth(rng, shape):
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(rng.standard_normal(shape), 1.5).astype(np.float32) + 5.0


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz", "reoriented_anat_moved.nii"])
def test_nibabel_files_load_in_canonical_order(name):
    """Native spacing, no crop/normalisation: volume == as_closest_canonical data as (k, j, i)."""
    img = nib.load(_nib(name))
    canon = nib.as_closest_canonical(img)
    case = load_case({"x": _nib(name)}, config=PreprocessConfig(spacing=None, **RAW), case_id=name)
    expected = canon.get_fdata().transpose(2, 1, 0)
    assert case.volume.shape == (1, *expected.shape)
    np.testing.assert_allclose(case.volume[0], expected, rtol=1e-6, atol=1e-6)
    # model (d, h, w) -> world equals the canonical affine with its axes reversed
    np.testing.assert_allclose(case.model_affine[:, [2, 1, 0, 3]], canon.affine, atol=1e-6)
    aff, shape = canonical_grid(img.affine, img.shape)
    np.testing.assert_allclose(aff, canon.affine, atol=1e-9)
    assert shape == canon.shape[:3]
    # W runs left -> right, H posterior -> anterior, D inferior -> superior
    assert np.all(np.diag(case.model_affine[:3, [2, 1, 0]]) > 0)


def test_nibabel_files_as_two_sequences_on_different_grids(tmp_path):
    """anatomical.nii (LAS, 2 mm, big-endian int16) and nibabel's own 3 mm resampling of it align."""
    anat = nib.load(_nib("anatomical.nii"))
    coarse = resample_to_output(anat, voxel_sizes=(3.0, 3.0, 3.0), order=1)
    coarse_path = str(tmp_path / "coarse.nii.gz")
    nib.save(coarse, coarse_path)
    assert nib.aff2axcodes(coarse.affine) != nib.aff2axcodes(anat.affine)  # another orientation and grid
    cfg = PreprocessConfig(input_size=(24, 40, 32), spacing=1.5, crop="centre")
    case = load_case({"anat": _nib("anatomical.nii"), "coarse": coarse_path}, config=cfg, case_id="nib")
    assert case.volume.shape == (2, 24, 40, 32)
    a, b = case.volume[0].ravel(), case.volume[1].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.9
    # a 2-voxel shift of one channel breaks the agreement: the check has teeth
    assert np.corrcoef(np.roll(case.volume[0], 2, axis=2).ravel(), b)[0, 1] < np.corrcoef(a, b)[0, 1] - 0.05


def test_two_real_files_different_resolution_and_4d(tmp_path):
    """anatomical.nii + volume 0 of functional.nii (4 x 4 x 8 mm, 4-D) with a crop both cover."""
    cfg = PreprocessConfig(input_size=(16, 64, 48), spacing=1.0, crop="centre", volume_index=0)
    case = load_case({"anat": _nib("anatomical.nii"), "func": _nib("functional.nii")}, config=cfg, case_id="c")
    assert case.volume.shape == (2, 16, 64, 48)
    assert case.sources["func"].shape == (17, 21, 3)
    assert np.isfinite(case.volume).all()


def test_4d_rejected_unless_volume_index():
    with pytest.raises(DataError, match=r"case 'c4'.*example4d\.nii\.gz.*4-D.*volume_index"):
        load_case({"bold": _nib("example4d.nii.gz")}, case_id="c4")
    with pytest.raises(DataError, match=r"volume_index 5 out of range"):
        read_volume(_nib("example4d.nii.gz"), volume_index=5)
    case = load_case({"bold": _nib("example4d.nii.gz")}, config=PreprocessConfig(spacing=None, volume_index=1, **RAW))
    canon = nib.as_closest_canonical(nib.load(_nib("example4d.nii.gz"))).get_fdata()[..., 1]
    np.testing.assert_allclose(case.volume[0], canon.transpose(2, 1, 0), atol=1e-5)


@pytest.mark.parametrize("codes", ["LAS", "LPS", "RPI"])
def test_orientation_round_trip_point_feature(tmp_path, codes):
    """The same anatomy stored in RAS and in another orientation loads identically; the feature sits
    at the expected (D, H, W)."""
    rng = np.random.default_rng(1)
    shape = (14, 18, 11)
    ras = _smooth(rng, shape)
    point = (9, 4, 7)
    ras[point] = 50.0
    ras_aff = np.diag([1.0, 1.5, 2.0, 1.0])
    ras_aff[:3, 3] = [-7.0, 3.0, -10.0]
    # express the same image in another orientation: flip the array axes whose code differs
    flip = [c != r for c, r in zip(codes, "RAS")]
    data = ras[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]
    to_ras = np.eye(4)
    for ax, f in enumerate(flip):
        if f:
            to_ras[ax, ax], to_ras[ax, 3] = -1.0, shape[ax] - 1
    other_aff = ras_aff @ to_ras
    assert "".join(nib.aff2axcodes(other_aff)) == codes
    cfg = PreprocessConfig(spacing=None, **RAW)
    a = load_case({"t1": _save(tmp_path / "ras.nii.gz", ras, ras_aff)}, config=cfg)
    b = load_case({"t1": _save(tmp_path / "other.nii.gz", np.ascontiguousarray(data), other_aff)}, config=cfg)
    np.testing.assert_allclose(a.volume, b.volume)
    expected_dhw = (point[2], point[1], point[0])
    assert np.unravel_index(np.argmax(b.volume[0]), b.volume.shape[1:]) == expected_dhw
    world = nib.affines.apply_affine(ras_aff, point)
    np.testing.assert_allclose(b.world_to_model(world), expected_dhw, atol=1e-9)


def test_big_endian_int16_with_scl_slope(tmp_path):
    rng = np.random.default_rng(2)
    raw = rng.integers(-3000, 3000, size=(6, 7, 5)).astype(np.int16)
    aff = np.diag([-1.2, 1.0, 1.5, 1.0])
    hdr = nib.Nifti1Header(endianness=">")
    hdr.set_data_shape(raw.shape)
    hdr.set_data_dtype(">i2")
    hdr.set_qform(aff, code=1)
    hdr.set_sform(aff, code=1)
    hdr["scl_slope"], hdr["scl_inter"], hdr["vox_offset"] = 0.25, -7.0, 352
    path = tmp_path / "be.nii"
    with open(path, "wb") as f:
        hdr.write_to(f)
        f.write(b"\0" * (352 - f.tell()))
        f.write(raw.astype(">i2").tobytes(order="F"))
    img = nib.load(path)
    assert img.header.endianness == ">" and img.get_data_dtype() == np.dtype(">i2")
    data, affine = read_volume(path)
    np.testing.assert_allclose(data, raw * 0.25 - 7.0)
    np.testing.assert_allclose(affine, aff)
    case = load_case({"t1": path}, config=PreprocessConfig(spacing=None, **RAW))
    np.testing.assert_allclose(case.volume[0], (raw * 0.25 - 7.0)[::-1].transpose(2, 1, 0))


def test_clip_and_zscore_and_padding(tmp_path):
    rng = np.random.default_rng(3)
    data = _smooth(rng, (12, 12, 12)) * 100
    path = _save(tmp_path / "a.nii.gz", data, np.eye(4))
    case = load_case({"t1": path}, config=PreprocessConfig(input_size=(16, 12, 12), spacing=1.0, crop="centre"))
    lo, hi = np.percentile(data, (0.5, 99.5))
    clipped = np.clip(data, lo, hi)
    pad = (lo - clipped.mean()) / clipped.std()
    # D has 16 > 12 voxels: two padded slices on each side, equal to the clipped, normalised minimum
    np.testing.assert_allclose(case.volume[0, :2], pad, rtol=1e-5)
    np.testing.assert_allclose(case.volume[0, -2:], pad, rtol=1e-5)
    inner = case.volume[0, 2:-2]
    np.testing.assert_allclose(
        inner, ((clipped - clipped.mean()) / clipped.std()).transpose(2, 1, 0), rtol=1e-4, atol=1e-4
    )


def test_roi_crop_centres_on_roi(tmp_path):
    rng = np.random.default_rng(4)
    data = _smooth(rng, (30, 30, 30))
    roi = np.zeros((30, 30, 30), np.uint8)
    roi[20:24, 5:9, 12:16] = 1  # centroid (21.5, 6.5, 13.5) in (i, j, k)
    aff = np.eye(4)
    case = load_case(
        {"t1": _save(tmp_path / "t1.nii.gz", data, aff)},
        roi=_save(tmp_path / "roi.nii.gz", roi, aff),
        config=PreprocessConfig(input_size=(9, 9, 9)),
    )
    assert case.roi is not None and case.roi.dtype == bool and case.roi.shape == (9, 9, 9)
    assert case.roi.sum() == roi.sum()
    np.testing.assert_allclose(np.argwhere(case.roi).mean(0), (4.0, 4.0, 4.0), atol=0.5)  # crop centre


def test_to_source_grid_round_trip(tmp_path):
    """A model-grid map goes back onto the source grid: shape and affine equal, a point within a voxel."""
    rng = np.random.default_rng(5)
    shape = (20, 17, 13)
    aff = np.array([[-1.1, 0.1, 0.0, 12.0], [0.0, -0.9, 0.2, 9.0], [0.05, 0.0, 1.7, -8.0], [0, 0, 0, 1.0]])
    src = _save(tmp_path / "obl.nii.gz", _smooth(rng, shape), aff)
    case = load_case({"t2": src}, config=PreprocessConfig(input_size=(20, 16, 18), spacing=(1.3, 1.0, 0.8)))
    heat = np.zeros(case.volume.shape[1:])
    m = np.array([9, 7, 11])
    heat[tuple(m)] = 1.0
    back = case.to_source_grid(heat, "t2")
    assert back.shape == shape and back.dtype == np.float32
    img = case.to_source_nifti(heat, "t2")
    np.testing.assert_allclose(img.affine, aff, atol=1e-6)
    assert img.shape == shape
    expected = nib.affines.apply_affine(case.sources["t2"].model_to_source, m)
    peak = np.array(np.unravel_index(np.argmax(back), shape))
    assert np.abs(peak - expected).max() <= 1.0
    # the whole loaded channel maps back onto its own source image
    back_vol = case.to_source_grid(case.volume[0], "t2", fill=np.nan)
    orig = nib.load(src).get_fdata()
    ok = np.isfinite(back_vol)
    assert ok.mean() > 0.5
    assert np.corrcoef(back_vol[ok], orig[ok])[0, 1] > 0.95
    with pytest.raises(ValueError, match=r"map_dhw: expected .*\(20, 16, 18\)"):
        case.to_source_grid(heat[:-1], "t2")
    with pytest.raises(KeyError, match="t1"):
        case.to_source_grid(heat, "t1")


def test_bad_files_name_case_and_file(tmp_path):
    rng = np.random.default_rng(6)
    good = _save(tmp_path / "t1.nii.gz", _smooth(rng, (10, 10, 10)), np.eye(4))
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(gzip.compress(rng.bytes(500)))
    with pytest.raises(DataError, match=r"case 'cX' \(.*corrupt\.nii\.gz\): not a readable NIfTI"):
        load_case({"t1": corrupt}, case_id="cX")
    truncated = tmp_path / "trunc.nii.gz"
    truncated.write_bytes(open(good, "rb").read()[:-400])
    with pytest.raises(DataError, match=r"case 'cX' \(.*trunc\.nii\.gz\)"):
        load_case({"t1": truncated}, case_id="cX")
    with pytest.raises(DataError, match=r"case 'cX' \(.*missing\.nii\.gz\): file not found"):
        load_case({"t1": tmp_path / "missing.nii.gz"}, case_id="cX")
    nan = _smooth(rng, (10, 10, 10))
    nan[3, 4, 5] = np.nan
    nan_path = _save(tmp_path / "nan.nii.gz", nan, np.eye(4))
    with pytest.raises(DataError, match=r"case 'cN' \(.*nan\.nii\.gz\): 1 NaN/Inf voxels"):
        load_case({"t1": nan_path}, case_id="cN")
    filled = load_case({"t1": nan_path}, config=PreprocessConfig(nan_policy="min"))
    assert np.isfinite(filled.volume).all()
    far = np.eye(4)
    far[0, 3] = 8.0  # 8 of 10 mm away in x: covers only ~20 % of the reference field of view
    shifted = _save(tmp_path / "t2.nii.gz", _smooth(rng, (10, 10, 10)), far)
    with pytest.raises(DataError, match=r"case 'cG' \(.*t2\.nii\.gz, .*t1\.nii\.gz\): grids disagree"):
        load_case({"t1": good, "t2": shifted}, case_id="cG")
    empty_roi = _save(tmp_path / "roi.nii.gz", np.zeros((10, 10, 10), np.uint8), np.eye(4))
    with pytest.raises(DataError, match=r"case 'cR' \(.*roi\.nii\.gz\): the ROI mask is empty"):
        load_case({"t1": good}, roi=empty_roi, case_id="cR")
    flat = _save(tmp_path / "flat.nii.gz", np.ones((10, 10), np.float32), np.eye(4))
    with pytest.raises(DataError, match=r"flat\.nii\.gz\): expected a 3-D volume"):
        load_case({"t1": flat}, case_id="c2d")


def test_preprocess_config_validation_and_json():
    cfg = PreprocessConfig(input_size=(16, 24, 24), spacing=(2, 1, 1), reference="t2", volume_index=0)
    assert PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"input_size: expected a positive size on axis H"):
        PreprocessConfig(input_size=(16, 0, 16))
    with pytest.raises(ValueError, match="spacing"):
        PreprocessConfig(spacing=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="clip_percentiles"):
        PreprocessConfig(clip_percentiles=(99.0, 1.0))
    with pytest.raises(ValueError, match="nan_policy"):
        PreprocessConfig(nan_policy="ignore")
    with pytest.raises(ValueError, match=r"config\.reference: 't9'"):
        load_case({"t1": _nib("anatomical.nii")}, config=PreprocessConfig(reference="t9"))
