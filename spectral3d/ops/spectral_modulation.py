"""Spectral modulation (paper Eq. 2) and spectral features as ``torch.library`` custom ops (DESIGN.md §3).

Per-channel ``alpha``, ``beta`` *(ours)* on the half spectrum ``X = R + iI`` of a real volume::

    g  = 1 + alpha * (f_m - 1)
    R' = R * g + beta * f_e * phi,        phi = |X| = sqrt(R^2 + I^2)
    I' = I * g

Shapes: ``X`` complex ``(N, C, D, H, Wf)``, ``f_e`` real of the same shape, ``alpha``, ``beta`` ``(C,)``, ``f_m``
per-channel ``(N, C, 1, 1, 1)``, full ``(N, C, D, H, Wf)`` or banded ``(N, C, B)`` with ``band_index``
``(D, H, Wf)`` in ``[0, B)`` (gathered per bin). Backward (``gR + i gI`` in, ``s = gR R + gI I``, ``R/phi`` 0 at 0)::

    dR     = gR * g + gR * beta * f_e * R / phi       dI = gI * g + gR * beta * f_e * I / phi
    df_e   = gR * beta * phi                          df_m = alpha * s  (summed to f_m's form)
    dalpha = sum_{n, bins} (f_m - 1) * s              dbeta = sum_{n, bins} gR * f_e * phi

``spectral_features(X) = concat[R, I, phi]`` ``(N, 3C, D, H, Wf)``; backward
``dX = (gR + g_phi R/phi) + i (gI + g_phi I/phi)``.

Paths (:func:`spectral3d.ops.use_kernels`): Triton on CUDA for complex64 (CPU: ``TRITON_INTERPRET=1``), else
PyTorch; eager calls on plain tensors skip the dispatcher via a ``torch.autograd.Function`` *(ours)*. Precision
*(ours)*: ``X``'s real dtype, each gradient in its input's dtype and shape, fixed-order (reproducible) reductions.
FLOPs per spectrum element (DESIGN.md §10): ``*_FLOPS_PER_ELEMENT``.
"""

import math
import os
from typing import Optional

import torch
from torch.utils.flop_counter import register_flop_formula

from spectral3d.checks import check_finite, finite_checks_enabled
from spectral3d.ops._switch import kernel_mode

__all__ = [
    "FEATURES_BACKWARD_FLOPS_PER_ELEMENT",
    "FEATURES_FLOPS_PER_ELEMENT",
    "MODULATION_BACKWARD_FLOPS_PER_ELEMENT",
    "MODULATION_FLOPS_PER_ELEMENT",
    "spectral_features",
    "spectral_features_reference",
    "spectral_modulation",
    "spectral_modulation_reference",
]

# phi: 2 mul + add + sqrt = 4; g: 3; R*g, I*g: 2; beta*f_e*phi: 2; add: 1.
MODULATION_FLOPS_PER_ELEMENT = 12
# phi 4, g 3, gR*beta*f_e 2, 1/phi 1, dR 4, dI 3, df_e 2, s 3, df_m 1, dalpha 2, dbeta 3.
MODULATION_BACKWARD_FLOPS_PER_ELEMENT = 28
# phi only (R and I are copies).
FEATURES_FLOPS_PER_ELEMENT = 4
# phi 4, 1/phi 1, g_phi/phi 1, two multiplies, two adds.
FEATURES_BACKWARD_FLOPS_PER_ELEMENT = 10

# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _check_tensor(t: object, name: str, layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {layout}, got {type(t).__name__}")
    return t


def _check_spectrum(X: object) -> torch.Tensor:
    X = _check_tensor(X, "X", "(N, C, D, H, Wf)")
    if X.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"X: expected a complex64 or complex128 spectrum (N, C, D, H, Wf), got dtype {X.dtype}")
    if X.ndim != 5:
        raise ValueError(f"X: expected a 5-D spectrum (N, C, D, H, Wf), got shape {tuple(X.shape)} ({X.ndim}-D)")
    return X


