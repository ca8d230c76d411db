"""A synthetic multi-sequence MRI cohort in the layout of :mod:`spectral3d.data.cohort` (DESIGN.md §11).

The paper's cohorts are private; a model solves this one only by looking at the lesion (the design, measured:
``benchmarks/results/data_notes.md``).

* Anatomy *(ours)*: a bright cylinder along ``D`` in smooth noise; per sequence a background and a column intensity.
* Lesion (:class:`LesionSpec`, defaults here): a soft ball of radius ≈ 0.18·min(size) that *replaces* the tissue it
  sits in; intensities are fractions of each sequence's range (background 0, column 1). Class ``c`` of ``C``:
  texture = band-pass noise keeping ``|f| ∈ [f_c − 0.035, f_c + 0.035]`` cycles/voxel, ``f_c = 0.06 + 0.36·c/(C−1)``,
  std 0.2; mean ``0.5 ± 1.0·(c/(C−1) − ½)``, rising in ``t1``/``t2``, falling in ``t2fs`` *(ours: a strong cue,
  each sequence alone carries it)*.
* :data:`FREQUENCY_ONLY` (``task="texture"``): no intensity or clinical cue; only the texture's band differs.
* Tasks: ``spine`` (prostate, breast, kidney, gastrointestinal, other, lung: low → high frequency; ``t1, t2, t2fs``),
  ``spondylitis`` (pyogenic, tuberculous; ``t1, t2fs``), ``texture`` (``band0..band3``; ``t1, pd``).
* Grids: ``t1`` is the reference (RAS, 1 mm, ``size`` as ``(D, H, W)``, int16 with ``scl_slope``); ``pd`` shares it;
  ``t2`` is LPS with a sub-voxel shift; ``t2fs`` 1.25 mm. ``roi.nii.gz`` is the lesion ball on the ``t1`` grid.
* Clinical columns ``age, sex, crp, esr, wbc, temperature, symptom_weeks, bmi``; ``crp, esr, wbc, temperature``
  drift with the class (``LesionSpec.clinical_cue``); ~10 % of the cells (not ``age``) are empty.
* Splits: ~20 % of patients have two cases; patient-level stratified 60/20/20 splits and a ``fold`` column.
* ``lesions.json``: each lesion's radius and centre, in world mm and as ``(d, h, w)`` of the ``t1`` grid (the model
  grid of ``PreprocessConfig(spacing=1, crop="centre", input_size=size)``).

Deterministic given ``seed`` (case ``n`` draws from ``default_rng([seed, n])``); files are byte-identical between runs.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from scipy import ndimage

from spectral3d._checks import to_3tuple_int
from spectral3d.data.cohort import CASES_CSV

__all__ = [
    "FREQUENCY_ONLY",
    "LESIONS_JSON",
    "TASKS",
    "LesionSpec",
    "lesion_centres",
    "lesion_radii",
    "write_synthetic_cohort",
]

LESIONS_JSON = "lesions.json"
TASKS = {
    "spine": {
        "classes": ("prostate", "breast", "kidney", "gastrointestinal", "other", "lung"),
        "sequences": ("t1", "t2", "t2fs"),
    },
    "spondylitis": {"classes": ("pyogenic", "tuberculous"), "sequences": ("t1", "t2fs")},
    "texture": {"classes": ("band0", "band1", "band2", "band3"), "sequences": ("t1", "pd")},
}
CLINICAL_COLUMNS = ("age", "sex", "crp", "esr", "wbc", "temperature", "symptom_weeks", "bmi")
# per sequence: (background, column) intensities of the anatomy and the sign of the class cue; the
# lesion's mean is set as a fraction of this range (module docstring), the same in every sequence
_ANATOMY = {"t1": (0.35, 1.0, 1.0), "t2": (0.3, 0.8, 1.0), "t2fs": (0.15, 0.65, -1.0), "pd": (0.2, 0.85, 1.0)}
_LESION_LEVEL = 0.5  # lesion mean at the middle class, as a fraction of (column - background)


@dataclass(frozen=True)
class LesionSpec:
    """The lesion's class cues and size (fractions of each sequence's range); defaults = the demo's cohort.

    Attributes:
        intensity_cue: shift of the lesion's mean from the first to the last class (0: one mean for all).
        bands: texture band centres of the first and the last class, cycles/voxel, each in ``(0, 0.5)``.
        band_half_width: half width of every texture band, cycles/voxel.
        amplitude: standard deviation of the texture.
        radius: lesion radius as a fraction of ``min(size)`` (each case draws ±15 % around it).
        texture_norm: ``"volume"``: unit variance over the volume; ``"lesion"``: mean 0, variance 1 inside
            the lesion (masked), so only the texture's spectrum tells the classes apart.
        clinical_cue: scales the class drift of ``crp, esr, wbc, temperature`` (0: noise columns).

    Example::

        >>> spec = LesionSpec(intensity_cue=0.0, texture_norm="lesion", clinical_cue=0.0)
        >>> root = write_synthetic_cohort(tmp_path / "tex", task="texture", lesion=spec)  # doctest: +SKIP
    """

    intensity_cue: float = 1.0
    bands: tuple[float, float] = (0.06, 0.42)
    band_half_width: float = 0.035
    amplitude: float = 0.2
    radius: float = 0.18
    texture_norm: Literal["volume", "lesion"] = "volume"
    clinical_cue: float = 1.0

    def __post_init__(self) -> None:
        bands = tuple(float(b) for b in self.bands) if isinstance(self.bands, Sequence) else ()
        if len(bands) != 2 or not all(0.0 < b < 0.5 for b in bands):
            raise ValueError(
                f"bands: expected (first, last) class band centres in (0, 0.5) cycles/voxel, got {self.bands!r}"
            )
        object.__setattr__(self, "bands", bands)
        for name, lo in (("band_half_width", 0.0), ("amplitude", 0.0), ("radius", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > lo:
                raise ValueError(f"{name}: expected a number > {lo}, got {value!r}")
        if not 0.0 < self.radius < 0.4:
            raise ValueError(f"radius: expected a fraction of min(size) in (0, 0.4), got {self.radius!r}")
        for name in ("intensity_cue", "clinical_cue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        if self.texture_norm not in ("volume", "lesion"):
            raise ValueError(f"texture_norm: expected 'volume' or 'lesion', got {self.texture_norm!r}")

    def band_centre(self, rel: float) -> float:
        """Centre frequency (cycles/voxel) of the class at ``rel = c / (C - 1)``."""
        return self.bands[0] + (self.bands[1] - self.bands[0]) * rel


FREQUENCY_ONLY = LesionSpec(intensity_cue=0.0, amplitude=0.06, texture_norm="lesion", clinical_cue=0.0)


def write_synthetic_cohort(
    out: str | os.PathLike,
    task: Literal["spine", "spondylitis"] = "spine",
    cases: int = 24,
    seed: int = 0,
    size: int | Sequence[int] = (32, 32, 32),
    folds: int = 5,
    overwrite: bool = False,
    lesion: LesionSpec | None = None,
) -> Path:
    """Write a synthetic cohort (module docstring) and return ``Path(out)``.

    Args:
        out: the cohort folder (created).
        task: ``"spine"``, ``"spondylitis"`` or ``"texture"`` (module docstring).
        cases: number of cases (≥ 5, so that every split has a case).
        seed: the seed; equal seeds write identical cohorts.
        size: the reference (t1) grid ``(D, H, W)`` at 1 mm; each axis ≥ 16.
        folds: the number of folds of the ``fold`` column (capped by the non-test patients).
        overwrite: replace an existing cohort in ``out`` (else ``FileExistsError``).
        lesion: the lesion's cues and size (default ``LesionSpec()``; :data:`FREQUENCY_ONLY`).

    Example::

        >>> root = write_synthetic_cohort(tmp_path / "spondy", task="spondylitis", cases=8)  # doctest: +SKIP
        >>> sorted(p.name for p in (root / "case000").iterdir())                            # doctest: +SKIP
        ['roi.nii.gz', 't1.nii.gz', 't2fs.nii.gz']
    """
    size, lesion = _check_arguments(task, cases, size, folds, lesion)
    root = Path(out)
    if (root / CASES_CSV).exists() and not overwrite:
        raise FileExistsError(f"out: {root} already holds a cohort ({CASES_CSV}); pass overwrite=True")
    root.mkdir(parents=True, exist_ok=True)

    classes, sequences = TASKS[task]["classes"], TASKS[task]["sequences"]
    table = _plan_table(cases, len(classes), folds, np.random.default_rng([seed, 2**31]))
    grids = _sequence_grids(size, sequences)
    rows, lesions = [], {}
    for n, (patient, label_idx, split, fold) in enumerate(table):
        rng = np.random.default_rng([seed, n])
        case_id = f"case{n:03d}"
        folder = root / case_id
        folder.mkdir(exist_ok=True)
        centre_dhw, radius = _write_case(folder, rng, size, sequences, grids, label_idx, len(classes), lesion)
        centre_world = nib.affines.apply_affine(grids["t1"][0], centre_dhw[::-1])
        lesions[case_id] = {
            "centre_world_mm": [round(float(v), 4) for v in centre_world],
            "centre_dhw": [round(float(v), 4) for v in centre_dhw],
            "radius_mm": round(float(radius), 4),
        }
        clinical = _clinical_row(rng, label_idx, len(classes), lesion.clinical_cue)
        rows.append(
            [case_id, classes[label_idx], split, f"p{patient:03d}", "" if fold is None else str(fold), *clinical]
        )

    _write_tables(root, rows, {"task": task, "seed": seed, "size": list(size), "lesions": lesions})
    return root


def lesion_centres(root: str | os.PathLike, space: Literal["world", "dhw"] = "world") -> dict[str, np.ndarray]:
    """``{case_id: centre}`` of a synthetic cohort's lesions, from its ``lesions.json``.

    Args:
        root: the cohort folder.
        space: ``"world"`` (x, y, z in mm; see ``LoadedCase.world_to_model``) or ``"dhw"`` (t1 grid voxels).
    """
    if space not in ("world", "dhw"):
        raise ValueError(f"space: expected 'world' or 'dhw', got {space!r}")
    with open(Path(root) / LESIONS_JSON) as f:
        info = json.load(f)["lesions"]
    key = "centre_world_mm" if space == "world" else "centre_dhw"
    return {cid: np.asarray(v[key], dtype=np.float64) for cid, v in info.items()}


def lesion_radii(root: str | os.PathLike) -> dict[str, float]:
    """The lesion radius of every case of a synthetic cohort in mm (= voxels of the 1 mm ``t1`` grid).

    Example::

        >>> radii = lesion_radii(root)                  # doctest: +SKIP
        >>> 0.85 * 0.18 * 32 <= radii["case000"] <= 1.15 * 0.18 * 32  # doctest: +SKIP
        True
    """
    with open(Path(root) / LESIONS_JSON) as f:
        info = json.load(f)["lesions"]
    return {cid: float(v["radius_mm"]) for cid, v in info.items()}


def _check_arguments(
    task: str, cases: int, size: int | Sequence[int], folds: int, lesion: LesionSpec | None
) -> tuple[tuple[int, int, int], LesionSpec]:
    """The checked arguments of :func:`write_synthetic_cohort`: ``size`` as a triple and the lesion spec."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, got {task!r}")
    if not isinstance(cases, int) or cases < 5:
        raise ValueError(f"cases: expected an int >= 5 (one per split at least), got {cases!r}")
    size = to_3tuple_int(size, "size")
    for axis, n in zip("DHW", size):
        if n < 16:
            raise ValueError(f"size: expected at least 16 voxels on axis {axis}, got {n}")
    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds: expected an int >= 2, got {folds!r}")
    lesion = LesionSpec() if lesion is None else lesion
    if not isinstance(lesion, LesionSpec):
        raise TypeError(f"lesion: expected a LesionSpec or None, got {type(lesion).__name__}")
    largest = ((min(size) - 1) / 2 - 2) / (1.15 * min(size))  # the ball (radius up to 1.15x) + 2 voxels fits
    if lesion.radius > largest:
        raise ValueError(f"lesion.radius: expected at most {largest:.3f} for size {size}, got {lesion.radius}")
    return size, lesion


