"""Depthwise 3-D convolution, stride 1, zero "same" padding, as a ``torch.library`` custom op.

``x: (N, C, D, H, W)``, ``weight: (C, 1, kd, kh, kw)`` with odd sizes, ``p = k // 2`` per axis::

    y[n, c, d, h, w] = bias[c] + sum_{i, j, k} weight[c, 0, i, j, k] * x[n, c, d + i - pd, h + j - ph, w + k - pw]
    dx = depthwise_conv3d(dy, weight.flip(2, 3, 4))
    dweight[c, 0, i, j, k] = sum_{n, d, h, w} dy[n, c, d, h, w] * x[n, c, d + i - pd, h + j - ph, w + k - pw]
    dbias[c] = sum_{n, d, h, w} dy[n, c, d, h, w]

i.e. ``F.conv3d(x, weight, bias, padding=(pd, ph, pw), groups=C)``. Paths (:func:`spectral3d.ops.use_kernels`):
Triton on CUDA for fp32/bf16/fp16 and kernels up to 7 per axis (CPU: ``TRITON_INTERPRET=1``), else ``F.conv3d``.
Output in ``x``'s memory format. FLOPs ``2 N C D H W kd kh kw`` forward and per gradient *(ours: torch's
``conv_backward_flop`` counts the grouped weight gradient C times)*.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

from spectral3d.ops._switch import kernel_mode, kernel_path

__all__ = ["MAX_KERNEL", "depthwise_conv3d", "depthwise_conv3d_reference"]

Tensor = torch.Tensor
OptTensor = Optional[torch.Tensor]  # noqa: UP045 - infer_schema of older torch reads typing.Optional only


# --------------------------------------------------------------------------------------------
# validation, layout, PyTorch implementation
# --------------------------------------------------------------------------------------------
def _check_args(x: object, weight: object, bias: object) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor of shape (N, C, D, H, W), got {type(x).__name__}")
    if x.ndim != 5:
        raise ValueError(f"x: expected a 5-D tensor (N, C, D, H, W), got shape {tuple(x.shape)} ({x.ndim}-D)")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
    C = x.shape[1]
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a torch.Tensor of shape (C, 1, kd, kh, kw), got {type(weight).__name__}")
    if weight.ndim != 5 or weight.shape[0] != C or weight.shape[1] != 1:
        raise ValueError(
            f"weight: expected shape (C, 1, kd, kh, kw) with C = {C} (x's channels), got {tuple(weight.shape)}"
        )
    for axis, k in zip("DHW", weight.shape[2:]):
        if k % 2 != 1:
            raise ValueError(f"weight: expected an odd kernel size on axis {axis} (same-size output), got {k}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias: expected a torch.Tensor of shape ({C},) or None, got {type(bias).__name__}")
        if tuple(bias.shape) != (C,):
            raise ValueError(f"bias: expected shape ({C},) (one value per channel of x), got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: expected a tensor on x's device {x.device}, got {t.device}")


def _padding(weight: torch.Tensor) -> list[int]:
    return [k // 2 for k in weight.shape[2:]]


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """The output's format: channels-last for a non-contiguous ``x`` with a unit channel stride."""
    if not x.is_contiguous() and x.shape[1] > 1 and x.stride(1) == 1:
        return torch.channels_last_3d
    return torch.contiguous_format