def _check_real(t: torch.Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a real floating-point tensor, got dtype {t.dtype}")


def _check_modulation_args(
    X: object,
    f_m: object,
    f_e: object,
    alpha: object,
    beta: object,
    band_index: object,
) -> str:
    """Check Eq. 2's shapes, dtypes, devices (metadata only); return ``f_m``'s form: channel, full or band."""
    X = _check_spectrum(X)
    N, C, D, H, Wf = X.shape
    full = (N, C, D, H, Wf)
    f_e = _check_tensor(f_e, "f_e", "(N, C, D, H, Wf)")
    _check_real(f_e, "f_e")
    if tuple(f_e.shape) != full:
        raise ValueError(f"f_e: expected shape {full} (the shape of X), got {tuple(f_e.shape)}")
    for name, t in (("alpha", alpha), ("beta", beta)):
        t = _check_tensor(t, name, "(C,)")
        _check_real(t, name)
        if tuple(t.shape) != (C,):
            raise ValueError(f"{name}: expected shape ({C},) (one value per channel of X), got {tuple(t.shape)}")
    f_m = _check_tensor(f_m, "f_m", "(N, C, 1, 1, 1), (N, C, D, H, Wf) or (N, C, B)")
    _check_real(f_m, "f_m")
    shape = tuple(f_m.shape)
    if shape == (N, C, 1, 1, 1):
        form = "channel"
    elif shape == full:
        form = "full"
    elif f_m.ndim == 3 and shape[:2] == (N, C) and shape[2] >= 1:
        form = "band"
    else:
        raise ValueError(
            f"f_m: expected shape (N, C, 1, 1, 1) = {(N, C, 1, 1, 1)}, (N, C, D, H, Wf) = {full} or "
            f"(N, C, B) = ({N}, {C}, B) with band_index, got {shape}"
        )
    if form == "band":
        if band_index is None:
            raise ValueError(f"band_index: a banded f_m of shape {shape} needs band_index of shape {(D, H, Wf)}")
        band_index = _check_tensor(band_index, "band_index", "(D, H, Wf)")
        if band_index.dtype.is_floating_point or band_index.dtype.is_complex or band_index.dtype == torch.bool:
            raise TypeError(f"band_index: expected an integer tensor, got dtype {band_index.dtype}")
        if tuple(band_index.shape) != (D, H, Wf):
            raise ValueError(f"band_index: expected shape {(D, H, Wf)} (X's D, H, Wf), got {tuple(band_index.shape)}")
    elif band_index is not None:
        raise ValueError(f"band_index: only used with a banded f_m (N, C, B), but f_m has shape {shape}")
    for name, t in (("f_m", f_m), ("f_e", f_e), ("alpha", alpha), ("beta", beta), ("band_index", band_index)):
        if t is not None and t.device != X.device:
            raise ValueError(f"{name}: expected a tensor on X's device {X.device}, got {t.device}")
    return form


_SIGNATURES: dict[tuple, str] = {}  # validated (shape, dtype, device) signatures -> form of f_m
_MAX_SIGNATURES = 4096


def _modulation_form(
    X: object, f_m: object, f_e: object, alpha: object, beta: object, band_index: object, compiling: bool
) -> str:
    """:func:`_check_modulation_args`, cached per signature in eager mode (traced as is when compiling)."""
    if compiling:
        return _check_modulation_args(X, f_m, f_e, alpha, beta, band_index)
    try:
        key = (
            X.shape, X.dtype, X.device, f_m.shape, f_m.dtype, f_m.device, f_e.shape, f_e.dtype, f_e.device,
            alpha.shape, alpha.dtype, alpha.device, beta.shape, beta.dtype, beta.device,
            None if band_index is None else (band_index.shape, band_index.dtype, band_index.device),
        )  # fmt: skip
    except AttributeError:  # not tensors: the full check names the argument
        return _check_modulation_args(X, f_m, f_e, alpha, beta, band_index)
    form = _SIGNATURES.get(key)
    if form is None:
        form = _check_modulation_args(X, f_m, f_e, alpha, beta, band_index)
        if len(_SIGNATURES) >= _MAX_SIGNATURES:
            _SIGNATURES.clear()
        _SIGNATURES[key] = form
    return form


def _check_band_range(band_index: torch.Tensor, num_bands: int) -> None:
    """Values in ``[0, num_bands)``; on CPU always, elsewhere with SPECTRAL3D_CHECK_FINITE (kernels clamp)."""
    if torch.compiler.is_compiling() or band_index.numel() == 0:
        return
    from torch._subclasses.fake_tensor import is_fake

    if is_fake(band_index) or band_index.device.type == "meta":
        return
    if band_index.device.type != "cpu" and not finite_checks_enabled():
        return
    lo, hi = int(band_index.min()), int(band_index.max())
    if lo < 0 or hi >= num_bands:
        raise ValueError(
            f"band_index: expected values in [0, {num_bands}) (B = f_m.shape[2]), got values in [{lo}, {hi}]"
        )


# --------------------------------------------------------------------------------------------
# PyTorch formulas: the differentiable oracles and the explicit forward/backward of the op
# --------------------------------------------------------------------------------------------


def _per_channel(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype).view(1, -1, 1, 1, 1)


def _expand_fm(f_m: torch.Tensor, band_index: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``f_m`` broadcastable to ``X``: per-channel and full as they are, banded gathered per bin."""
    f_m = f_m.to(dtype)
    if f_m.ndim == 3:
        return f_m[:, :, band_index.long()]
    return f_m


def spectral_modulation_reference(
    X: torch.Tensor,
    f_m: torch.Tensor,
    f_e: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    band_index: torch.Tensor | None = None,
    *,
    validate: bool = True,
) -> torch.Tensor:
    """Eq. 2 in plain differentiable PyTorch, the oracle of :func:`spectral_modulation` (same arguments and result;
    ``validate``: check the arguments first, the op's own paths pass ``False``).

    Example::

        >>> X = torch.randn(2, 4, 5, 6, 4, dtype=torch.complex64)
        >>> f_m, f_e = torch.rand(2, 4, 1, 1, 1), torch.randn(2, 4, 5, 6, 4)
        >>> spectral_modulation_reference(X, f_m, f_e, torch.ones(4), torch.zeros(4)).shape
        torch.Size([2, 4, 5, 6, 4])
    """
    if validate and _check_modulation_args(X, f_m, f_e, alpha, beta, band_index) == "band":
        _check_band_range(band_index, f_m.shape[2])
    rdt = X.real.dtype
    g = 1 + _per_channel(alpha, rdt) * (_expand_fm(f_m, band_index, rdt) - 1)
    return torch.complex(X.real * g + _per_channel(beta, rdt) * f_e.to(rdt) * X.abs(), X.imag * g)


def spectral_features_reference(X: torch.Tensor) -> torch.Tensor:
    """``concat[Re X, Im X, |X|]`` in plain differentiable PyTorch, the oracle of :func:`spectral_features`.

    Example::

        >>> spectral_features_reference(torch.randn(1, 2, 3, 3, 2, dtype=torch.complex64)).shape
        torch.Size([1, 6, 3, 3, 2])
    """
    _check_spectrum(X)
    return _features_forward_torch(X)


def _features_forward_torch(X):
    return torch.cat([X.real, X.imag, X.abs()], dim=1)


def _safe_inverse(phi: torch.Tensor) -> torch.Tensor:
    """``1 / phi`` where ``phi > 0``, else 0 (the derivative of |X| at 0 is taken as 0)."""
    nonzero = phi > 0
    return torch.where(nonzero, 1 / torch.where(nonzero, phi, torch.ones_like(phi)), torch.zeros_like(phi))


def _band_sum(s: torch.Tensor, band_index: torch.Tensor, num_bands: int) -> torch.Tensor:
    """Segmented sum ``(N, C, D, H, Wf) -> (N, C, B)`` per band (one-hot matmul: deterministic, unlike index_add_)."""
    one_hot = torch.nn.functional.one_hot(band_index.reshape(-1).long(), num_bands).to(s.dtype)
    return s.flatten(2) @ one_hot


def _modulation_backward_torch(grad, X, f_m, f_e, alpha, beta, band_index):
    rdt = X.real.dtype
    gR, gI = grad.real, grad.imag
    Xr, Xi = X.real, X.imag
    phi = X.abs()
    inv = _safe_inverse(phi)
    a, b, fe = _per_channel(alpha, rdt), _per_channel(beta, rdt), f_e.to(rdt)
    fm = f_m.to(rdt)
    fm_full = _expand_fm(f_m, band_index, rdt)
    g = 1 + a * (fm_full - 1)
    t = gR * b * fe * inv
    grad_X = torch.complex(gR * g + t * Xr, gI * g + t * Xi)
    grad_fe = gR * b * phi
    grad_beta = (gR * fe * phi).sum(dim=(0, 2, 3, 4))
    s = gR * Xr + gI * Xi
    if f_m.ndim == 3:
        S = _band_sum(s, band_index, f_m.shape[2])
        grad_fm = alpha.to(rdt).view(1, -1, 1) * S
        grad_alpha = ((fm - 1) * S).sum(dim=(0, 2))
    elif f_m.shape[2:] == (1, 1, 1):
        S = s.sum(dim=(2, 3, 4), keepdim=True)
        grad_fm = a * S
        grad_alpha = ((fm - 1) * S).sum(dim=(0, 2, 3, 4))
    else:
        grad_fm = a * s
        grad_alpha = ((fm - 1) * s).sum(dim=(0, 2, 3, 4))
    return (
        grad_X.to(X.dtype),
        grad_fm.to(f_m.dtype),
        grad_fe.to(f_e.dtype),
        grad_alpha.to(alpha.dtype),
        grad_beta.to(beta.dtype),
    )


def _features_backward_torch(grad, X):
    C = X.shape[1]
    rdt = X.real.dtype
    grad = grad.to(rdt)
    g_phi = grad[:, 2 * C :] * _safe_inverse(X.abs())
    return torch.complex(grad[:, :C] + g_phi * X.real, grad[:, C : 2 * C] + g_phi * X.imag)


# --------------------------------------------------------------------------------------------
# kernel selection
# --------------------------------------------------------------------------------------------


def _interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _path(X: torch.Tensor, op: str, mode: str | None = None) -> str:
    """``"triton"`` (wrapped launch, CUDA), ``"interpret"`` (direct launch, CPU) or ``"torch"``."""
    mode = kernel_mode(op) if mode is None else mode
    if mode in ("reference", "autograd") or X.dtype != torch.complex64:
        return "torch"
    if X.device.type == "cuda":
        return "triton"
    if mode == "auto":
        return "torch"
    from torch._subclasses.fake_tensor import is_fake
    from torch._subclasses.functional_tensor import FunctionalTensor

    if is_fake(X) or isinstance(X, FunctionalTensor) or X.device.type == "meta":
        return "torch"  # shape propagation only: the PyTorch formulas give the same metadata
    if X.device.type == "cpu" and _interpreter_enabled():
        return "interpret"
    raise RuntimeError(
        f"{op}: kernel mode 'triton' needs a CUDA tensor, or TRITON_INTERPRET=1 set at process "
        f"start for CPU tensors; got a tensor on {X.device} without the interpreter"
    )


def _launchers():
    from spectral3d.ops._triton import launchers

    return launchers


def _plain_eager(X: torch.Tensor) -> bool:
    """Eager PyTorch on a plain tensor: nothing traces, transforms or watches the dispatcher."""
    return (
        type(X) is torch.Tensor
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch.jit.is_tracing()
        and torch._C._functorch.peek_interpreter_stack() is None
    )


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class _ModulationFunction(torch.autograd.Function):
    """The eager fast path of ``spectral_modulation``: its launchers, without the custom-op dispatcher."""

    @staticmethod
    def forward(ctx, X, f_m, f_e, alpha, beta, band_index):
        ctx.save_for_backward(X, f_m, f_e, alpha, beta)
        ctx.band_index = band_index
        return _launchers().modulation_forward(X, f_m, f_e, alpha, beta, band_index, wrap=False)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        X, f_m, f_e, alpha, beta = ctx.saved_tensors
        return (*_launchers().modulation_backward(grad, X, f_m, f_e, alpha, beta, ctx.band_index, wrap=False), None)


class _FeaturesFunction(torch.autograd.Function):
    """The eager fast path of ``spectral_features``."""

    @staticmethod
    def forward(ctx, X):
        ctx.save_for_backward(X)
        return _launchers().features_forward(X, wrap=False)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (X,) = ctx.saved_tensors
        return _launchers().features_backward(grad, X, wrap=False)


# --------------------------------------------------------------------------------------------
# custom ops
# --------------------------------------------------------------------------------------------
# The annotations are real (no ``from __future__ import annotations`` in this module): torch 2.11's
# ``triton_op`` infers the schema from them even when ``schema=`` is given.
Tensor = torch.Tensor
OptTensor = Optional[torch.Tensor]  # noqa: UP045 - infer_schema of older torch reads typing.Optional only


@torch.library.triton_op(
    "spectral3d::spectral_modulation",
    mutates_args=(),
    schema="(Tensor X, Tensor f_m, Tensor f_e, Tensor alpha, Tensor beta, Tensor? band_index=None) -> Tensor",
)
def _modulation_op(
    X: Tensor, f_m: Tensor, f_e: Tensor, alpha: Tensor, beta: Tensor, band_index: OptTensor = None
) -> Tensor:
    path = _path(X, "spectral_modulation")
    if path == "torch":
        return spectral_modulation_reference(X, f_m, f_e, alpha, beta, band_index, validate=False)
    return _launchers().modulation_forward(X, f_m, f_e, alpha, beta, band_index, wrap=path == "triton")


@torch.library.triton_op(
    "spectral3d::spectral_modulation_backward",
    mutates_args=(),
    schema=(
        "(Tensor grad, Tensor X, Tensor f_m, Tensor f_e, Tensor alpha, Tensor beta, Tensor? band_index)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
)
def _modulation_backward_op(
    grad: Tensor, X: Tensor, f_m: Tensor, f_e: Tensor, alpha: Tensor, beta: Tensor, band_index: OptTensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    path = _path(X, "spectral_modulation")
    if path == "torch":
        return _modulation_backward_torch(grad, X, f_m, f_e, alpha, beta, band_index)
    return _launchers().modulation_backward(grad, X, f_m, f_e, alpha, beta, band_index, wrap=path == "triton")


@torch.library.triton_op("spectral3d::spectral_features", mutates_args=(), schema="(Tensor X) -> Tensor")
def _features_op(X: Tensor) -> Tensor:
    path = _path(X, "spectral_features")
    if path == "torch":
        return _features_forward_torch(X)
    return _launchers().features_forward(X, wrap=path == "triton")


@torch.library.triton_op(
    "spectral3d::spectral_features_backward", mutates_args=(), schema="(Tensor grad, Tensor X) -> Tensor"
)
def _features_backward_op(grad: Tensor, X: Tensor) -> Tensor:
    path = _path(X, "spectral_features")
    if path == "torch":
        return _features_backward_torch(grad, X)
    return _launchers().features_backward(grad, X, wrap=path == "triton")


@_modulation_op.register_fake
def _(X, f_m, f_e, alpha, beta, band_index=None):
    return torch.empty_like(X)


@_modulation_backward_op.register_fake
def _(grad, X, f_m, f_e, alpha, beta, band_index):
    return (
        torch.empty_like(X),
        torch.empty_like(f_m),
        torch.empty_like(f_e),
        torch.empty_like(alpha),
        torch.empty_like(beta),
    )


@_features_op.register_fake
def _(X):
    N, C, D, H, Wf = X.shape
    return X.new_empty((N, 3 * C, D, H, Wf), dtype=X.real.dtype)


@_features_backward_op.register_fake
def _(grad, X):
    return torch.empty_like(X)


def _modulation_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:5])
    ctx.band_index = inputs[5]


def _modulation_backward(ctx, grad):
    X, f_m, f_e, alpha, beta = ctx.saved_tensors
    grads = torch.ops.spectral3d.spectral_modulation_backward(grad, X, f_m, f_e, alpha, beta, ctx.band_index)
    return (*grads, None)


def _features_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])


def _features_backward(ctx, grad):
    (X,) = ctx.saved_tensors
    return torch.ops.spectral3d.spectral_features_backward(grad, X)


_modulation_op.register_autograd(_modulation_backward, setup_context=_modulation_setup_context)
_features_op.register_autograd(_features_backward, setup_context=_features_setup_context)


@register_flop_formula(torch.ops.spectral3d.spectral_modulation)
def _modulation_flops(X_shape, *args, out_shape=None, **kwargs) -> int:
    return MODULATION_FLOPS_PER_ELEMENT * math.prod(X_shape)


@register_flop_formula(torch.ops.spectral3d.spectral_modulation_backward)
def _modulation_backward_flops(grad_shape, *args, out_shape=None, **kwargs) -> int:
    return MODULATION_BACKWARD_FLOPS_PER_ELEMENT * math.prod(grad_shape)


@register_flop_formula(torch.ops.spectral3d.spectral_features)
def _features_flops(X_shape, *args, out_shape=None, **kwargs) -> int:
    return FEATURES_FLOPS_PER_ELEMENT * math.prod(X_shape)


@register_flop_formula(torch.ops.spectral3d.spectral_features_backward)
def _features_backward_flops(grad_shape, X_shape, *args, out_shape=None, **kwargs) -> int:
    return FEATURES_BACKWARD_FLOPS_PER_ELEMENT * math.prod(X_shape)


# --------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------


def spectral_modulation(
    X: torch.Tensor,
    f_m: torch.Tensor,
    f_e: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    band_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 2, ``R' = R (1 + alpha (f_m - 1)) + beta f_e |X|``, ``I' = I (1 + alpha (f_m - 1))``: the custom op
    ``torch.ops.spectral3d.spectral_modulation``; shapes, backward and paths: module docstring.

    Args:
        X: complex64/complex128 spectrum ``(N, C, D, H, Wf)``; ``f_e``: real, same shape; ``alpha``, ``beta``: ``(C,)``.
        f_m: gain ``(N, C, 1, 1, 1)``, ``(N, C, D, H, Wf)`` or ``(N, C, B)`` with ``band_index`` ``(D, H, Wf)``.

    Returns ``X``'s shape and dtype. ``TypeError``/``ValueError`` name a bad dtype, shape, device or band index
    (indices and NaN/Inf in ``X`` off CPU only with ``SPECTRAL3D_CHECK_FINITE``).

    Example::

        >>> from spectral3d.layers.samb import band_index
        >>> X = torch.fft.rfftn(torch.randn(2, 4, 6, 6, 6), dim=(-3, -2, -1), norm="ortho")
        >>> f_m, f_e = 2 * torch.rand(2, 4, 8), torch.randn(2, 4, 6, 6, 4)
        >>> Y = spectral_modulation(X, f_m, f_e, torch.ones(4), torch.zeros(4), band_index((6, 6, 6), 8))
        >>> Y.shape, Y.dtype
        (torch.Size([2, 4, 6, 6, 4]), torch.complex64)
    """
    compiling = torch.compiler.is_compiling()
    form = _modulation_form(X, f_m, f_e, alpha, beta, band_index, compiling)
    mode = kernel_mode("spectral_modulation")
    if compiling:
        if mode == "autograd":
            return spectral_modulation_reference(X, f_m, f_e, alpha, beta, band_index, validate=False)
        return torch.ops.spectral3d.spectral_modulation(X, f_m, f_e, alpha, beta, band_index)
    path = _path(X, "spectral_modulation", mode)
    if form == "band" and (path == "torch" or finite_checks_enabled()):
        _check_band_range(band_index, f_m.shape[2])
    check_finite(X, "X")
    if mode == "autograd":
        return spectral_modulation_reference(X, f_m, f_e, alpha, beta, band_index, validate=False)
    if path != "torch" and _plain_eager(X):
        if _needs_grad(X, f_m, f_e, alpha, beta):
            return _ModulationFunction.apply(X, f_m, f_e, alpha, beta, band_index)
        return _launchers().modulation_forward(X, f_m, f_e, alpha, beta, band_index, wrap=False)
    return torch.ops.spectral3d.spectral_modulation(X, f_m, f_e, alpha, beta, band_index)


def spectral_features(X: torch.Tensor) -> torch.Tensor:
    """``concat[Re X, Im X, |X|]``: complex ``(N, C, D, H, Wf)`` → ``(N, 3C, D, H, Wf)`` in ``X``'s real dtype
    (custom op ``torch.ops.spectral3d.spectral_features``; ``d|X|/dX = X / |X|``, 0 at 0).

    Example::

        >>> spectral_features(torch.randn(2, 4, 5, 5, 3, dtype=torch.complex64)).shape
        torch.Size([2, 12, 5, 5, 3])
    """
    _check_spectrum(X)
    mode = kernel_mode("spectral_features")
    if torch.compiler.is_compiling():
        return _features_forward_torch(X) if mode == "autograd" else torch.ops.spectral3d.spectral_features(X)
    check_finite(X, "X")
    if mode == "autograd":
        return _features_forward_torch(X)
    if _path(X, "spectral_features", mode) != "torch" and _plain_eager(X):
        if _needs_grad(X):
            return _FeaturesFunction.apply(X)
        return _launchers().features_forward(X, wrap=False)
    return torch.ops.spectral3d.spectral_features(X)
