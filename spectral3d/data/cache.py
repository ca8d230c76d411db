"""On-disk cache of :func:`~spectral3d.data.nifti.load_case` results (why content keys: data_notes.md).

Key: SHA-256 of a format version, the ``PreprocessConfig``, the sequence names and the SHA-256 of each file's
*content* (memoised per process on ``(real path, size, mtime_ns)``). Entry: ``<cache_dir>/<key[:2]>/<key>.npz``
(no pickles), written atomically; an unreadable entry is a miss with one warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from spectral3d.data.nifti import LoadedCase, PreprocessConfig, SourceGrid, load_case

__all__ = ["VolumeCache", "file_digest"]

CACHE_FORMAT = 1
_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's content (memoised per process on path, size and mtime)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


class VolumeCache:
    """A folder of preprocessed cases keyed by file content and parameters; ``hits``/``misses`` count since creation.

    Args:
        cache_dir: the folder (created on first write).

    Example::

        >>> cache = VolumeCache(tmp_path / "cache")                      # doctest: +SKIP
        >>> a = cache.load_case({"t1": t1_path}, config=cfg)            # doctest: +SKIP
        >>> b = cache.load_case({"t1": t1_path}, config=cfg)            # doctest: +SKIP
        >>> cache.hits, cache.misses                                     # doctest: +SKIP
        (1, 1)
    """

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.cache_dir = Path(cache_dir)
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"VolumeCache({str(self.cache_dir)!r}, hits={self.hits}, misses={self.misses})"

    def key(
        self,
        sequences: Mapping[str, str | os.PathLike],
        roi: str | os.PathLike | None,
        config: PreprocessConfig,
    ) -> str:
        """The entry key of a request (module docstring)."""
        payload = {
            "format": CACHE_FORMAT,
            "config": config.to_dict(),
            "sequences": [[name, file_digest(p)] for name, p in sequences.items()],
            "roi": None if roi is None else file_digest(roi),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def load_case(
        self,
        sequences: Mapping[str, str | os.PathLike],
        roi: str | os.PathLike | None = None,
        config: PreprocessConfig | None = None,
        case_id: str = "",
    ) -> LoadedCase:
        """:func:`~spectral3d.data.nifti.load_case` through the cache (same arguments and result)."""
        cfg = config if config is not None else PreprocessConfig()
        key = self.key(sequences, roi, cfg)
        path = self.cache_dir / key[:2] / f"{key}.npz"
        if path.is_file():
            try:
                case = _read_entry(path, sequences, roi, cfg, case_id)
            except Exception as e:  # zipfile.BadZipFile, EOFError, KeyError, ValueError, OSError, ...
                warnings.warn(f"cache entry {path} is unreadable ({type(e).__name__}); recomputing it", stacklevel=2)
            else:
                self.hits += 1
                return case
        self.misses += 1
        case = load_case(sequences, roi=roi, config=cfg, case_id=case_id)
        _write_entry(path, case)
        return case


def _write_entry(path: Path, case: LoadedCase) -> None:
    arrays = {"volume": case.volume, "model_affine": case.model_affine, "names": np.array(case.sequences)}
    grids = dict(case.sources)
    if case.roi is not None:
        arrays["roi"] = case.roi
        grids["roi"] = case.roi_source
    for name, g in grids.items():
        arrays[f"{name}/shape"] = np.array(g.shape)
        arrays[f"{name}/affine"] = g.affine
        arrays[f"{name}/model_to_source"] = g.model_to_source
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_entry(
    path: Path,
    sequences: Mapping[str, str | os.PathLike],
    roi: str | os.PathLike | None,
    config: PreprocessConfig,
    case_id: str,
) -> LoadedCase:
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:  # our handle: closed on a bad archive too

        def grid(name: str, file: str | os.PathLike) -> SourceGrid:
            shape = tuple(int(v) for v in z[f"{name}/shape"])
            return SourceGrid(os.fspath(file), shape, z[f"{name}/affine"], z[f"{name}/model_to_source"])

        names = tuple(str(n) for n in z["names"])
        return LoadedCase(
            case_id=case_id,
            sequences=names,
            volume=z["volume"],
            roi=z["roi"] if roi is not None else None,
            model_affine=z["model_affine"],
            sources={n: grid(n, sequences[n]) for n in names},
            roi_source=grid("roi", roi) if roi is not None else None,
            config=config,
        )