def depthwise_conv3d_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, padding=k // 2, groups=C)``: the oracle of :func:`depthwise_conv3d`.

    Example::

        >>> depthwise_conv3d_reference(torch.randn(2, 4, 5, 6, 7), torch.randn(4, 1, 3, 3, 3)).shape
        torch.Size([2, 4, 5, 6, 7])
    """
    _check_args(x, weight, bias)
    return F.conv3d(x, weight, bias, padding=_padding(weight), groups=x.shape[1])


def _forward_torch(x: Tensor, weight: Tensor, bias: OptTensor) -> Tensor:
    y = F.conv3d(x, weight, bias, padding=_padding(weight), groups=x.shape[1])
    return y.contiguous(memory_format=_memory_format(x))


def _backward_torch(
    grad: Tensor, x: Tensor, weight: Tensor, input_grad: bool, weight_grad: bool, bias_grad: bool
) -> tuple[Tensor, Tensor, Tensor]:
    C = x.shape[1]
    dx, dw, db = torch.ops.aten.convolution_backward(
        grad, x, weight, [C] if bias_grad else None, [1, 1, 1], _padding(weight), [1, 1, 1],
        False, [0, 0, 0], C, [input_grad, weight_grad, bias_grad],
    )  # fmt: skip
    return (
        dx.contiguous(memory_format=_memory_format(x)) if input_grad else x.new_empty(0),
        dw.contiguous() if weight_grad else x.new_empty(0),
        db if bias_grad else x.new_empty(0),
    )


# --------------------------------------------------------------------------------------------
# kernel selection
# --------------------------------------------------------------------------------------------
MAX_KERNEL = 7  # per axis, for the Triton kernels
_INT32 = 2**31 - 1


def _kernel_covers(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """fp32/bf16/fp16 of one dtype, kernels up to 7, a non-empty input, 32-bit offsets within a sample."""
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16) or weight.dtype != x.dtype:
        return False
    if (bias is not None and bias.dtype != x.dtype) or max(weight.shape[2:]) > MAX_KERNEL or x.numel() == 0:
        return False
    span = sum((s - 1) * st for s, st in zip(x.shape[1:], x.stride()[1:]))
    return math.prod(x.shape[1:]) <= _INT32 and span <= _INT32 and x.shape[1] <= 65535


def _path(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> str:
    """``"triton"`` (wrapped launch, CUDA), ``"interpret"`` (direct launch, CPU) or ``"torch"``."""
    return kernel_path("depthwise_conv3d", x, _kernel_covers(x, weight, bias))


def _kernels():
    from spectral3d.ops._triton import depthwise

    return depthwise


# --------------------------------------------------------------------------------------------
# custom ops
# --------------------------------------------------------------------------------------------
@torch.library.triton_op(
    "spectral3d::depthwise_conv3d", mutates_args=(), schema="(Tensor x, Tensor weight, Tensor? bias) -> Tensor"
)
def _conv_op(x: Tensor, weight: Tensor, bias: OptTensor) -> Tensor:
    path = _path(x, weight, bias)
    if path == "torch":
        return _forward_torch(x, weight, bias)
    return _kernels().forward(x, weight, bias, wrap=path == "triton")


@torch.library.triton_op(
    "spectral3d::depthwise_conv3d_backward",
    mutates_args=(),
    schema=(
        "(Tensor grad, Tensor x, Tensor weight, bool input_grad, bool weight_grad, bool bias_grad)"
        " -> (Tensor, Tensor, Tensor)"
    ),
)
def _conv_backward_op(
    grad: Tensor, x: Tensor, weight: Tensor, input_grad: bool, weight_grad: bool, bias_grad: bool
) -> tuple[Tensor, Tensor, Tensor]:
    path = _path(x, weight, None)
    if path == "torch" or grad.dtype != x.dtype:
        return _backward_torch(grad, x, weight, input_grad, weight_grad, bias_grad)
    return _kernels().backward(grad, x, weight, input_grad, weight_grad, bias_grad, wrap=path == "triton")


@_conv_op.register_fake
def _(x, weight, bias):
    return torch.empty_like(x, memory_format=_memory_format(x))


@_conv_backward_op.register_fake
def _(grad, x, weight, input_grad, weight_grad, bias_grad):
    return (
        torch.empty_like(x, memory_format=_memory_format(x)) if input_grad else x.new_empty(0),
        torch.empty_like(weight, memory_format=torch.contiguous_format) if weight_grad else x.new_empty(0),
        grad.new_empty((x.shape[1],)) if bias_grad else x.new_empty(0),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_b = need_b and ctx.bias_dtype is not None
    dx, dw, db = torch.ops.spectral3d.depthwise_conv3d_backward(grad, x, weight, need_x, need_w, need_b)
    if need_b and db.dtype != ctx.bias_dtype:
        db = db.to(ctx.bias_dtype)
    return dx if need_x else None, dw if need_w else None, db if need_b else None


def _setup_backward_context(ctx, inputs, output) -> None:
    grad, x, weight, input_grad, weight_grad, bias_grad = inputs
    ctx.save_for_backward(grad, x, weight)
    ctx.outputs = (input_grad, weight_grad, bias_grad)


def _double_backward(ctx, gg_x, gg_w, gg_b):
    """Double backward: ``<gg_x, dx> = <conv(gg_x, w), dy>``, ``<gg_w, dw> = <conv(x, gg_w), dy>``,
    ``<gg_b, db> = <gg_b, sum dy>``."""
    grad, x, weight = ctx.saved_tensors
    input_grad, weight_grad, bias_grad = ctx.outputs
    need_grad, need_x, need_w = ctx.needs_input_grad[:3]
    conv, conv_backward = torch.ops.spectral3d.depthwise_conv3d, torch.ops.spectral3d.depthwise_conv3d_backward
    g_grad = g_x = g_w = None
    if input_grad and gg_x is not None:
        g_grad = conv(gg_x, weight, None)
        if need_w:
            g_w = conv_backward(grad, gg_x, weight, False, True, False)[1]
    if weight_grad and gg_w is not None:
        term = conv(x, gg_w.to(x.dtype), None)
        g_grad = term if g_grad is None else g_grad + term
        if need_x:
            g_x = conv_backward(grad, x, gg_w.to(x.dtype), True, False, False)[0]
    if bias_grad and gg_b is not None:
        term = gg_b.to(grad.dtype).view(1, -1, 1, 1, 1).expand_as(grad)
        g_grad = term if g_grad is None else g_grad + term
    return (g_grad if need_grad else None), g_x, g_w, None, None, None


_conv_op.register_autograd(_backward, setup_context=_setup_context)
_conv_backward_op.register_autograd(_double_backward, setup_context=_setup_backward_context)


@register_flop_formula(torch.ops.spectral3d.depthwise_conv3d)
def _conv_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(list(x_shape), list(w_shape), list(x_shape))


@register_flop_formula(torch.ops.spectral3d.depthwise_conv3d_backward)
def _conv_backward_flops(grad_shape, x_shape, w_shape, input_grad, weight_grad, *args, out_shape=None, **kwargs) -> int:
    once = conv_flop_count(list(x_shape), list(w_shape), list(x_shape))
    return once * (int(bool(input_grad)) + int(bool(weight_grad)))


def _autocast_kernel(device_type: str):
    """Autocast rule of ``F.conv3d``: floating inputs, float64 excepted, to the autocast dtype."""
    key = getattr(torch._C.DispatchKey, "Autocast" + ("CUDA" if device_type == "cuda" else "CPU"))

    def cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        if t is None or not t.is_floating_point() or t.dtype == torch.float64:
            return t
        return t.to(dtype)

    def kernel(_keyset, x, weight, bias):
        dtype = torch.get_autocast_dtype(device_type)
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            return torch.ops.spectral3d.depthwise_conv3d.default(cast(x, dtype), cast(weight, dtype), cast(bias, dtype))

    return kernel


_lib = torch.library.Library("spectral3d", "FRAGMENT")  # holds the autocast registrations
for _device in ("cpu", "cuda"):
    _lib.impl("depthwise_conv3d", _autocast_kernel(_device), "Autocast" + _device.upper(), with_keyset=True)


# --------------------------------------------------------------------------------------------
# public function
# --------------------------------------------------------------------------------------------
def depthwise_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise 3-D conv, stride 1, zero "same" padding: the custom op ``torch.ops.spectral3d.depthwise_conv3d``.

    Args:
        x, weight, bias: ``(N, C, D, H, W)`` any float dtype and memory format; ``(C, 1, kd, kh, kw)`` odd sizes,
            ``x``'s dtype; ``(C,)`` or ``None``. Returns ``x``'s shape, dtype and memory format.

    ``TypeError``/``ValueError`` name a non-tensor, non-floating ``x``, bad shape, even kernel or mixed devices.

    Example::

        >>> x = torch.randn(2, 8, 5, 6, 7).to(memory_format=torch.channels_last_3d)
        >>> y = depthwise_conv3d(x, torch.randn(8, 1, 1, 7, 7), torch.zeros(8))
        >>> y.shape, y.is_contiguous(memory_format=torch.channels_last_3d)
        (torch.Size([2, 8, 5, 6, 7]), True)
    """
    _check_args(x, weight, bias)
    if kernel_mode("depthwise_conv3d") == "autograd":
        return F.conv3d(x, weight, bias, padding=_padding(weight), groups=x.shape[1])
    return torch.ops.spectral3d.depthwise_conv3d(x, weight, bias)
