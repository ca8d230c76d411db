"""A cohort on disk: ``cases.csv`` plus one folder of NIfTI files per case (DESIGN.md §11).

Layout::

    ROOT/
      cases.csv          case_id,label,split[,patient_id][,fold][,clinical columns...]
      case001/           t1.nii.gz  t2.nii.gz  t2fs.nii.gz  [roi.nii.gz]   (.nii also)

* ``label``: class names; the class order is the sorted labels unless ``classes=`` fixes it.
* ``split``: ``train``/``val``/``test``; ``fold`` (optional ints): k-fold over the non-test cases.
* ``patient_id`` (default: the case id): a patient in two splits or folds is an error (it would leak).
* Every other column is a clinical float; an empty cell or ``NA``/``NaN``/``null``/``?`` is missing (NaN).
* Sequences are file stems; ``sequences=None`` takes those in more than half of the case folders *(ours: a case
  lacking one is that case's error)*. Other NIfTI files are ignored with one warning (``Cohort.ignored_files``).

All problems, each naming the case and the path, are raised together in one :class:`DataError`, or with
``skip_bad=True`` left out and listed in ``Cohort.skipped``; :meth:`Cohort.verify` finds those inside the images.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spectral3d.data.errors import DataError, SkippedCase
from spectral3d.data.nifti import LoadedCase, PreprocessConfig, load_case

__all__ = ["CASES_CSV", "SPLITS", "CaseRecord", "Cohort", "find_case_files", "parse_clinical", "read_clinical_table"]

CASES_CSV = "cases.csv"
SPLITS = ("train", "val", "test")
RESERVED_COLUMNS = ("case_id", "label", "split", "patient_id", "fold")
MISSING_VALUES = frozenset({"", "na", "nan", "null", "none", "?"})
NIFTI_SUFFIXES = (".nii.gz", ".nii")
ROI_NAME = "roi"


@dataclass(frozen=True, eq=False)
class CaseRecord:
    """One validated row of ``cases.csv`` with its files."""

    case_id: str  # the folder name
    label: str  # the class name
    split: str  # "train", "val" or "test"
    patient_id: str  # the case id when the column is absent or empty
    fold: int | None
    clinical: tuple[float, ...]  # Cohort.clinical_columns in order, NaN = missing
    sequences: dict[str, Path] = field(repr=False)  # in Cohort.sequences order
    roi: Path | None = field(default=None, repr=False)


class Cohort:
    """A validated cohort (build it with :meth:`from_folder`).

    Attributes: ``root``, ``cases`` (:class:`CaseRecord` s), ``classes``, ``sequences``, ``clinical_columns``,
    ``folds`` (sorted), ``skipped`` (:class:`SkippedCase` s) and ``ignored_files`` (neither a sequence nor the ROI).

    Example::

        >>> from spectral3d.data import write_synthetic_cohort
        >>> root = write_synthetic_cohort(tmp_path / "spine", task="spine", cases=12)  # doctest: +SKIP
        >>> cohort = Cohort.from_folder(root)                                          # doctest: +SKIP
        >>> cohort.sequences, len(cohort.classes)                                      # doctest: +SKIP
        (('t1', 't2', 't2fs'), 6)
        >>> train = cohort.split("train")                                              # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike,
        cases: Sequence[CaseRecord],
        classes: Sequence[str],
        sequences: Sequence[str],
        clinical_columns: Sequence[str] = (),
        skipped: Sequence[SkippedCase] = (),
        ignored_files: Sequence[Path] = (),
    ) -> None:
        self.root = Path(root)
        self.cases = tuple(cases)
        self.classes = tuple(classes)
        self.sequences = tuple(sequences)
        self.clinical_columns = tuple(clinical_columns)
        self.skipped = tuple(skipped)
        self.ignored_files = tuple(ignored_files)
        self._by_id = {c.case_id: c for c in self.cases}
        self._class_index = {name: i for i, name in enumerate(self.classes)}
        self.folds = tuple(sorted({c.fold for c in self.cases if c.fold is not None}))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike,
        sequences: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        clinical_columns: Sequence[str] | None = None,
        skip_bad: bool = False,
    ) -> Cohort:
        """Read and validate ``ROOT/cases.csv`` and the case folders (module docstring).

        Args:
            root: the cohort folder.
            sequences: sequence names in channel order; ``None``: the sorted stems of most case folders.
            classes: class names in index order; ``None``: the sorted labels found.
            clinical_columns: the tabular columns, in order; ``None``: every non-reserved column.
            skip_bad: leave bad cases out and list them in ``skipped`` instead of raising.

        Raises:
            DataError: a table-level problem always; case-level problems unless ``skip_bad``.
        """
        root = Path(root)
        csv_path = root / CASES_CSV
        if not root.is_dir():
            raise DataError("cohort folder not found", paths=(root,))
        if not csv_path.is_file():
            raise DataError(f"no {CASES_CSV} in the cohort folder", paths=(csv_path,))
        header, rows = _read_table(csv_path)
        columns = _clinical_columns(header, clinical_columns, csv_path)
        problems = _Problems(csv_path)
        _check_unlisted_folders(root, rows, problems)
        stems = {r["case_id"]: _nifti_stems(root / r["case_id"]) for r in rows if (root / r["case_id"]).is_dir()}
        sequences = _choose_sequences(root, stems, sequences)
        ignored = _ignored_files(root, stems, sequences)
        if classes is not None:
            classes = tuple(classes)
            if not classes or len(set(classes)) != len(classes):
                raise ValueError(f"classes: expected distinct class names, got {classes!r}")
        has_fold = "fold" in header
        records = [_case_record(root, row, sequences, classes, columns, has_fold, problems) for row in rows]
        if has_fold and any(r.fold is not None for r in records):
            for r in records:
                if r.fold is None and r.split in ("train", "val"):
                    problems.add(r.case_id, f"{r.split} case without a fold while the fold column is used")
        _check_patients(records, problems)

        all_problems = [e for errs in problems.values() for e in errs]
        if all_problems and not skip_bad:
            raise _combine(all_problems)
        kept = [r for r in records if r.case_id not in problems]
        if not kept:
            raise DataError("no valid case left", paths=(csv_path,))
        if classes is None:
            classes = tuple(sorted({r.label for r in kept}))
        skipped = [SkippedCase.from_error(e) for e in all_problems]
        return cls(root, kept, classes, sequences, columns, skipped, ignored)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.cases)

    def __repr__(self) -> str:
        counts = {s: sum(c.split == s for c in self.cases) for s in SPLITS}
        return (
            f"Cohort(root={str(self.root)!r}, cases={len(self.cases)}, splits={counts}, classes={self.classes}, "
            f"sequences={self.sequences}, clinical_columns={len(self.clinical_columns)}, folds={self.folds}, "
            f"skipped={len(self.skipped)})"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def num_tabular(self) -> int:
        """Number of clinical columns (the tabular feature count ``F``)."""
        return len(self.clinical_columns)

    def case(self, case_id: str) -> CaseRecord:
        """The record of ``case_id`` (``KeyError`` naming it if absent or skipped)."""
        try:
            return self._by_id[case_id]
        except KeyError:
            raise KeyError(f"case_id: {case_id!r} is not a (valid) case of {self.root}") from None

    def label_index(self, case: CaseRecord | str) -> int:
        """The class index of a case (its position in ``classes``)."""
        label = self.case(case).label if isinstance(case, str) else case.label
        return self._class_index[label]

    def split(self, name: str, fold: int | None = None) -> list[CaseRecord]:
        """The cases of split ``name`` (with ``fold=k``: ``"val"`` is fold k's non-test cases, ``"train"`` the rest).

        Raises:
            ValueError: unknown split name.
            DataError: no such fold, or the split is empty.
        """
        if name not in SPLITS:
            raise ValueError(f"name: expected one of {SPLITS}, got {name!r}")
        if fold is None or name == "test":
            out = [c for c in self.cases if c.split == name]
        else:
            if fold not in self.folds:
                raise DataError(f"fold {fold} not in the cohort's folds {list(self.folds)}", paths=(self.root,))
            want_val = name == "val"
            out = [c for c in self.cases if c.split != "test" and (c.fold == fold) == want_val]
        if not out:
            which = f"split {name!r}" + (f" of fold {fold}" if fold is not None and name != "test" else "")
            raise DataError(f"{which} has no cases", paths=(self.root / CASES_CSV,))
        return out

    # ------------------------------------------------------------------ images
    def load(self, case: CaseRecord | str, config: PreprocessConfig | None = None) -> LoadedCase:
        """Load one case's sequences (and ROI) with :func:`~spectral3d.data.nifti.load_case`."""
        rec = self.case(case) if isinstance(case, str) else case
        return load_case(rec.sequences, roi=rec.roi, config=config, case_id=rec.case_id)

    def verify(self, config: PreprocessConfig | None = None, skip_bad: bool = False, progress: bool = False) -> Cohort:
        """Load every case once: this cohort if all load, else one without the failing cases (or a :class:`DataError`).

        Args:
            config: the preprocessing to check with (grid coverage depends on the crop).
            skip_bad: leave failing cases out (in the result's ``skipped``) instead of raising.
            progress: show a progress bar (one step per case).
        """
        from tqdm.auto import tqdm

        errors = []
        for rec in tqdm(self.cases, desc="checking cases", disable=not progress, leave=False):
            try:
                self.load(rec, config)
            except DataError as e:
                errors.append(e)
        if not errors:
            return self
        if not skip_bad:
            raise _combine(errors)
        failed = {e.case_id for e in errors}
        kept = [c for c in self.cases if c.case_id not in failed]
        if not kept:
            raise _combine(errors)
        skipped = self.skipped + tuple(SkippedCase.from_error(e) for e in errors)
        return Cohort(self.root, kept, self.classes, self.sequences, self.clinical_columns, skipped, self.ignored_files)


def _read_table(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the stripped rows of ``cases.csv``; table-level checks."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{CASES_CSV} is empty", paths=(csv_path,)) from None
        body = [r for r in reader if any(cell.strip() for cell in r)]
    missing = [c for c in ("case_id", "label", "split") if c not in header]
    if missing:
        raise DataError(f"missing column(s) {missing}; header is {header}", paths=(csv_path,))
    if len(set(header)) != len(header):
        raise DataError(f"duplicated column names in header {header}", paths=(csv_path,))
    rows, seen = [], {}
    for line, cells in enumerate(body, start=2):
        if len(cells) != len(header):
            raise DataError(f"line {line}: {len(cells)} cells for {len(header)} columns", paths=(csv_path,))
        row = {h: c.strip() for h, c in zip(header, cells)}
        cid = row["case_id"]
        if not cid:
            raise DataError(f"line {line}: empty case_id", paths=(csv_path,))
        if cid in seen:
            raise DataError(f"case_id {cid!r} on lines {seen[cid]} and {line}", cid, (csv_path,))
        seen[cid] = line
        rows.append(row)
    if not rows:
        raise DataError(f"{CASES_CSV} has no cases", paths=(csv_path,))
    return header, rows


def _clinical_columns(header: list[str], wanted: Sequence[str] | None, csv_path: Path) -> tuple[str, ...]:
    available = [h for h in header if h not in RESERVED_COLUMNS]
    if wanted is None:
        return tuple(available)
    missing = [c for c in wanted if c not in available]
    if missing:
        raise DataError(f"clinical column(s) {missing} not in the table (have {available})", paths=(csv_path,))
    return tuple(wanted)


class _Problems(dict):
    """Case id → the :class:`DataError` s found for it, in the order found (paths default to ``cases.csv``)."""

    def __init__(self, csv_path: Path) -> None:
        super().__init__()
        self.csv_path = csv_path

    def add(self, case_id: str, message: str, *paths: str | os.PathLike) -> None:
        self.setdefault(case_id, []).append(DataError(message, case_id, paths or (self.csv_path,)))


def _check_unlisted_folders(root: Path, rows: list[dict[str, str]], problems: _Problems) -> None:
    """Folders on disk that hold NIfTI files are case folders: each must be in ``cases.csv``."""
    listed = {row["case_id"] for row in rows}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in listed and _nifti_stems(folder):
            problems.add(folder.name, f"folder on disk but not in {CASES_CSV}", folder)


def _choose_sequences(root: Path, stems: dict[str, set[str]], sequences: Sequence[str] | None) -> tuple[str, ...]:
    """The sequences asked for, or the stems present in more than half of the case folders; checked."""
    found = set().union(*stems.values()) - {ROI_NAME}
    if not found:
        raise DataError("no NIfTI sequence files in any case folder", paths=(root,))
    if sequences is None:  # the stems of every healthy case: a stray file or a missing one changes nothing
        sequences = sorted(n for n in found if 2 * sum(n in names for names in stems.values()) > len(stems))
        if not sequences:
            raise DataError(
                f"no sequence is present in most case folders (stems found: {sorted(found)}); "
                "pass sequences= to choose them",
                paths=(root,),
            )
    sequences = tuple(sequences)
    if not sequences or len(set(sequences)) != len(sequences) or ROI_NAME in sequences:
        raise ValueError(f"sequences: expected distinct names other than {ROI_NAME!r}, got {sequences!r}")
    nowhere = [name for name in sequences if name not in found]
    if nowhere:
        raise DataError(
            f"sequence(s) {nowhere} in none of the case folders (they hold {sorted(found)}); "
            "pass sequences= to choose others",
            paths=(root,),
        )
    return sequences


def _ignored_files(root: Path, stems: dict[str, set[str]], sequences: tuple[str, ...]) -> list[Path]:
    """The case folders' NIfTI files that are neither a sequence nor the ROI, with one warning."""
    ignored = sorted(
        root / cid / f"{stem}{_suffix(root / cid, stem)}"
        for cid, names in stems.items()
        for stem in names - {*sequences, ROI_NAME}
    )
    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:5]) + (", ..." if len(ignored) > 5 else "")
        warnings.warn(
            f"{root}: ignoring {len(ignored)} NIfTI file(s) that are not the sequences {list(sequences)} "
            f"or {ROI_NAME!r}: {shown}",
            stacklevel=3,  # the caller of Cohort.from_folder
        )
    return ignored


