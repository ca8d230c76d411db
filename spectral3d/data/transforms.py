"""Training augmentations for ``(S, D, H, W)`` volumes: flip → affine → intensity jitter (why not MONAI: data_notes).

*(ours)* Every draw comes from a ``torch.Generator`` seeded by :func:`augmentation_seed`; the affine acts in voxel
space (one trilinear resampling, border padding), the same for all sequences of a case; the jitter is per sequence,
``x ← x·(1 + ε_s) + δ_s`` with ``ε_s ~ U(−a, a)``, ``δ_s ~ U(−b, b)``. Notes: ``benchmarks/results/data_notes.md``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from spectral3d._checks import check_floating, check_ndim

__all__ = ["AugmentConfig", "augment_volume", "augmentation_seed", "resample_affine"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; the defaults are mild *(ours)*.

    Args:
        flip_axes: model axes that may be flipped (0 = D, 1 = H, 2 = W); default W only (left–right).
        flip_prob: probability of flipping each axis in ``flip_axes``.
        affine_prob: probability of applying the affine.
        rotate_deg: rotation angles drawn from ``U(-r, r)`` degrees about each axis.
        scale: per-axis scale factors from ``U(1 - s, 1 + s)``.
        translate: per-axis shift from ``U(-t, t)`` voxels.
        intensity_scale: ``a`` of the multiplicative jitter.
        intensity_shift: ``b`` of the additive jitter.

    Example::

        >>> AugmentConfig(rotate_deg=5.0).flip_axes
        (2,)
    """

    flip_axes: tuple[int, ...] = (2,)
    flip_prob: float = 0.5
    affine_prob: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    translate: float = 2.0
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1

    def __post_init__(self) -> None:
        axes = tuple(self.flip_axes)
        if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"flip_axes: expected distinct axes among 0 (D), 1 (H), 2 (W), got {self.flip_axes!r}")
        object.__setattr__(self, "flip_axes", axes)
        for name in ("flip_prob", "affine_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {getattr(self, name)!r}")
        for name in ("rotate_deg", "scale", "translate", "intensity_scale", "intensity_shift"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected a non-negative strength, got {getattr(self, name)!r}")
        if self.scale >= 1:
            raise ValueError(f"scale: expected < 1 (factors in (1 - s, 1 + s)), got {self.scale!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` in ``epoch`` (a hash, so nearby triples do not correlate).

    Example::

        >>> augmentation_seed(0, 1, 2) == augmentation_seed(0, 1, 2) != augmentation_seed(0, 2, 1)
        True
    """
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _uniform(generator: torch.Generator, n: int, half: float) -> torch.Tensor:
    return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * half


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """3×3 rotation about the D, H and W axes (float64)."""
    mats = []
    for axis, a in enumerate(angles.tolist()):
        c, s = math.cos(a), math.sin(a)
        i, j = [x for x in range(3) if x != axis]
        m = torch.eye(3, dtype=torch.float64)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        mats.append(m)
    return mats[0] @ mats[1] @ mats[2]


def augment_volume(volume: torch.Tensor, generator: torch.Generator, config: AugmentConfig) -> torch.Tensor:
    """Flip, affine and intensity-jitter one ``(S, D, H, W)`` volume with draws from ``generator``.

    Args:
        volume: ``(S, D, H, W)`` floating tensor (the result: a new one, same shape and dtype).
        generator: the source of every random draw (seed it with :func:`augmentation_seed`).
        config: the strengths.

    Example::

        >>> g = torch.Generator().manual_seed(augmentation_seed(0, 0, 0))
        >>> augment_volume(torch.randn(2, 8, 12, 10), g, AugmentConfig()).shape
        torch.Size([2, 8, 12, 10])
    """
    check_ndim(volume, 4, "volume", "(S, D, H, W)")
    check_floating(volume, "volume")
    out = volume
    flips = [ax + 1 for ax in config.flip_axes if float(torch.rand((), generator=generator)) < config.flip_prob]
    if flips:
        out = out.flip(flips)
    if float(torch.rand((), generator=generator)) < config.affine_prob:
        rot = _rotation(_uniform(generator, 3, math.radians(config.rotate_deg)))
        scale = 1 + _uniform(generator, 3, config.scale)
        shift = _uniform(generator, 3, config.translate)
        out = resample_affine(out, rot @ torch.diag(1 / scale), shift)
    s = out.shape[0]
    gain = 1 + _uniform(generator, s, config.intensity_scale).to(out.dtype)
    bias = _uniform(generator, s, config.intensity_shift).to(out.dtype)
    return out * gain.view(s, 1, 1, 1) + bias.view(s, 1, 1, 1)


def resample_affine(volume: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``out(p) = in(centre + matrix·(p - centre) + shift)`` in voxel coordinates ``p = (d, h, w)`` (trilinear).

    Args:
        volume: ``(S, D, H, W)`` floating tensor.
        matrix: ``(3, 3)`` float64, acting on ``(d, h, w)`` about the volume centre.
        shift: ``(3,)`` float64 shift in voxels.
    """
    size = volume.shape[1:]
    centre = torch.tensor([(n - 1) / 2 for n in size], dtype=torch.float64)
    axes = [torch.arange(n, dtype=torch.float64) for n in size]
    p = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1) - centre  # (D, H, W, 3)
    src = p @ matrix.T + centre + shift
    norm = torch.tensor([max(n - 1, 1) for n in size], dtype=torch.float64)
    grid = (2 * src / norm - 1).flip(-1)  # grid_sample wants (x, y, z) = (w, h, d)
    work = volume.float() if volume.dtype not in (torch.float32, torch.float64) else volume
    out = F.grid_sample(
        work[None], grid[None].to(work.dtype), mode="bilinear", padding_mode="border", align_corners=True
    )
    return out[0].to(volume.dtype)
