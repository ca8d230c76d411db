"""NIfTI loading onto the model grid, and the way back (DESIGN.md §11).

:func:`load_case` puts the sequences of one case (each a NIfTI file on its own grid) and an optional ROI on one
*model grid*:

1. Read with nibabel (scaling applied); a 4-D file needs ``volume_index``; non-finite voxels follow ``nan_policy``.
2. Orientation: the reference sequence's RAS canonical grid (as ``nibabel.as_closest_canonical``, obliquity kept);
   model axes ``(D, H, W) = (k, j, i)``: inferior→superior, posterior→anterior, left→right.
3. Spacing ``s`` (1 mm isotropic by default *(ours)*): ``n = round(N·z / s)`` voxels per axis, centred on the FOV.
4. Crop: ``input_size`` voxels centred on the ROI centroid (``crop="roi"``) or the FOV centre; outside the FOV,
   padded with the volume minimum after clipping.
5. Resampling through world coordinates, ``source_voxel = A_source⁻¹ · A_model · model_voxel`` (trilinear by
   default, the ROI nearest neighbour), for the crop's voxels only.
6. Intensity: clip to ``clip_percentiles`` (0.5, 99.5), z-score; both with the statistics of the *whole source
   image* *(ours: independent of where the crop falls)*; a constant image gets std 1.
7. Coverage: every sequence and the ROI must cover ``min_coverage`` (0.9 *(ours)*) of the model voxels inside the
   reference FOV, else a :class:`DataError` naming both files.

The way back: :meth:`LoadedCase.to_source_grid` puts a ``(D, H, W)`` map (e.g. Grad-CAM) on a source file's grid.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple, get_args

import nibabel as nib
import numpy as np
from nibabel import orientations
from scipy import ndimage

from spectral3d._checks import to_3tuple_int
from spectral3d.data.errors import DataError

__all__ = [
    "NAN_POLICIES",
    "LoadedCase",
    "PreprocessConfig",
    "SourceGrid",
    "canonical_grid",
    "load_case",
    "read_volume",
]

NanPolicy = Literal["error", "min", "zero"]
NAN_POLICIES = get_args(NanPolicy)  # what ``nan_policy`` (``--nan-policy``) accepts


@dataclass(frozen=True)
class PreprocessConfig:
    """Every parameter of :func:`load_case` (module docstring); JSON-serialisable via :meth:`to_dict`.

    Args:
        input_size: the crop ``(D, H, W)`` in model voxels (an int: a cube); ``None`` keeps the whole FOV.
        spacing: model voxel size in mm, a number or a ``(D, H, W)`` triple; ``None`` keeps the reference's.
        reference: the sequence whose FOV and orientation define the grid; ``None``: the first.
        crop: ``"roi"`` centres on the ROI centroid when there is a ROI; ``"centre"`` on the FOV centre.
        clip_percentiles: ``(low, high)`` percentiles for clipping, or ``None`` for no clipping.
        zscore: subtract the mean and divide by the standard deviation of each sequence.
        order: spline order of the intensity resampling (0 nearest, 1 trilinear, 3 cubic).
        volume_index: which volume of a 4-D file to use; ``None`` rejects 4-D files.
        nan_policy: non-finite voxels: ``"error"`` raises, ``"min"``/``"zero"`` replace them by the minimum / 0.
        min_coverage: fraction of the model voxels inside the reference FOV every other file must cover.

    Example::

        >>> cfg = PreprocessConfig(input_size=32, spacing=1.5)
        >>> cfg.input_size, cfg.spacing
        ((32, 32, 32), (1.5, 1.5, 1.5))
        >>> PreprocessConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    input_size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
    reference: str | None = None
    crop: Literal["roi", "centre"] = "roi"
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5)
    zscore: bool = True
    order: int = 1
    volume_index: int | None = None
    nan_policy: NanPolicy = "error"
    min_coverage: float = 0.9

    def __post_init__(self) -> None:
        if self.input_size is not None:
            object.__setattr__(self, "input_size", to_3tuple_int(self.input_size, "input_size"))
        if self.spacing is not None:
            sp = self.spacing
            sp = (sp, sp, sp) if isinstance(sp, (int, float)) and not isinstance(sp, bool) else tuple(sp)
            if len(sp) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in sp):
                raise ValueError(
                    f"spacing: expected a positive number or a (D, H, W) triple in mm, got {self.spacing!r}"
                )
            object.__setattr__(self, "spacing", tuple(float(v) for v in sp))
        if self.crop not in ("roi", "centre"):
            raise ValueError(f"crop: expected 'roi' or 'centre', got {self.crop!r}")
        if self.clip_percentiles is not None:
            lo, hi = (float(v) for v in self.clip_percentiles)
            if not 0.0 <= lo < hi <= 100.0:
                raise ValueError(f"clip_percentiles: expected 0 <= low < high <= 100, got {self.clip_percentiles!r}")
            object.__setattr__(self, "clip_percentiles", (lo, hi))
        if not (isinstance(self.order, int) and 0 <= self.order <= 5):
            raise ValueError(f"order: expected a spline order 0..5, got {self.order!r}")
        if self.volume_index is not None and (not isinstance(self.volume_index, int) or self.volume_index < 0):
            raise ValueError(f"volume_index: expected a non-negative int or None, got {self.volume_index!r}")
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {NAN_POLICIES}, got {self.nan_policy!r}")
        if not 0.0 <= float(self.min_coverage) <= 1.0:
            raise ValueError(f"min_coverage: expected a fraction in [0, 1], got {self.min_coverage!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists); :meth:`from_dict` inverts it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessConfig:
        """The config stored by :meth:`to_dict` (unknown keys raise ``TypeError``)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class SourceGrid:
    """One original image file, where a model-grid map goes back to (shape and affine as stored)."""

    path: str
    shape: tuple[int, int, int]  # (I, J, K), not reoriented
    affine: np.ndarray  # voxel -> world (RAS mm)
    model_to_source: np.ndarray  # 4x4: model voxel (d, h, w, 1) -> file voxel (i, j, k, 1)


@dataclass
class LoadedCase:
    """One case on the model grid, with the transforms back to every source file."""

    case_id: str
    sequences: tuple[str, ...]  # in the order of volume's first axis
    volume: np.ndarray  # (S, D, H, W) float32, clipped and z-scored per sequence
    roi: np.ndarray | None  # (D, H, W) bool
    model_affine: np.ndarray  # 4x4: model voxel (d, h, w) -> world (RAS mm)
    sources: dict[str, SourceGrid]  # per sequence
    roi_source: SourceGrid | None = None
    config: PreprocessConfig = field(default_factory=PreprocessConfig)

    def world_to_model(self, points_xyz: np.ndarray) -> np.ndarray:
        """Model-voxel coordinates ``(..., 3)`` as ``(d, h, w)`` of world points ``(..., 3)`` in mm."""
        pts = np.asarray(points_xyz, dtype=np.float64)
        return nib.affines.apply_affine(np.linalg.inv(self.model_affine), pts)

    def to_source_grid(self, map_dhw: np.ndarray, sequence: str, order: int = 1, fill: float = 0.0) -> np.ndarray:
        """Resample a model-grid map onto the original grid of ``sequence``'s file.

        Args:
            map_dhw: ``(D, H, W)`` array (or tensor) on the model grid.
            sequence: a name in ``sequences`` (or ``"roi"`` for the ROI file's grid).
            order: spline order (1 = trilinear; 0 for label maps).
            fill: value for source voxels outside the model grid.

        Returns:
            float32, the source file's stored shape; :meth:`to_source_nifti` adds its affine.

        Example::

            >>> cam = np.random.rand(*case.volume.shape[1:])          # doctest: +SKIP
            >>> case.to_source_grid(cam, "t1").shape == case.sources["t1"].shape  # doctest: +SKIP
            True
        """
        grid = self._grid(sequence)
        arr = np.asarray(map_dhw.detach().cpu() if hasattr(map_dhw, "detach") else map_dhw, dtype=np.float64)
        expected = self.volume.shape[1:]
        if arr.shape != expected:
            raise ValueError(f"map_dhw: expected a model-grid map of shape (D, H, W) = {expected}, got {arr.shape}")
        coords = _grid_coordinates(np.linalg.inv(grid.model_to_source), grid.shape)
        out = ndimage.map_coordinates(arr, coords, order=order, mode="constant", cval=fill, prefilter=order > 1)
        return out.astype(np.float32)

    def to_source_nifti(self, map_dhw: np.ndarray, sequence: str, order: int = 1) -> nib.Nifti1Image:
        """:meth:`to_source_grid` wrapped as a NIfTI image with the source file's affine."""
        return nib.Nifti1Image(self.to_source_grid(map_dhw, sequence, order), self._grid(sequence).affine)

    def _grid(self, sequence: str) -> SourceGrid:
        if sequence == "roi" and self.roi_source is not None:
            return self.roi_source
        if sequence not in self.sources:
            raise KeyError(f"sequence: {sequence!r} is not one of {self.sequences} of case {self.case_id!r}")
        return self.sources[sequence]


def read_volume(
    path: str | os.PathLike,
    *,
    case_id: str = "",
    volume_index: int | None = None,
    nan_policy: NanPolicy = "error",
) -> tuple[np.ndarray, np.ndarray]:
    """``(data, affine)`` of a 3-D NIfTI volume: float32 in the file's voxel order, float64 4×4; or :class:`DataError`.

    Args:
        path: a ``.nii`` / ``.nii.gz`` file (any image nibabel reads with an affine).
        case_id: named in errors.
        volume_index: volume of a 4-D file; ``None`` rejects files with more than one volume.
        nan_policy: see :class:`PreprocessConfig`.

    Example::

        >>> from nibabel.testing import data_path
        >>> data, affine = read_volume(os.path.join(data_path, "anatomical.nii"))
        >>> data.shape, data.dtype
        ((33, 41, 25), dtype('float32'))
    """
    where = {"case_id": case_id, "paths": (path,)}
    try:
        img = nib.load(os.fspath(path))
    except FileNotFoundError as e:
        raise DataError("file not found", **where) from e
    except Exception as e:
        raise DataError(f"not a readable NIfTI file ({_one_line(e)})", **where) from e
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3:
        raise DataError(f"expected a 3-D volume, got a {len(shape)}-D image of shape {shape}", **where)
    if 0 in shape:
        raise DataError(f"empty image: shape {shape} has no voxel", **where)
    extra = shape[3:]
    try:
        if all(s == 1 for s in extra):
            data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape[:3])
        elif volume_index is None:
            raise DataError(
                f"4-D image of shape {shape} ({extra[0]} volumes); pass volume_index (--volume-index) to choose one",
                **where,
            )
        elif len(shape) > 4 or volume_index >= shape[3]:
            raise DataError(
                f"volume_index {volume_index} out of range for an image of shape {shape} "
                f"(volumes 0..{shape[3] - 1} on axis 3)",
                **where,
            )
        else:
            data = np.asarray(img.dataobj[..., volume_index], dtype=np.float32)
    except DataError:
        raise
    except Exception as e:  # truncated or corrupt payload (EOFError, zlib.error, OSError, ...)
        raise DataError(f"cannot read the voxel data, corrupt or truncated ({_one_line(e)})", **where) from e
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"invalid (singular or non-finite) affine:\n{affine}", **where)
    bad = ~np.isfinite(data)
    if bad.any():
        if nan_policy == "error":
            raise DataError(
                f"{int(bad.sum())} NaN/Inf voxels (set nan_policy='min' or 'zero' to replace them)", **where
            )
        finite = data[~bad]
        data = data.copy()
        data[bad] = (finite.min() if finite.size else 0.0) if nan_policy == "min" else 0.0
    return data, affine


