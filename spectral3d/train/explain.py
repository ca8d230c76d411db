"""Grad-CAM of whole cases from a checkpoint (``spectral3d gradcam``): maps on the source grids, a figure.

The model-grid maps of :class:`spectral3d.gradcam.GradCAM3d` go back onto each sequence's original
file with the loader's inverse transform (:meth:`spectral3d.data.LoadedCase.to_source_nifti`), so each
NIfTI opens over its source image in any viewer; a PNG shows three orthogonal slices (paper Fig. 6, 7).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from spectral3d.gradcam import METHOD_LABELS, GradCAM3d, Method

if TYPE_CHECKING:
    from spectral3d.data import LoadedCase

__all__ = ["gradcam_case", "render_gradcam_figure"]


def gradcam_case(
    checkpoint: str | os.PathLike,
    case_dir: str | os.PathLike,
    out: str | os.PathLike,
    method: Method = "gradcam",
    target_class: str | None = None,
    tabular_csv: str | os.PathLike | None = None,
    min_grid: int = 4,
) -> dict[str, Any]:
    """Grad-CAM of one case folder with a checkpoint: NIfTI maps on the source grids, a PNG and a JSON.

    The case is loaded with the checkpoint's preprocessing; clinical values come from ``tabular_csv`` or
    are all missing. DeSamba gives one map per sequence; an early-fusion model one map for the fused
    input, written for every sequence (the figure says so).

    Args:
        checkpoint: a checkpoint directory or a run directory (its best, else last checkpoint).
        case_dir: a folder holding ``<sequence>.nii.gz`` per sequence and optionally ``roi.nii.gz``.
        out: the output folder (created).
        method: ``"gradcam"``, ``"gradcam++"`` or ``"layercam"`` (named so in the figure).
        target_class: the class name to explain; default the predicted class.
        tabular_csv: CSV with a ``case_id`` column (the folder's name) and the clinical columns.
        min_grid: see :class:`GradCAM3d`.

    Returns:
        The summary in ``gradcam.json`` plus ``files``: ``out/gradcam_<sequence>.nii.gz`` (on that
        sequence's source grid), ``out/gradcam.png`` and ``out/gradcam.json``.

    Example::

        >>> res = gradcam_case("runs/desamba/best", "cohort/case003", "cam/")   # doctest: +SKIP
        >>> res["predicted"], [Path(f).name for f in res["files"]]               # doctest: +SKIP
        ('tuberculous', ['gradcam_t1.nii.gz', 'gradcam_t2fs.nii.gz', 'gradcam.png', 'gradcam.json'])
    """
    from spectral3d.train.workflow import load_checkpoint_model

    model, config = load_checkpoint_model(checkpoint)
    class_names: list[str] = list(config["class_names"])
    sequences: list[str] = list(config["sequences"])
    case_id = Path(case_dir).name
    loaded, x, tabular, from_csv = _case_inputs(model, config, Path(case_dir), tabular_csv)
    if target_class is not None and target_class not in class_names:
        raise ValueError(f"target_class: expected one of {class_names}, got {target_class!r}")
    class_idx = class_names.index(target_class) if target_class is not None else None

    result = GradCAM3d(model, method=method, min_grid=min_grid)(x, tabular, class_idx)
    probs = result.probs[0]
    pred = int(probs.argmax())
    explained = class_names[int(result.class_idx[0])]
    per_sequence = {seq: result.maps[seq if seq in result.maps else "input"][0].numpy() for seq in sequences}

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = _write_source_maps(loaded, per_sequence, out)
    label = METHOD_LABELS[method]
    title = f"{case_id}: predicted {class_names[pred]} (p = {float(probs[pred]):.2f}); {label} for {explained} — "
    title += config["model"]
    if "input" in result.maps:  # early fusion: one map for all sequences
        title += f"\none {label} map for the fused input (early fusion), the same in every row"
    png = out / "gradcam.png"
    render_gradcam_figure(loaded.volume, per_sequence, sequences, loaded.roi, title, png, map_label=label)
    written.append(str(png))
    summary = {
        "case_id": case_id,
        "predicted": class_names[pred],
        "probability": float(probs[pred]),
        "explained_class": explained,
        "probabilities": dict(zip(class_names, map(float, probs))),
        "method": method,
        "title": title,
        "layers": result.layers,
        "model": config["model"],
        "clinical_from_csv": from_csv,
    }
    (out / "gradcam.json").write_text(json.dumps(summary, indent=2) + "\n")
    written.append(str(out / "gradcam.json"))
    return {**summary, "files": written}


def _case_inputs(
    model: torch.nn.Module, config: dict[str, Any], case_dir: Path, tabular_csv: str | os.PathLike | None
) -> tuple[LoadedCase, torch.Tensor, torch.Tensor | None, bool]:
    """The loaded case, ``x`` ``(1, S, D, H, W)``, standardised clinical values ``(1, F)`` or None, from CSV?"""
    from backbones3d import is_multi_sequence
    from spectral3d.data import PreprocessConfig, TabularStats, find_case_files, load_case, read_clinical_table

    case_id = case_dir.name
    files, roi = find_case_files(case_dir, list(config["sequences"]))
    loaded = load_case(files, roi=roi, config=PreprocessConfig.from_dict(config["preprocess"]), case_id=case_id)
    x = torch.from_numpy(np.ascontiguousarray(loaded.volume, dtype=np.float32)).unsqueeze(0)
    tabular, from_csv = None, False
    if is_multi_sequence(model) and config.get("clinical_columns"):
        stats = TabularStats.from_dict(config["tabular_stats"])
        columns = config["clinical_columns"]
        table = read_clinical_table(tabular_csv, columns) if tabular_csv is not None else {}
        values, from_csv = table.get(case_id, [math.nan] * len(columns)), case_id in table
        tabular = torch.from_numpy(stats.transform(values)).unsqueeze(0)
    return loaded, x, tabular, from_csv


def _write_source_maps(loaded: LoadedCase, maps: Mapping[str, np.ndarray], out: Path) -> list[str]:
    """``out/gradcam_<sequence>.nii.gz``: each model-grid map on its sequence's source grid (shape, affine)."""
    import nibabel as nib

    written = []
    for seq, cam in maps.items():
        path = out / f"gradcam_{seq}.nii.gz"
        img = loaded.to_source_nifti(cam, seq)
        img.header.set_intent("estimate", name="Grad-CAM")
        nib.save(img, path)
        written.append(str(path))
    return written


def render_gradcam_figure(
    volume: np.ndarray,
    maps: Mapping[str, np.ndarray],
    sequences: Sequence[str],
    roi: np.ndarray | None,
    title: str,
    path: str | os.PathLike,
    centre: Sequence[int] | None = None,
    map_label: str = "Grad-CAM",
) -> tuple[int, int, int]:
    """Save the figure of paper Fig. 6/7: per sequence, three planes × (image, map, overlay), ROI contour.

    On the model grid ``(D, H, W)`` = (inferior→superior, posterior→anterior, left→right), in
    neurological convention (patient's right on the right).

    Args:
        volume: ``(S, D, H, W)`` the preprocessed images.
        maps: per sequence ``(D, H, W)`` in [0, 1].
        sequences: the names, in ``volume``'s order.
        roi: ``(D, H, W)`` bool or ``None``.
        title: the figure title.
        path: the PNG to write.
        centre: ``(d, h, w)`` to cut through; default the ROI centroid, else the mean map's maximum.
        map_label: the method's name, over the map columns (``METHOD_LABELS``).

    Returns:
        The ``(d, h, w)`` the slices cross at.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # a bare Figure on an Agg canvas: no pyplot state, no display

    if volume.ndim != 4 or volume.shape[0] != len(sequences):
        raise ValueError(f"volume: expected (S={len(sequences)}, D, H, W), got {volume.shape}")
    if centre is None:
        centre = _slice_centre(roi, [maps[s] for s in sequences])
    d, h, w = centre
    planes = [  # name, slicer, (vertical, horizontal) axis labels
        ("axial", lambda v: v[d], ("P", "A", "L", "R")),
        ("coronal", lambda v: v[:, h], ("I", "S", "L", "R")),
        ("sagittal", lambda v: v[:, :, w], ("I", "S", "P", "A")),
    ]
    n_rows, n_cols = len(sequences), 3 * len(planes)
    fig = Figure(figsize=(1.55 * n_cols + 0.9, 1.75 * n_rows + 0.9), dpi=110)
    grid = fig.add_gridspec(n_rows, n_cols, wspace=0.04, hspace=0.1, left=0.06, right=0.93, top=0.8, bottom=0.02)
    mappable = None
    for r, seq in enumerate(sequences):
        lo, hi = np.percentile(volume[r], (1, 99))
        for p, (plane, cut, corners) in enumerate(planes):
            img2, cam2, roi2 = cut(volume[r]), cut(maps[seq]), (cut(roi) if roi is not None else None)
            for k, kind in enumerate(("image", map_label, "overlay")):
                ax = fig.add_subplot(grid[r, 3 * p + k])
                shown = _draw_panel(ax, kind, map_label, img2, cam2, roi2, (lo, hi))
                mappable = shown if kind == map_label else mappable
                if r == 0:
                    ax.set_title(f"{plane}\n{kind}" if k == 1 else kind, fontsize=8)
                if k == 0 and p == 0:
                    ax.set_ylabel(seq, fontsize=10, fontweight="bold")
                if k == 0 and r == n_rows - 1:
                    v0, v1, h0, h1 = corners
                    ax.text(0.02, 0.02, f"{h0}→{h1}, {v0}→{v1}", transform=ax.transAxes, fontsize=6, color="yellow")
    if mappable is not None:
        cax = fig.add_axes((0.945, 0.1, 0.012, 0.6))
        fig.colorbar(mappable, cax=cax).ax.tick_params(labelsize=7)
    roi_note = "ROI contour in green" if roi is not None else "no ROI"
    fig.suptitle(f"{title}\nslices through (d, h, w) = {tuple(centre)} of the model grid; {roi_note}", fontsize=10)
    FigureCanvasAgg(fig)
    fig.savefig(path)
    return tuple(centre)  # type: ignore[return-value]


def _slice_centre(roi: np.ndarray | None, maps: Sequence[np.ndarray]) -> tuple[int, int, int]:
    """The ROI centroid, else the maximum of the mean map."""
    if roi is not None and roi.any():
        return tuple(int(round(c)) for c in np.argwhere(roi).mean(0))  # type: ignore[return-value]
    mean_map = np.mean(maps, axis=0)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mean_map)), mean_map.shape))  # type: ignore[return-value]


def _draw_panel(
    ax: Any,
    kind: str,
    map_label: str,
    img: np.ndarray,
    cam: np.ndarray,
    roi: np.ndarray | None,
    window: tuple[float, float],
) -> Any:
    """One slice panel: ``"image"``, the map (``map_label``) or ``"overlay"``; returns the map's image."""
    ax.set_xticks([])
    ax.set_yticks([])
    shown = None
    if kind != map_label:
        ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], origin="lower", interpolation="nearest")
    if kind != "image":
        alpha = 0.45 if kind == "overlay" else 1.0
        shown = ax.imshow(cam, cmap="jet", vmin=0, vmax=1, origin="lower", alpha=alpha, interpolation="bilinear")
    if roi is not None and roi.any() and kind != map_label:
        ax.contour(roi.astype(float), levels=[0.5], colors="lime", linewidths=1.0, origin="lower")
    return shown
