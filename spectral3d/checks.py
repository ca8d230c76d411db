"""Argument and input checks shared by every op, layer and model.

Tensor checks read shapes and dtypes only (no host sync, no graph break); value checks (NaN/Inf, band indices off
CPU) run only when :func:`finite_checks_enabled`. Wrong *type* (a float or bool for an int, a string for a rate):
``TypeError``; right type out of range (``0`` channels, an even kernel, rate ``1.5``): ``ValueError``. Messages
read ``"<name>: expected <what>, got <actual>"``, naming the argument and the axis ``D``, ``H`` or ``W``.
:func:`env_flag`: unset, ``""``, ``0``, ``false``, ``no``, ``off`` (any case) mean off, anything else on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

__all__ = [
    "AXES",
    "check_bool",
    "check_channels",
    "check_finite",
    "check_floating",
    "check_ndim",
    "check_divisible",
    "check_int",
    "check_rate",
    "env_flag",
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
    """ValueError naming the axis if ``size`` is not a multiple of ``multiple`` (D, H, W); ``what``: who needs it."""
    for axis, s, m in zip(AXES, size, multiple):
        if s % m != 0 or s < m:
            by = f" by {what}" if what else ""
            raise ValueError(
                f"{name} {tuple(size)}: size {s} on axis {axis} would be truncated{by}; "
                f"it must be a positive multiple of {m} on axis {axis}"
            )


def check_int(value: int, name: str, minimum: int = 1, odd: bool = False, expected: str | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) ``>= minimum`` (odd with ``odd=True``); ``expected``: the message's
    description of a valid value.

    Example::

        >>> check_int(3, "depth")
        3
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < minimum or (odd and value % 2 != 1):
        parity = "an odd int" if odd else "an int"
        expected = expected or ("a positive int" if minimum == 1 and not odd else f"{parity} >= {minimum}")
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return value


def check_bool(value: bool, name: str) -> bool:
    """Return ``value`` if it is a bool; ``TypeError`` otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {value!r} ({type(value).__name__})")
    return value


def check_rate(value: float, name: str) -> float:
    """Return ``value`` as a float if it is a rate in ``[0, 1)`` (``TypeError`` for a non-number or bool).

    Example::

        >>> check_rate(0.1, "drop_rate")
        0.1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a probability in [0, 1), got {value!r} ({type(value).__name__})")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1), got {value!r}")
    return float(value)


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is on (read at call time; module docstring)."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def finite_checks_enabled() -> bool:
    """True when ``SPECTRAL3D_CHECK_FINITE`` is on (:func:`env_flag`)."""
    return env_flag("SPECTRAL3D_CHECK_FINITE")


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