def _write_tables(root: Path, rows: list[list[str]], lesions: dict) -> None:
    """``cases.csv`` (one row per case) and ``lesions.json``."""
    with open(root / CASES_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "label", "split", "patient_id", "fold", *CLINICAL_COLUMNS])
        writer.writerows(rows)
    with open(root / LESIONS_JSON, "w") as f:
        json.dump(lesions, f, indent=1)


def _plan_table(cases: int, num_classes: int, folds: int, rng: np.random.Generator) -> list[tuple]:
    """``(patient, label, split, fold)`` per case: paired patients, stratified splits and folds."""
    sizes = []
    remaining = cases
    while remaining:
        two = remaining >= 2 and rng.random() < 0.2
        sizes.append(2 if two else 1)
        remaining -= sizes[-1]
    labels = rng.permutation(np.arange(len(sizes)) % num_classes)
    order = sorted(range(len(sizes)), key=lambda p: (labels[p], rng.random()))
    pattern = ("train", "train", "train", "val", "test")
    split_of = {p: pattern[i % len(pattern)] for i, p in enumerate(order)}
    non_test = [p for p in order if split_of[p] != "test"]
    k = min(folds, len(non_test))
    fold_of = {p: i % k for i, p in enumerate(non_test)}
    table = []
    for p, n in enumerate(sizes):
        table += [(p, int(labels[p]), split_of[p], fold_of.get(p))] * n
    return table


