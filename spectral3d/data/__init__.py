"""Data for spectral3d: NIfTI cohorts → model-grid tensors, and a synthetic cohort (DESIGN.md §11).

This package knows no model: it imports nothing from ``backbones3d`` or ``spectral3d.layers``.

Typical use::

    from spectral3d.data import Cohort, MRIDataset, PreprocessConfig, collate

    cohort = Cohort.from_folder("cohort/")                      # validates cases.csv and files
    cfg = PreprocessConfig(input_size=(64, 96, 96), spacing=1.0)
    cohort = cohort.verify(cfg, skip_bad=True)                 # optional: load every case once
    train = MRIDataset(cohort, cohort.split("train"), cfg, augment=True, cache_dir="cache/")
    val = MRIDataset(cohort, cohort.split("val"), cfg, tabular_stats=train.tabular_stats)
    loader = torch.utils.data.DataLoader(train, batch_size=4, shuffle=True, collate_fn=collate)
    for epoch in range(epochs):
        train.set_epoch(epoch)
        for batch in loader:    # batch.volume (N, S, D, H, W), batch.tabular (N, F), batch.label (N,)
            ...

What a checkpoint needs to reproduce the inputs: ``cohort.classes``, ``cohort.sequences``,
``cohort.clinical_columns``, ``cfg.to_dict()`` and ``train.tabular_stats.to_dict()`` (all JSON).

Modules:

* :mod:`~spectral3d.data.nifti` — ``PreprocessConfig``, ``load_case(sequences, roi, config,
  case_id) -> LoadedCase`` (``volume`` ``(S, D, H, W)`` float32, ``roi``, and per sequence the
  model-voxel → source-voxel matrix; ``LoadedCase.to_source_grid(map, sequence)`` maps a
  Grad-CAM map back onto a source file's grid, ``to_source_nifti`` saves it with its affine),
  ``read_volume``, ``canonical_grid``.
* :mod:`~spectral3d.data.cohort` — ``Cohort.from_folder(root, sequences, classes,
  clinical_columns, skip_bad)``, ``Cohort.split(name, fold)``, ``Cohort.verify(config,
  skip_bad)``, ``CaseRecord``; for case folders outside a cohort: ``find_case_files(folder,
  sequences)``, ``read_clinical_table(csv, columns)``, ``parse_clinical(row, columns)``.
* :mod:`~spectral3d.data.dataset` — ``MRIDataset``, ``Sample``, ``Batch``, ``collate``,
  ``TabularStats``.
* :mod:`~spectral3d.data.transforms` — ``AugmentConfig``, ``augment_volume``, ``resample_affine``,
  ``augmentation_seed`` (seeded per ``(seed, epoch, index)``; why not MONAI is said there).
* :mod:`~spectral3d.data.cache` — ``VolumeCache`` (keyed by file content + parameters),
  ``file_digest``.
* :mod:`~spectral3d.data.synthetic` — ``write_synthetic_cohort(out, task, cases, seed, size,
  folds, overwrite, lesion)``, ``LesionSpec`` (the lesion's cues and size; ``FREQUENCY_ONLY``),
  ``lesion_centres(root, space)``, ``lesion_radii(root)``.
* :mod:`~spectral3d.data.errors` — ``DataError`` (a ``ValueError`` naming the case and files;
  print ``str(err)`` on a CLI, no traceback) and ``SkippedCase`` (what ``skip_bad=True`` leaves
  out, in ``Cohort.skipped``).
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
