"""A PyTorch ``Dataset`` over the cases of a :class:`~spectral3d.data.cohort.Cohort` (DESIGN.md §11).

Item ``i`` is a :class:`Sample`; :func:`collate` stacks samples into a :class:`Batch`. The augmentation of item ``i``
in epoch ``e`` is seeded by ``augmentation_seed(seed, e, i)`` (call :meth:`MRIDataset.set_epoch` each epoch), so it
does not depend on the DataLoader's workers. Give the validation and test datasets the training ``tabular_stats``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from spectral3d.data.cache import VolumeCache
from spectral3d.data.cohort import CaseRecord, Cohort
from spectral3d.data.nifti import LoadedCase, PreprocessConfig, load_case
from spectral3d.data.transforms import AugmentConfig, augment_volume, augmentation_seed

__all__ = ["Batch", "MRIDataset", "Sample", "TabularStats", "collate"]


class Sample(NamedTuple):
    """One item of :class:`MRIDataset`."""

    volume: torch.Tensor  # (S, D, H, W) float32, augmented when the dataset augments
    tabular: torch.Tensor  # (F,) float32, (x - mean) / std with the training TabularStats, NaN = missing
    label: torch.Tensor  # () int64, the class index in cohort.classes
    case_id: str


class Batch(NamedTuple):
    """Stacked samples (:func:`collate`)."""

    volume: torch.Tensor  # (N, S, D, H, W) float32
    tabular: torch.Tensor  # (N, F) float32
    label: torch.Tensor  # (N,) int64
    case_ids: list[str]


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack :class:`Sample` s into a :class:`Batch`.

    Example::

        >>> s = Sample(torch.randn(2, 4, 4, 4), torch.randn(3), torch.tensor(1), "c0")
        >>> b = collate([s, s])
        >>> b.volume.shape, b.tabular.shape, b.label.tolist(), b.case_ids
        (torch.Size([2, 2, 4, 4, 4]), torch.Size([2, 3]), [1, 1], ['c0', 'c0'])
    """
    if not samples:
        raise ValueError("samples: expected at least one sample, got none")
    return Batch(
        volume=torch.stack([s.volume for s in samples]),
        tabular=torch.stack([s.tabular for s in samples]),
        label=torch.stack([s.label for s in samples]),
        case_ids=[s.case_id for s in samples],
    )