def _sequence_grids(size: tuple[int, int, int], sequences: Sequence[str]) -> dict[str, tuple[np.ndarray, tuple]]:
    """``{name: (affine, shape)}``: t1 and pd RAS 1 mm; t2 LPS shifted; t2fs 1.25 mm."""
    d, h, w = size
    centre = np.array([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2])
    t1 = np.eye(4)
    t1[:3, 3] = -centre
    grids = {"t1": (t1, (w, h, d))}
    if "pd" in sequences:
        grids["pd"] = grids["t1"]
    if "t2" in sequences:
        lps = np.diag([-1.0, -1.0, 1.0, 1.0])
        lps[:3, 3] = [centre[0] + 0.3, centre[1] - 0.2, -centre[2] + 0.25]
        grids["t2"] = (lps, (w, h, d))
    if "t2fs" in sequences:
        step = 1.25
        shape = tuple(int(np.ceil(n / step)) + 1 for n in (w, h, d))
        aff = np.diag([step, step, step, 1.0])
        aff[:3, 3] = [-(n - 1) * step / 2 for n in shape]
        grids["t2fs"] = (aff, shape)
    return grids


def _band_texture(rng: np.random.Generator, size: tuple[int, int, int], band: float, half_width: float) -> np.ndarray:
    """Unit-variance noise keeping the radial spatial frequencies ``|f| ∈ band ± half_width``."""
    noise = rng.standard_normal(size)
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in size], indexing="ij")
    radius = np.sqrt(sum(f**2 for f in freqs))
    keep = np.abs(radius - band) <= half_width
    tex = np.fft.ifftn(np.fft.fftn(noise) * keep).real
    return tex / (tex.std() + 1e-12)


