"""spectral3d.data.cohort: validation of cases.csv and the case folders, splits and folds."""

from __future__ import annotations

import csv
import gzip
import shutil

import pytest

from spectral3d.data import SPLITS, Cohort, DataError, PreprocessConfig, write_synthetic_cohort


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_synthetic_cohort(tmp_path_factory.mktemp("pristine") / "c", task="spondylitis", cases=10, size=16)


@pytest.fixture
def root(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "cohort")


def _rows(root):
    with open(root / "cases.csv", newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(root, rows):
    with open(root / "cases.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_valid_cohort(root):
    cohort = Cohort.from_folder(root)
    assert len(cohort) == 10 and cohort.skipped == ()
    assert cohort.classes == ("pyogenic", "tuberculous")
    assert cohort.sequences == ("t1", "t2fs")
    assert cohort.num_tabular == 8 and "crp" in cohort.clinical_columns
    parts = {s: {c.case_id for c in cohort.split(s)} for s in SPLITS}
    assert set().union(*parts.values()) == {c.case_id for c in cohort.cases}
    assert sum(len(p) for p in parts.values()) == len(cohort)
    assert all(c.roi is not None and set(c.sequences) == {"t1", "t2fs"} for c in cohort.cases)
    for k in cohort.folds:
        tr, va = {c.case_id for c in cohort.split("train", k)}, {c.case_id for c in cohort.split("val", k)}
        assert not tr & va and tr | va == parts["train"] | parts["val"]
    ordered = Cohort.from_folder(root, classes=("tuberculous", "pyogenic"), sequences=("t2fs", "t1"))
    assert ordered.label_index(ordered.cases[0]) == 1 - cohort.label_index(cohort.cases[0])
    assert list(ordered.cases[0].sequences) == ["t2fs", "t1"]


def test_missing_sequence_file(root):
    (root / "case003" / "t2fs.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case 'case003' \(.*case003/t2fs\.nii\.gz\): missing sequence 't2fs'"):
        Cohort.from_folder(root)


def test_case_not_on_disk_and_folder_not_in_csv(root):
    shutil.rmtree(root / "case004")
    with pytest.raises(DataError, match=r"case 'case004' \(.*case004\): in cases\.csv but its folder is missing"):
        Cohort.from_folder(root)
    shutil.copytree(root / "case005", root / "stray")
    with pytest.raises(DataError, match=r"case 'stray' \(.*stray\): folder on disk but not in cases\.csv"):
        Cohort.from_folder(root)


def test_label_outside_classes_and_empty_split(root):
    with pytest.raises(DataError, match=r"case 'case000' .*label '\w+' is not one of the classes \['tuberculous'\]"):
        Cohort.from_folder(root, classes=("tuberculous",))
    rows = _rows(root)
    rows[2]["split"] = ""
    _write_rows(root, rows)
    with pytest.raises(DataError, match=r"case 'case002' \(.*cases\.csv\): empty split"):
        Cohort.from_folder(root)
    rows[2]["split"] = "valid"
    _write_rows(root, rows)
    with pytest.raises(DataError, match=r"unknown split 'valid'"):
        Cohort.from_folder(root)
    for r in rows:
        r["split"] = "test" if r["split"] != "train" else "train"
        r["fold"] = ""
    _write_rows(root, rows)
    cohort = Cohort.from_folder(root)
    with pytest.raises(DataError, match=r"split 'val' has no cases"):
        cohort.split("val")
    with pytest.raises(DataError, match=r"fold 0 not in the cohort's folds \[\]"):
        cohort.split("train", fold=0)


def test_patient_in_two_splits(root):
    rows = _rows(root)
    a = next(r for r in rows if r["split"] == "train")
    b = next(r for r in rows if r["split"] == "test")
    b["patient_id"] = a["patient_id"]
    _write_rows(root, rows)
    with pytest.raises(DataError, match=rf"patient '{a['patient_id']}' appears in more than one split"):
        Cohort.from_folder(root)


def test_skip_bad_reports_every_skipped_case(root):
    (root / "case001" / "t1.nii.gz").unlink()
    rows = _rows(root)
    rows[6]["label"] = ""
    rows[7]["crp"] = "high"
    _write_rows(root, rows)
    with pytest.raises(DataError, match=r"3 problems in 3 case\(s\)") as err:
        Cohort.from_folder(root)
    for cid in ("case001", "case006", "case007"):
        assert cid in str(err.value)
    cohort = Cohort.from_folder(root, skip_bad=True)
    skipped = {s.case_id for s in cohort.skipped}
    assert skipped == {"case001", "case006", "case007"}
    assert len(cohort) + len(skipped) == len(rows)  # nothing dropped silently
    assert "not a number" in str(next(s for s in cohort.skipped if s.case_id == "case007"))


def test_verify_finds_corrupt_images(root):
    (root / "case002" / "t2fs.nii.gz").write_bytes(gzip.compress(b"not a nifti" * 40))
    cohort = Cohort.from_folder(root)  # the table is fine
    cfg = PreprocessConfig(input_size=16)
    with pytest.raises(DataError, match=r"case 'case002' \(.*case002/t2fs\.nii\.gz\): not a readable NIfTI"):
        cohort.verify(cfg)
    kept = cohort.verify(cfg, skip_bad=True)
    assert [s.case_id for s in kept.skipped] == ["case002"] and len(kept) == len(cohort) - 1


def test_table_level_errors(root, tmp_path):
    with pytest.raises(DataError, match=r"no cases\.csv"):
        Cohort.from_folder(tmp_path)
    rows = _rows(root)
    rows[1]["case_id"] = rows[0]["case_id"]
    _write_rows(root, rows)
    with pytest.raises(DataError, match=r"case_id 'case000' on lines 2 and 3"):
        Cohort.from_folder(root)
    (root / "cases.csv").write_text("case_id,label\nx,y\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['split'\]"):
        Cohort.from_folder(root)