def _one_line(err: Exception) -> str:
    """``Type: message`` of a reader's exception on one line (nibabel's messages may span several)."""
    return " ".join(f"{type(err).__name__}: {err}".split())


def canonical_grid(affine: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The RAS-canonical affine and shape of an image, as ``nibabel.as_closest_canonical`` gives (header only).

    Example::

        >>> aff, shp = canonical_grid(np.diag([-2.0, 2.0, 2.0, 1.0]), (10, 20, 30))
        >>> shp, float(aff[0, 0]), float(aff[0, 3])
        ((10, 20, 30), 2.0, -18.0)
    """
    ornt = orientations.io_orientation(affine)
    shape3 = tuple(int(s) for s in shape[:3])
    can_affine = affine @ orientations.inv_ornt_aff(ornt, shape3)
    can_shape = tuple(shape3[int(ax)] for ax in np.argsort(ornt[:, 0]))
    return can_affine, can_shape  # type: ignore[return-value]


def load_case(
    sequences: Mapping[str, str | os.PathLike],
    roi: str | os.PathLike | None = None,
    config: PreprocessConfig | None = None,
    case_id: str = "",
) -> LoadedCase:
    """Load the sequences of one case onto the model grid (module docstring, steps 1–7): ``(S, D, H, W)`` float32.

    Args:
        sequences: ``{name: path}`` in channel order, e.g. ``{"t1": ".../t1.nii.gz", "t2": ...}``.
        roi: optional ROI mask file (any grid; non-zero = inside).
        config: the :class:`PreprocessConfig` (default: 1 mm, no crop, clip 0.5/99.5, z-score).
        case_id: named in errors and stored in the result.

    Raises:
        DataError: a bad file, an empty ROI or grids that do not cover the model grid, naming the case and files.

    Example::

        >>> from nibabel.testing import data_path
        >>> case = load_case({"anat": os.path.join(data_path, "anatomical.nii")},
        ...                  config=PreprocessConfig(input_size=(32, 48, 48), spacing=2.0))
        >>> case.volume.shape, case.volume.dtype
        ((1, 32, 48, 48), dtype('float32'))
    """
    cfg = config if config is not None else PreprocessConfig()
    if not sequences:
        raise ValueError("sequences: expected at least one {name: path} entry, got none")
    names = tuple(sequences)
    ref_name = cfg.reference if cfg.reference is not None else names[0]
    if ref_name not in sequences:
        raise ValueError(f"config.reference: {ref_name!r} is not one of the sequences {names}")

    loaded = {
        name: read_volume(p, case_id=case_id, volume_index=cfg.volume_index, nan_policy=cfg.nan_policy)
        for name, p in sequences.items()
    }
    roi_data = roi_affine = roi_centroid = None
    if roi is not None:
        roi_data, roi_affine = read_volume(roi, case_id=case_id, volume_index=cfg.volume_index, nan_policy="zero")
        if not np.any(roi_data != 0):
            raise DataError("the ROI mask is empty (no non-zero voxel)", case_id, (roi,))
        if cfg.crop == "roi":
            roi_centroid = nib.affines.apply_affine(roi_affine, np.argwhere(roi_data != 0).mean(axis=0))
    ref_data, ref_affine = loaded[ref_name]
    model_affine, size = _model_affine(ref_data.shape, ref_affine, cfg, roi_centroid)

    model_idx = _grid_coordinates(np.eye(4), size)  # (3, D, H, W) model voxel indices
    inside = _inside(_apply(np.linalg.inv(ref_affine) @ model_affine, model_idx), ref_data.shape)
    grid = _ModelGrid(
        model_affine, model_idx, ref_name, sequences[ref_name], ref_affine, ref_data.shape, inside, int(inside.sum())
    )
    if grid.ref_count == 0:
        raise DataError(
            "the crop centred on the ROI lies outside the reference field of view", case_id, (roi, sequences[ref_name])
        )
    channels, sources = [], {}
    for name in names:
        channel, sources[name] = _resample_sequence(name, sequences[name], *loaded[name], grid, cfg, case_id)
        channels.append(channel)
    roi_model = roi_source = None
    if roi_data is not None:
        roi_model, roi_source = _resample_roi(roi, roi_data, roi_affine, grid, cfg, case_id)

    return LoadedCase(
        case_id=case_id,
        sequences=names,
        volume=np.stack(channels),
        roi=roi_model,
        model_affine=model_affine,
        sources=sources,
        roi_source=roi_source,
        config=cfg,
    )


class _ModelGrid(NamedTuple):
    """The model grid and the model voxels inside the reference sequence's field of view."""

    affine: np.ndarray  # 4x4: model voxel (d, h, w) -> world
    idx: np.ndarray  # (3, D, H, W) model voxel indices
    ref_name: str
    ref_path: str | os.PathLike
    ref_affine: np.ndarray
    ref_shape: tuple[int, ...]
    ref_inside: np.ndarray  # (D, H, W) bool
    ref_count: int

    def locate(self, affine: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """``(model_to_source, coords, inside, coverage of the reference FOV)`` of a source grid."""
        m2s = np.linalg.inv(affine) @ self.affine
        coords = _apply(m2s, self.idx)
        inside = _inside(coords, shape)
        return m2s, coords, inside, float((inside & self.ref_inside).sum()) / self.ref_count


def _model_affine(
    ref_shape: Sequence[int], ref_affine: np.ndarray, cfg: PreprocessConfig, roi_centroid: np.ndarray | None
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Steps 2–4: model voxel → world affine and grid size ``(D, H, W)``, the crop centred on ``roi_centroid`` (mm)."""
    can_affine, can_shape = canonical_grid(ref_affine, ref_shape)
    zooms = np.linalg.norm(can_affine[:3, :3], axis=0)  # canonical (i, j, k) voxel sizes
    # model axis (D, H, W) <- canonical axis (k, j, i)
    can_axis_of = (2, 1, 0)
    spacing = cfg.spacing if cfg.spacing is not None else tuple(float(zooms[a]) for a in can_axis_of)
    full = tuple(max(1, round(can_shape[a] * zooms[a] / s)) for a, s in zip(can_axis_of, spacing))
    size = cfg.input_size if cfg.input_size is not None else full

    # model voxel (d, h, w) of the uncropped grid -> canonical voxel (i, j, k): centred on the FOV
    full_to_can = np.zeros((4, 4))
    full_to_can[3, 3] = 1.0
    for m, a in enumerate(can_axis_of):
        step = spacing[m] / zooms[a]
        full_to_can[a, m] = step
        full_to_can[a, 3] = (can_shape[a] - 1) / 2 - (full[m] - 1) / 2 * step
    full_to_world = can_affine @ full_to_can

    if roi_centroid is not None:
        centre = nib.affines.apply_affine(np.linalg.inv(full_to_world), roi_centroid)
    else:
        centre = (np.asarray(full, dtype=np.float64) - 1) / 2
    offset = np.floor(centre - (np.asarray(size) - 1) / 2 + 0.5)  # nearest, halves up
    crop_to_full = np.eye(4)
    crop_to_full[:3, 3] = offset
    return full_to_world @ crop_to_full, size


def _resample_sequence(
    name: str,
    path: str | os.PathLike,
    data: np.ndarray,
    affine: np.ndarray,
    grid: _ModelGrid,
    cfg: PreprocessConfig,
    case_id: str,
) -> tuple[np.ndarray, SourceGrid]:
    """Steps 5–7 for one sequence: its ``(D, H, W)`` float32 channel and its :class:`SourceGrid`."""
    m2s, coords, inside, coverage = grid.locate(affine, data.shape)
    if name != grid.ref_name and coverage < cfg.min_coverage:
        raise DataError(
            f"grids disagree: {name!r} covers {coverage:.0%} of the model grid inside the reference "
            f"{grid.ref_name!r} field of view (min_coverage {cfg.min_coverage:.0%}); world bounding boxes (mm) "
            f"{grid.ref_name}: {_bbox(grid.ref_affine, grid.ref_shape)}, {name}: {_bbox(affine, data.shape)}",
            case_id,
            (path, grid.ref_path),
        )
    lo, hi, mean, std = _intensity_stats(data, cfg)
    values = ndimage.map_coordinates(data, coords, order=cfg.order, mode="nearest", prefilter=cfg.order > 1)
    values = np.clip(values, lo, hi)
    values[~inside] = lo
    channel = ((values - mean) / std).astype(np.float32)
    return channel, SourceGrid(os.fspath(path), tuple(data.shape), affine, m2s)


def _resample_roi(
    roi: str | os.PathLike,
    roi_data: np.ndarray,
    roi_affine: np.ndarray,
    grid: _ModelGrid,
    cfg: PreprocessConfig,
    case_id: str,
) -> tuple[np.ndarray, SourceGrid]:
    """The ROI on the model grid (nearest neighbour, ``(D, H, W)`` bool) and its :class:`SourceGrid`."""
    m2s, coords, inside, coverage = grid.locate(roi_affine, roi_data.shape)
    if coverage < cfg.min_coverage:
        raise DataError(
            f"grids disagree: the ROI covers {coverage:.0%} of the model grid inside the reference "
            f"{grid.ref_name!r} field of view (min_coverage {cfg.min_coverage:.0%})",
            case_id,
            (roi, grid.ref_path),
        )
    mask = ndimage.map_coordinates((roi_data != 0).astype(np.float32), coords, order=0, mode="nearest")
    return (mask > 0.5) & inside, SourceGrid(os.fspath(roi), tuple(roi_data.shape), roi_affine, m2s)


def _grid_coordinates(to_target: np.ndarray, target_shape: Sequence[int]) -> np.ndarray:
    """``(3, *target_shape)`` input-grid coordinates of every target voxel (``to_target``: target → input, 4×4)."""
    idx = np.indices(tuple(target_shape), dtype=np.float64)
    return _apply(to_target, idx)


def _apply(matrix: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Apply a 4×4 affine to ``(3, ...)`` coordinates."""
    flat = coords.reshape(3, -1)
    out = matrix[:3, :3] @ flat + matrix[:3, 3:4]
    return out.reshape(coords.shape)


def _inside(coords: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Which points of ``(3, ...)`` voxel coordinates fall inside a grid of ``shape`` (voxel extents)."""
    ok = np.ones(coords.shape[1:], dtype=bool)
    for ax, n in enumerate(shape[:3]):
        ok &= (coords[ax] >= -0.5) & (coords[ax] <= n - 0.5)
    return ok


def _bbox(affine: np.ndarray, shape: Sequence[int]) -> str:
    """World bounding box of a grid's field of view (voxel edges), as ``[x0..x1, y0..y1, z0..z1]``."""
    corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in shape[:3]], indexing="ij")).reshape(3, -1).T
    world = nib.affines.apply_affine(affine, corners)
    lo, hi = world.min(axis=0), world.max(axis=0)
    return "[" + ", ".join(f"{a:.1f}..{b:.1f}" for a, b in zip(lo, hi)) + "]"


def _intensity_stats(data: np.ndarray, cfg: PreprocessConfig) -> tuple[float, float, float, float]:
    """``(clip_low, clip_high, mean, std)`` of one source image under ``cfg``."""
    if cfg.clip_percentiles is not None:
        lo, hi = (float(v) for v in np.percentile(data, cfg.clip_percentiles))
    else:
        lo, hi = float(data.min()), float(data.max())
    if not cfg.zscore:
        return lo, hi, 0.0, 1.0
    clipped = np.clip(data, lo, hi, dtype=np.float64)
    mean, std = float(clipped.mean()), float(clipped.std())
    return lo, hi, mean, (std if std > 0 else 1.0)