def _write_case(
    folder: Path,
    rng: np.random.Generator,
    size: tuple[int, int, int],
    sequences: Sequence[str],
    grids: dict,
    label: int,
    num_classes: int,
    spec: LesionSpec,
) -> tuple[np.ndarray, float]:
    """Write one case's sequences and ROI; return the lesion centre ``(d, h, w)`` and radius."""
    shape = np.array(size)
    radius = spec.radius * shape.min() * rng.uniform(0.85, 1.15)
    margin = radius + 2
    centre = np.array([rng.uniform(margin, n - 1 - margin) for n in shape])
    idx = np.indices(size, dtype=np.float64)
    dist = np.sqrt(sum((idx[a] - centre[a]) ** 2 for a in range(3)))
    lesion = 1.0 / (1.0 + np.exp((dist - radius) / 0.7))
    col_r = np.sqrt((idx[1] - (shape[1] - 1) / 2) ** 2 + (idx[2] - (shape[2] - 1) / 2) ** 2)
    column = 1.0 / (1.0 + np.exp((col_r - shape[1:].min() / 4) / 1.0))
    smooth = ndimage.gaussian_filter(rng.standard_normal(size), 3.0)
    smooth /= smooth.std() + 1e-12
    rel = label / max(num_classes - 1, 1)
    texture = _band_texture(rng, size, spec.band_centre(rel), spec.band_half_width)
    if spec.texture_norm == "lesion":  # lesion * texture: mean 0, variance 1 inside the lesion's radius (the ROI)
        inside, weight = texture[dist <= radius], lesion[dist <= radius]
        texture = texture - (weight * inside).mean() / weight.mean()
        texture /= (weight * texture[dist <= radius]).std() + 1e-12

    t1_affine = grids["t1"][0]
    for name in sequences:
        background, col, sign = _ANATOMY[name]
        level = _LESION_LEVEL + sign * spec.intensity_cue * (rel - 0.5) + spec.amplitude * texture
        anatomy = background + (col - background) * column + 0.1 * (col - background) * smooth
        # the lesion replaces the tissue it sits in: its intensity does not depend on where it is
        phantom = (1.0 - lesion) * anatomy + lesion * (background + (col - background) * level)
        phantom += 0.03 * rng.standard_normal(size)
        phantom = 1000.0 * (phantom + 1.0)  # positive, scanner-like units
        affine, src_shape = grids[name]
        if name in ("t1", "pd"):
            data = phantom.transpose(2, 1, 0)  # (D, H, W) -> array (i, j, k) = (x, y, z)
        else:
            vox = np.indices(src_shape, dtype=np.float64).reshape(3, -1)
            to_t1 = np.linalg.inv(t1_affine) @ affine
            xyz = to_t1[:3, :3] @ vox + to_t1[:3, 3:4]
            data = ndimage.map_coordinates(phantom, xyz[::-1], order=1, mode="nearest").reshape(src_shape)
        _save(folder / f"{name}.nii.gz", data, affine, integer=name == "t1")
    roi = (dist <= radius).astype(np.uint8).transpose(2, 1, 0)
    _save(folder / "roi.nii.gz", roi, t1_affine, integer=False)
    return centre, radius