@dataclass(frozen=True)
class TabularStats:
    """Per-column mean and population std (``ddof=0``) of the clinical columns, NaN ignored.

    *(ours)* A column with no value gets mean 0 and std 1; a constant column gets std 1.

    Example::

        >>> stats = TabularStats.fit([[1.0, float("nan")], [3.0, 4.0]], columns=("crp", "esr"))
        >>> stats.mean, stats.std
        ((2.0, 4.0), (1.0, 1.0))
        >>> stats.transform([5.0, float("nan")]).tolist()
        [3.0, nan]
    """

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not len(self.columns) == len(self.mean) == len(self.std):
            raise ValueError(
                f"TabularStats: columns, mean and std must have one entry per column, got lengths "
                f"{len(self.columns)}, {len(self.mean)}, {len(self.std)}"
            )

    @classmethod
    def fit(cls, rows: Sequence[Sequence[float]] | Sequence[CaseRecord], columns: Sequence[str]) -> TabularStats:
        """Fit on rows of values, or on :class:`CaseRecord` s (their ``clinical`` values)."""
        columns = tuple(columns)
        values = [r.clinical if isinstance(r, CaseRecord) else tuple(r) for r in rows]
        arr = np.asarray(values, dtype=np.float64).reshape(len(values), len(columns))
        mean, std = [], []
        for col in arr.T:
            col = col[np.isfinite(col)]
            m = float(col.mean()) if col.size else 0.0
            s = float(col.std()) if col.size else 1.0
            mean.append(m)
            std.append(s if s > 0 else 1.0)
        return cls(columns, tuple(mean), tuple(std))

    def transform(self, values: Sequence[float]) -> np.ndarray:
        """``(x - mean) / std`` as float32 ``(F,)``; NaN stays NaN."""
        x = np.asarray(values, dtype=np.float64)
        if x.shape != (len(self.columns),):
            raise ValueError(
                f"values: expected {len(self.columns)} clinical values {self.columns}, got shape {x.shape}"
            )
        return ((x - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form; :meth:`from_dict` inverts it."""
        return {"columns": list(self.columns), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TabularStats:
        """The stats stored by :meth:`to_dict`."""
        return cls(tuple(d["columns"]), tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))


class MRIDataset(Dataset):
    """The cases of a cohort as :class:`Sample` s (module docstring).

    Args:
        cohort: the validated cohort (classes, sequences, clinical columns).
        cases: its cases to serve, as :class:`CaseRecord` s or case ids (e.g. ``cohort.split("train")``).
        preprocess: the :class:`PreprocessConfig` (its ``input_size`` makes cases batchable).
        augment: ``False``, ``True`` (default :class:`AugmentConfig`) or an ``AugmentConfig``.
        tabular_stats: training-split statistics; ``None`` fits them on ``cases``.
        cache_dir: folder of a :class:`~spectral3d.data.cache.VolumeCache`, or ``None``.
        seed: the augmentation seed.

    Example::

        >>> cohort = Cohort.from_folder(root)                                          # doctest: +SKIP
        >>> cfg = PreprocessConfig(input_size=32)
        >>> train = MRIDataset(cohort, cohort.split("train"), cfg, augment=True)       # doctest: +SKIP
        >>> val = MRIDataset(cohort, cohort.split("val"), cfg, tabular_stats=train.tabular_stats)  # doctest: +SKIP
        >>> loader = torch.utils.data.DataLoader(train, batch_size=2, collate_fn=collate)  # doctest: +SKIP
    """

    def __init__(
        self,
        cohort: Cohort,
        cases: Sequence[CaseRecord | str],
        preprocess: PreprocessConfig,
        *,
        augment: bool | AugmentConfig = False,
        tabular_stats: TabularStats | None = None,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(cohort, Cohort):
            raise TypeError(f"cohort: expected a Cohort, got {type(cohort).__name__}")
        if not isinstance(preprocess, PreprocessConfig):
            raise TypeError(f"preprocess: expected a PreprocessConfig, got {type(preprocess).__name__}")
        self.cohort = cohort
        self.cases = [cohort.case(c if isinstance(c, str) else c.case_id) for c in cases]
        if not self.cases:
            raise ValueError("cases: expected at least one case, got none")
        self.preprocess = preprocess
        if augment is True:
            augment = AugmentConfig()
        if augment is not False and not isinstance(augment, AugmentConfig):
            raise TypeError(f"augment: expected a bool or an AugmentConfig, got {type(augment).__name__}")
        self.augment: AugmentConfig | None = augment or None
        if tabular_stats is None:
            tabular_stats = TabularStats.fit(self.cases, cohort.clinical_columns)
        if tuple(tabular_stats.columns) != cohort.clinical_columns:
            raise ValueError(
                f"tabular_stats: columns {tabular_stats.columns} differ from the cohort's clinical columns "
                f"{cohort.clinical_columns}"
            )
        self.tabular_stats = tabular_stats
        self.cache = VolumeCache(cache_dir) if cache_dir is not None else None
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.cases)

    def __repr__(self) -> str:
        return (
            f"MRIDataset(cases={len(self)}, sequences={self.cohort.sequences}, "
            f"input_size={self.preprocess.input_size}, augment={self.augment is not None}, "
            f"cache={self.cache is not None}, epoch={self.epoch})"
        )

    @property
    def labels(self) -> list[int]:
        """Class index of every case, in order (for class weights or samplers)."""
        return [self.cohort.label_index(c) for c in self.cases]

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call once per epoch)."""
        self.epoch = int(epoch)

    def load(self, index: int) -> LoadedCase:
        """The un-augmented :class:`LoadedCase` of item ``index`` (with the way back to source grids)."""
        rec = self.cases[index]
        if self.cache is not None:
            return self.cache.load_case(rec.sequences, rec.roi, self.preprocess, rec.case_id)
        return load_case(rec.sequences, roi=rec.roi, config=self.preprocess, case_id=rec.case_id)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: {index} out of range for a dataset of {len(self)} cases")
        index = index % len(self)
        rec = self.cases[index]
        volume = torch.from_numpy(np.ascontiguousarray(self.load(index).volume, dtype=np.float32))
        if self.augment is not None:
            gen = torch.Generator().manual_seed(augmentation_seed(self.seed, self.epoch, index))
            volume = augment_volume(volume, gen, self.augment)
        tabular = torch.from_numpy(self.tabular_stats.transform(rec.clinical))
        label = torch.tensor(self.cohort.label_index(rec), dtype=torch.int64)
        return Sample(volume, tabular, label, rec.case_id)
