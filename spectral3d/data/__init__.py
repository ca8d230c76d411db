"""Data for spectral3d: NIfTI cohorts → model-grid tensors, and a synthetic cohort (DESIGN.md §11).

Imports nothing from ``backbones3d`` or ``spectral3d.layers``. Typical use::

    cohort = Cohort.from_folder("cohort/")                      # validates cases.csv and files
    cfg = PreprocessConfig(input_size=(64, 96, 96), spacing=1.0)
    cohort = cohort.verify(cfg, skip_bad=True)                 # optional: load every case once
    train = MRIDataset(cohort, cohort.split("train"), cfg, augment=True, cache_dir="cache/")
    val = MRIDataset(cohort, cohort.split("val"), cfg, tabular_stats=train.tabular_stats)
    loader = torch.utils.data.DataLoader(train, batch_size=4, shuffle=True, collate_fn=collate)
    # per epoch: train.set_epoch(epoch); batches: volume (N, S, D, H, W), tabular (N, F), label (N,)

A checkpoint reproduces the inputs with ``cohort.classes``, ``cohort.sequences``, ``cohort.clinical_columns``,
``cfg.to_dict()`` and ``train.tabular_stats.to_dict()`` (all JSON).
"""

from spectral3d.data.cache import VolumeCache, file_digest
from spectral3d.data.cohort import SPLITS, CaseRecord, Cohort, find_case_files, parse_clinical, read_clinical_table
from spectral3d.data.dataset import Batch, MRIDataset, Sample, TabularStats, collate
from spectral3d.data.errors import DataError, SkippedCase
from spectral3d.data.nifti import LoadedCase, PreprocessConfig, SourceGrid, canonical_grid, load_case, read_volume
from spectral3d.data.synthetic import (
    FREQUENCY_ONLY,
    TASKS,
    LesionSpec,
    lesion_centres,
    lesion_radii,
    write_synthetic_cohort,
)
from spectral3d.data.transforms import AugmentConfig, augment_volume, augmentation_seed

__all__ = [
    "FREQUENCY_ONLY",
    "SPLITS",
    "TASKS",
    "AugmentConfig",
    "Batch",
    "CaseRecord",
    "Cohort",
    "DataError",
    "LesionSpec",
    "LoadedCase",
    "MRIDataset",
    "PreprocessConfig",
    "Sample",
    "SkippedCase",
    "SourceGrid",
    "TabularStats",
    "VolumeCache",
    "augment_volume",
    "augmentation_seed",
    "canonical_grid",
    "collate",
    "file_digest",
    "find_case_files",
    "lesion_centres",
    "lesion_radii",
    "load_case",
    "parse_clinical",
    "read_clinical_table",
    "read_volume",
    "write_synthetic_cohort",
]
