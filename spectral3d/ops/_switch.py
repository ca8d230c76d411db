"""Which implementation each op of ``spectral3d.ops`` runs: ``use_kernels`` and ``SPECTRAL3D_KERNEL``.

Modes, per op: ``auto`` (the fast kernel where it applies: Triton on CUDA, ``mamba_ssm`` for
``selective_scan``; PyTorch otherwise), ``triton`` (the fast kernel or a ``RuntimeError``; on CPU only with
``TRITON_INTERPRET=1``), ``reference`` (the custom op with its PyTorch implementation; the chunked scan),
``autograd`` (plain PyTorch autograd, no custom op; the token loop). Read at call time: an enclosing
:func:`use_kernels`, then ``SPECTRAL3D_KERNEL`` (``"reference"``, or ``"auto,depthwise_conv3d=reference"``),
then ``auto``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

import torch

__all__ = ["KERNEL_MODES", "OPS", "kernel_mode", "kernel_path", "use_kernels"]

KERNEL_MODES = ("auto", "triton", "reference", "autograd")
OPS = ("spectral_modulation", "spectral_features", "depthwise_conv3d", "selective_scan")
_ENV = "SPECTRAL3D_KERNEL"
_overrides: dict[str, str] = {}  # set by use_kernels only


def _check_mode(mode: object, source: str) -> str:
    if mode not in KERNEL_MODES:
        raise ValueError(f"{source}: expected a mode in {KERNEL_MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


def _check_ops(ops: Iterable[str], source: str) -> tuple[str, ...]:
    ops = tuple(ops)
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"{source}: unknown op(s) {unknown}; expected names from {OPS}")
    return ops


_parsed: dict[str, dict[str, str]] = {}  # SPECTRAL3D_KERNEL value -> mode of every op


def _parse(value: str) -> dict[str, str]:
    modes: dict[str, str] = {}
    default = "auto"
    for entry in (e.strip().lower() for e in value.split(",")):
        if not entry:
            continue
        op, sep, mode = entry.partition("=")
        if sep:
            _check_ops([op.strip()], _ENV)
            modes[op.strip()] = _check_mode(mode.strip(), f"{_ENV} ({op.strip()})")
        else:
            default = _check_mode(entry, _ENV)
    return {op: modes.get(op, default) for op in OPS}


def _parse_env(value: str) -> dict[str, str]:
    if torch.compiler.is_compiling():  # traced: no guard on the cache, which eager calls fill later
        return _parse(value)
    modes = _parsed.get(value)
    if modes is None:
        modes = _parsed[value] = _parse(value)
    return modes


def kernel_mode(op: str) -> str:
    """The mode ``op`` runs in now (module docstring); raises ``ValueError`` for an unknown op or mode."""
    mode = _overrides.get(op)
    if mode is not None:
        return mode
    modes = _parse_env(os.environ.get(_ENV, ""))
    if op not in modes:
        _check_ops([op], "op")
    return modes[op]


def kernel_path(op: str, t: torch.Tensor, covered: bool) -> str:
    """``"triton"`` (CUDA), ``"interpret"`` (CPU, ``TRITON_INTERPRET=1``) or ``"torch"`` for ``t`` in ``op``'s mode."""
    mode = kernel_mode(op)
    if mode in ("reference", "autograd") or not covered:
        return "torch"
    if t.device.type == "cuda":
        return "triton"
    if mode == "auto":
        return "torch"
    from torch._subclasses.fake_tensor import is_fake
    from torch._subclasses.functional_tensor import FunctionalTensor

    if is_fake(t) or isinstance(t, FunctionalTensor) or t.device.type == "meta":
        return "torch"  # shape propagation only: the PyTorch implementation gives the same metadata
    if t.device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1":
        return "interpret"
    raise RuntimeError(
        f"{op}: kernel mode 'triton' needs a CUDA tensor, or TRITON_INTERPRET=1 set at process start for CPU "
        f"tensors; got a tensor on {t.device} without the interpreter"
    )


@contextlib.contextmanager
def use_kernels(mode: str, ops: Iterable[str] | None = None) -> Iterator[None]:
    """Run ``ops`` (default: every op of :data:`OPS`) in ``mode`` inside the ``with`` block.

    Process-wide, as timm's layer-config context managers; ``torch.compile`` reads it while tracing.

    Example::

        >>> with use_kernels("autograd", ops={"spectral_features"}):
        ...     kernel_mode("spectral_features"), kernel_mode("depthwise_conv3d")
        ('autograd', 'auto')
    """
    mode = _check_mode(mode, "mode")
    names = _check_ops(sorted(ops) if ops is not None else OPS, "ops")
    saved = dict(_overrides)
    _overrides.update(dict.fromkeys(names, mode))
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)