def _case_record(
    root: Path,
    row: dict[str, str],
    sequences: tuple[str, ...],
    classes: tuple[str, ...] | None,
    columns: tuple[str, ...],
    has_fold: bool,
    problems: _Problems,
) -> CaseRecord:
    """One row of ``cases.csv`` as a :class:`CaseRecord`; its problems go to ``problems``."""
    cid = row["case_id"]
    folder = root / cid
    split = row["split"]
    if split == "":
        problems.add(cid, "empty split (expected one of train, val, test)")
    elif split not in SPLITS:
        problems.add(cid, f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    label = row["label"]
    if label == "":
        problems.add(cid, "empty label")
    elif classes is not None and label not in classes:
        problems.add(cid, f"label {label!r} is not one of the classes {list(classes)}")
    fold = None
    if has_fold and row["fold"] != "":
        try:
            fold = int(row["fold"])
        except ValueError:
            problems.add(cid, f"fold {row['fold']!r} is not an integer")
    try:
        clinical = parse_clinical(row, columns, cid, problems.csv_path)
    except DataError as err:
        problems.add(cid, err.message)
        clinical = [math.nan] * len(columns)
    seq_files: dict[str, Path] = {}
    roi = None
    if not folder.is_dir():
        problems.add(cid, f"in {CASES_CSV} but its folder is missing", folder)
    else:
        try:
            seq_files, roi = find_case_files(folder, sequences, cid)
        except DataError as err:
            problems.add(cid, err.message, *err.paths)
    return CaseRecord(
        case_id=cid,
        label=label,
        split=split,
        patient_id=row.get("patient_id") or cid,
        fold=fold,
        clinical=tuple(clinical),
        sequences=seq_files,
        roi=roi,
    )


def parse_clinical(
    row: Mapping[str, str | None], columns: Sequence[str], case_id: str = "", path: str | os.PathLike = ""
) -> list[float]:
    """The values of ``columns`` in a CSV row as floats (missing: NaN); :class:`DataError` for a non-number."""
    values = []
    for col in columns:
        cell = (row.get(col) or "").strip()
        if cell.lower() in MISSING_VALUES:
            values.append(math.nan)
            continue
        try:
            values.append(float(cell))
        except ValueError:
            message = f"clinical column {col!r}: {cell!r} is not a number (encode categories numerically)"
            raise DataError(message, case_id, (path,) if path else ()) from None
    return values


def read_clinical_table(path: str | os.PathLike, columns: Sequence[str]) -> dict[str, list[float]]:
    """``case_id → values of columns`` from a CSV with a ``case_id`` column, as strictly as ``cases.csv``.

    For cases outside a cohort (``spectral3d predict|gradcam --tabular``); every column must be there.
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or ()]
        if "case_id" not in header:
            raise DataError(f"tabular CSV needs a 'case_id' column; header is {header}", paths=(path,))
        absent = [c for c in columns if c not in header]
        if absent:
            raise DataError(f"clinical column(s) {absent} not in the tabular CSV (have {header})", paths=(path,))
        table: dict[str, list[float]] = {}
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            cid = (row["case_id"] or "").strip()
            if cid in table:
                raise DataError(f"case_id {cid!r} appears twice in the tabular CSV", cid, (path,))
            table[cid] = parse_clinical(row, columns, cid, path)
        return table


def find_case_files(
    folder: str | os.PathLike, sequences: Sequence[str], case_id: str | None = None
) -> tuple[dict[str, Path], Path | None]:
    """``({sequence: file}, roi or None)`` of a case folder (``<name>.nii.gz`` or ``.nii``, not both)."""
    folder = Path(folder)
    cid = folder.name if case_id is None else case_id
    if not folder.is_dir():
        raise DataError("case folder not found", cid, (folder,))

    def find(stem: str, what: str) -> Path | None:
        found = [folder / f"{stem}{s}" for s in NIFTI_SUFFIXES if (folder / f"{stem}{s}").is_file()]
        if len(found) > 1:
            raise DataError(f"{what} is ambiguous (both .nii and .nii.gz)", cid, found)
        return found[0] if found else None

    files = {}
    for name in sequences:
        path = find(name, f"sequence {name!r}")
        if path is None:
            raise DataError(f"missing sequence {name!r}", cid, (folder / f"{name}.nii.gz",))
        files[name] = path
    return files, find(ROI_NAME, "ROI")


def _suffix(folder: Path, stem: str) -> str:
    return next(s for s in NIFTI_SUFFIXES if (folder / f"{stem}{s}").is_file())


def _nifti_stems(folder: Path) -> set[str]:
    stems = set()
    for p in folder.iterdir():
        for suffix in NIFTI_SUFFIXES:
            if p.name.endswith(suffix) and p.is_file():
                stems.add(p.name[: -len(suffix)])
                break
    return stems


def _check_patients(records: list[CaseRecord], problems: _Problems) -> None:
    """A patient's cases must share one split and (for non-test cases) one fold."""
    by_patient: dict[str, list[CaseRecord]] = defaultdict(list)
    for r in records:
        by_patient[r.patient_id].append(r)
    for pid, recs in by_patient.items():
        splits = {r.split for r in recs}
        folds = {r.fold for r in recs if r.split != "test"}
        if len(splits) > 1 or len(folds) > 1:
            where = ", ".join(f"{r.case_id} ({r.split}, fold {r.fold})" for r in recs)
            for r in recs:
                problems.add(r.case_id, f"patient {pid!r} appears in more than one split or fold: {where}")


def _combine(errors: list[DataError]) -> DataError:
    """One error for several: the first case named, every problem listed."""
    if len(errors) == 1:
        return errors[0]
    lines = "\n".join(f"  - {e}" for e in errors)
    return DataError(f"{len(errors)} problems in {len({e.case_id for e in errors})} case(s):\n{lines}")
