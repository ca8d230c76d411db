"""Test hooks of the kernels and the shared test inputs of Eq. 2.

The launchers allocate outputs through :func:`empty` / :func:`empty_like` and report launches through
:func:`record_launch` (one dict lookup outside the context managers). :func:`skip_launches` skips them
(host-path timing); :func:`count_aten_ops` counts aten ops, also inside the custom ops.

Example::

    >>> with poison_outputs():
    ...     bool(empty_like(torch.zeros(2)).isnan().all())
    True
    >>> with count_launches() as launches:
    ...     record_launch("modulation_forward")
    >>> dict(launches)
    {'modulation_forward': 1}
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "NO_KERNEL_OPS",
    "SKIPPED_LAUNCH",
    "count_aten_ops",
    "count_launches",
    "empty",
    "empty_like",
    "launches_skipped",
    "make_modulation_inputs",
    "poison_outputs",
    "record_launch",
    "rel_err",
    "skip_launches",
]

_hooks: dict[str, object] = {"poison": False, "launches": None, "skip": False}

# aten ops that launch no device kernel: allocations, views, metadata
NO_KERNEL_OPS = frozenset(
    f"aten.{name}"
    for name in (
        "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "view", "view_as_real",
        "view_as_complex", "_reshape_alias", "as_strided", "alias", "detach", "permute", "select", "slice",
        "squeeze", "unsqueeze", "expand", "t", "transpose", "resolve_conj", "resolve_neg", "lift_fresh",
        "_unsafe_view", "unbind", "split", "split_with_sizes", "is_same_size",
    )
)  # fmt: skip


def empty_like(t: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like``, or NaN-filled inside :func:`poison_outputs`."""
    if _hooks["poison"]:
        return torch.full_like(t, complex(float("nan"), float("nan")) if t.is_complex() else float("nan"))
    return torch.empty_like(t)


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty``, or NaN-filled inside :func:`poison_outputs`."""
    if _hooks["poison"]:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


class _SkippedLaunch:
    """Stands in for a kernel inside :func:`skip_launches`: ``kernel[grid](*args)`` does nothing."""

    def __getitem__(self, grid: object) -> object:
        return self

    def __call__(self, *args: object, **kwargs: object) -> None:
        return None


SKIPPED_LAUNCH = _SkippedLaunch()


def launches_skipped() -> bool:
    """True inside :func:`skip_launches`."""
    return bool(_hooks["skip"])


def record_launch(name: str) -> None:
    """Count one launch of ``name`` inside :func:`count_launches`."""
    counter = _hooks["launches"]
    if counter is not None:
        counter[name] += 1  # type: ignore[index]


@contextlib.contextmanager
def poison_outputs(enabled: bool = True) -> Iterator[None]:
    """NaN-fill every kernel output before the kernel runs (``enabled=False``: off inside the block)."""
    saved = _hooks["poison"]
    _hooks["poison"] = enabled
    try:
        yield
    finally:
        _hooks["poison"] = saved


@contextlib.contextmanager
def count_launches() -> Iterator[Counter]:
    """Yield a ``Counter`` of the kernel launches (by launcher name) made inside the block."""
    saved = _hooks["launches"]
    counter: Counter = Counter()
    _hooks["launches"] = counter
    try:
        yield counter
    finally:
        _hooks["launches"] = saved


@contextlib.contextmanager
def skip_launches() -> Iterator[None]:
    """Launchers do everything but run their kernels (outputs stay uninitialised): times the host path."""
    saved = _hooks["skip"]
    _hooks["skip"] = True
    try:
        yield
    finally:
        _hooks["skip"] = saved


class _AtenOpCounter(TorchDispatchMode):
    """Counts every op dispatched; runs the ``spectral3d`` custom ops' implementations under itself."""

    def __init__(self, counter: Counter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.counter[str(func.overloadpacket)] += 1
        if func.namespace == "spectral3d":  # below the Python key, with this mode active again
            t = next(a for a in args if isinstance(a, torch.Tensor))
            keys = torch._C._dispatch_keys(t) & torch._C._dispatch_keyset_full_after(torch._C.DispatchKey.Python)
            with self:
                return func.redispatch(keys, *args, **kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def count_aten_ops() -> Iterator[Counter]:
    """Yield a ``Counter`` of the ops dispatched in the block, inside custom ops too (``"aten.mul"``, ...)."""
    counter: Counter = Counter()
    with _AtenOpCounter(counter):
        yield counter


def make_modulation_inputs(
    form: str,
    shape: tuple[int, int, int, int, int],
    *,
    num_bands: int = 8,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    layout: str = "contiguous",
    band_index: torch.Tensor | None = None,
    requires_grad: bool = False,
    seed: int = 0,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Random (never zero) ``([X, f_m, f_e, alpha, beta], band_index or None)`` of Eq. 2 for a real ``shape`` volume.

    ``form``: ``f_m``'s form; ``layout``: ``"contiguous"``, ``"channels_last"`` or ``"sliced"`` (strided views);
    ``band_index`` default: random, every band populated where possible; ``dtype`` real (``X`` complex).
    """
    if form not in ("channel", "full", "band"):
        raise ValueError(f"form: expected 'channel', 'full' or 'band', got {form!r}")
    if layout not in ("contiguous", "channels_last", "sliced"):
        raise ValueError(f"layout: expected 'contiguous', 'channels_last' or 'sliced', got {layout!r}")
    g = torch.Generator(device=device).manual_seed(seed)
    cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
    N, C, D, H, W = shape
    Wf = W // 2 + 1
    spec = (N, C, D, H, Wf)

    def randn(*size: int, complex_: bool = False) -> torch.Tensor:
        return torch.randn(size, dtype=cdt if complex_ else dtype, device=device, generator=g)

    X, f_e = randn(*spec, complex_=True), randn(*spec)
    fm_shape = {"channel": (N, C, 1, 1, 1), "full": spec, "band": (N, C, num_bands)}[form]
    f_m = 2 * torch.rand(fm_shape, dtype=dtype, device=device, generator=g)
    alpha, beta = randn(C), randn(C)
    band = None
    if form == "band" and band_index is not None:
        band = band_index
    elif form == "band":
        band = torch.randint(0, num_bands, (D, H, Wf), device=device, generator=g)
        k = min(num_bands, band.numel())
        band.view(-1)[:k] = torch.arange(k, device=device)
    if layout == "channels_last":
        X, f_e = (t.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3) for t in (X, f_e))
    elif layout == "sliced":
        X = randn(N, C, D + 1, H, Wf + 2, complex_=True)[:, :, 1:, :, 1:-1]
        f_e = randn(N, C, D, H, 2 * Wf)[..., ::2]
        if form == "full":
            f_m = 2 * torch.rand(N, C, D, H + 2, Wf, dtype=dtype, device=device, generator=g)[:, :, :, 1:-1]
    tensors = [X, f_m, f_e, alpha, beta]
    if requires_grad:
        tensors = [t.requires_grad_() for t in tensors]
    return tensors, band


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error ``|a - b| / |b|`` in ``b``'s dtype (NaN if ``a`` holds NaN)."""
    a = a.detach().to(b.dtype)
    return float((a - b).norm() / b.norm().clamp_min(1e-300))
