"""Input validation shared by every op and layer.

All checks read shapes and dtypes only (no host synchronisation), so they cost nothing and do
not break ``torch.compile`` graphs. Value checks (NaN/Inf) run only when the environment
variable ``SPECTRAL3D_CHECK_FINITE=1`` is set, because they need a device-to-host copy.

Messages follow one pattern: ``"<name>: expected <what>, got <actual>"``, naming the argument
and, for per-axis problems, the axis (``D``, ``H`` or ``W``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

__all__ = [
    "AXES",
    "check_channels",
    "check_finite",
    "check_floating",
    "check_ndim",
    "check_divisible",
    "check_rate",
    "finite_checks_enabled",
    "to_3tuple_int",
]

AXES = ("D", "H", "W")


def check_ndim(x: torch.Tensor, ndim: int, name: str = "x", layout: str = "(N, C, D, H, W)") -> None:
    """Raise ``TypeError`` if ``x`` is not a tensor, ``ValueError`` if its rank is not ``ndim``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor {layout}, got shape {tuple(x.shape)} ({x.ndim}-D)")


def check_channels(x: torch.Tensor, channels: int, name: str = "x", dim: int = 1) -> None:
    """Raise ``ValueError`` if ``x.shape[dim] != channels``."""
    if x.shape[dim] != channels:
        raise ValueError(
            f"{name}: expected {channels} channels on axis {dim}, got {x.shape[dim]} (shape {tuple(x.shape)})"
        )


def check_floating(x: torch.Tensor, name: str = "x") -> None:
    """Raise ``TypeError`` unless ``x`` is a real floating-point tensor."""
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a real floating-point tensor, got dtype {x.dtype}")


def check_divisible(size: Sequence[int], multiple: Sequence[int], name: str = "input size", what: str = "") -> None:
    """Raise ``ValueError`` naming the axis if a spatial size is not a multiple of ``multiple``.

    ``size`` and ``multiple`` are ``(D, H, W)`` triples; ``what`` says which layer needs it.
    """
    for axis, s, m in zip(AXES, size, multiple):
        if s % m != 0 or s < m:
            by = f" by {what}" if what else ""
            raise ValueError(
                f"{name} {tuple(size)}: size {s} on axis {axis} would be truncated{by}; "
                f"it must be a positive multiple of {m} on axis {axis}"
            )


def check_rate(value: float, name: str) -> float:
    """Return ``value`` as a float if it is a probability in ``[0, 1)`` (a dropout or drop-path rate);
    ``ValueError`` naming ``name`` otherwise.

    Example::

        >>> check_rate(0.1, "drop_rate")
        0.1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1), got {value!r}")
    return float(value)


def finite_checks_enabled() -> bool:
    """True when ``SPECTRAL3D_CHECK_FINITE=1`` (read at call time)."""
    return os.environ.get("SPECTRAL3D_CHECK_FINITE", "0") not in ("", "0", "false", "False")


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` if ``x`` holds NaN/Inf; a no-op unless ``SPECTRAL3D_CHECK_FINITE=1``."""
    if not finite_checks_enabled() or torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or Inf values (SPECTRAL3D_CHECK_FINITE=1 is set)")


def to_3tuple_int(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    """An int or a ``(D, H, W)`` triple of positive ints, as a 3-tuple; anything else raises."""
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an int or a 3-tuple of ints (D, H, W), got {value!r}")
    if isinstance(value, int):
        out = (value, value, value)
    else:
        out = tuple(value)
        if len(out) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
            raise TypeError(f"{name}: expected an int or a 3-tuple of ints (D, H, W), got {value!r}")
    for axis, v in zip(AXES, out):
        if v < 1:
            raise ValueError(f"{name}: expected a positive size on axis {axis}, got {v}")
    return out  # type: ignore[return-value]