def _save(path: Path, data: np.ndarray, affine: np.ndarray, integer: bool) -> None:
    """Save as NIfTI-1: int16 with ``scl_slope`` when ``integer``, else the array's dtype (float32)."""
    if integer:
        img = nib.Nifti1Image(data.astype(np.float32), affine)
        img.set_data_dtype(np.int16)  # nibabel picks scl_slope/scl_inter on save
    else:
        arr = data if data.dtype == np.uint8 else data.astype(np.float32)
        img = nib.Nifti1Image(arr, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    nib.save(img, path)


def _clinical_row(rng: np.random.Generator, label: int, num_classes: int, cue: float) -> list[str]:
    """Eight clinical values as strings (empty = missing), weakly correlated with the class (times ``cue``)."""
    rel = cue * label / max(num_classes - 1, 1)
    values = [
        rng.normal(58, 12),  # age
        float(rng.random() < 0.5),  # sex
        rng.normal(20 + 15 * rel, 25),  # crp
        rng.normal(30 + 10 * rel, 20),  # esr
        rng.normal(7.5 + 1.0 * rel, 2.5),  # wbc
        rng.normal(36.9 + 0.4 * rel, 0.6),  # temperature
        rng.gamma(3.0, 3.0),  # symptom_weeks
        rng.normal(24, 3.5),  # bmi
    ]
    missing = rng.random(len(values)) < 0.1
    missing[0] = False
    return ["" if m else f"{v:.3f}" for v, m in zip(values, missing)]
