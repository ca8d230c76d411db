"""FLOP and MAC counting that sees FFTs, SDPA on CPU and custom ops (DESIGN.md §10).

One multiply-add = 2 FLOPs (``FlopCounterMode``'s unit), ``MACs = FLOPs / 2`` (fvcore's and the paper's unit).
matmul/linear/conv/SDPA: torch's formulas. Registered on import (never replacing one) for the aten ops dispatch sees:

- FFTs (FFTW's convention), per signal of ``n`` points (product of transformed sizes) times the batch (the others):
  ``_fft_r2c``, ``_fft_c2r`` ``2.5·n·log2(n)`` (``n`` from the real sizes: ``c2r``'s *output*), ``_fft_c2c``
  ``5·n·log2(n)``. SAMB's ``rfftn → irfftn`` over ``(D, H, W)`` of ``(N, C, D, H, W)``: ``2·N·C·2.5·n·log2(n)``.
- *(ours)* CPU SDPA ``aten._scaled_dot_product_flash_attention_for_cpu`` (+ backward): torch's ``4·B·H·L·S·E``.
- ``torch.ops.spectral3d.*``: formulas registered next to the ops.
- 3D pooling only with ``count_pooling=True`` *(ours: off, as fvcore and the paper)*: one FLOP per window element
  per output element; one per input element for adaptive pooling.

Not counted (as fvcore): elementwise ops, reductions, norms; they are listed in :attr:`FlopReport.uncounted`.
:func:`fvcore_macs` cross-checks (fvcore + FFT/depthwise handles; *(ours)* norm/2D handles off by default).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "FlopReport",
    "count",
    "count_model",
    "fft_flops",
    "fvcore_macs",
    "model_inputs",
    "register_flop_formulas",
]

aten = torch.ops.aten

_R2C_FACTOR = 2.5
_C2C_FACTOR = 5.0

# Ops that move or create data without arithmetic: not listed as "uncounted".
_NO_ARITHMETIC = frozenset(
    {
        "aten.detach",
        "aten._unsafe_view",
        "aten.alias",
        "aten.lift_fresh",
        "aten.empty",
        "aten.empty_like",
        "aten.empty_strided",
        "aten.new_empty",
        "aten.new_empty_strided",
        "aten.zeros",
        "aten.zeros_like",
        "aten.new_zeros",
        "aten.ones",
        "aten.ones_like",
        "aten.new_ones",
        "aten.full",
        "aten.full_like",
        "aten.new_full",
        "aten.scalar_tensor",
        "aten.arange",
        "aten._to_copy",
        "aten.copy_",
        "aten.clone",
        "aten.contiguous",
        "aten._local_scalar_dense",
        "prim.device",
    }
)


# --------------------------------------------------------------------------------------------
# formulas
# --------------------------------------------------------------------------------------------
def fft_flops(shape: Sequence[int], dim: Sequence[int], kind: str) -> int:
    """``round(batch · factor · n · log2(n))``, ``n = prod(shape[d] for d in dim)``, ``batch = prod(shape) / n``.
    ``shape``: the *real* signal's (``rfftn`` input, ``irfftn`` output) for ``kind`` ``"r2c"``/``"c2r"`` (factor 2.5),
    else complex (``"c2c"``, factor 5); ``dim``: the transformed axes. Example::

        >>> fft_flops((2, 3, 8, 8, 8), dim=(-3, -2, -1), kind="r2c")  # 6 signals of 512 points
        69120
    """
    if kind not in ("r2c", "c2r", "c2c"):
        raise ValueError(f"kind: expected 'r2c', 'c2r' or 'c2c', got {kind!r}")
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    axes = set()
    for d in dim:
        if not -ndim <= d < ndim:
            raise ValueError(f"dim: axis {d} is out of range for a {ndim}-D signal of shape {shape}")
        axes.add(d % ndim)
    n = math.prod(shape[a] for a in axes)
    batch = math.prod(s for a, s in enumerate(shape) if a not in axes)
    if n <= 1 or batch == 0:
        return 0
    factor = _C2C_FACTOR if kind == "c2c" else _R2C_FACTOR
    return round(batch * factor * n * math.log2(n))


def _fft_r2c_flop(input_shape, dim, normalization, onesided, *args, out_shape=None, **kwargs) -> int:
    return fft_flops(input_shape, dim, "r2c")


def _fft_c2r_flop(input_shape, dim, normalization, last_dim_size, *args, out_shape=None, **kwargs) -> int:
    return fft_flops(out_shape, dim, "c2r")  # n is the real output length, not the half spectrum


def _fft_c2c_flop(input_shape, dim, normalization, forward, *args, out_shape=None, **kwargs) -> int:
    return fft_flops(input_shape, dim, "c2c")


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _window_pool_flop(input_shape, kernel_size, *args, out_shape=None, **kwargs) -> int:
    out = out_shape[0] if isinstance(out_shape, (tuple, list)) and not isinstance(out_shape[0], int) else out_shape
    k = [int(s) for s in kernel_size] if len(kernel_size) > 1 else [int(kernel_size[0])] * 3
    return math.prod(out) * math.prod(k)


def _adaptive_pool_flop(input_shape, *args, out_shape=None, **kwargs) -> int:
    return math.prod(input_shape)


def _optional_ops(names: Sequence[str]) -> list[Any]:
    """The aten packets among ``names`` that this torch build has."""
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


def _base_formulas() -> dict[Any, Callable[..., int]]:
    formulas: dict[Any, Callable[..., int]] = {
        aten._fft_r2c: _fft_r2c_flop,
        aten._fft_c2r: _fft_c2r_flop,
        aten._fft_c2c: _fft_c2c_flop,
    }
    for op in _optional_ops(["_scaled_dot_product_flash_attention_for_cpu"]):
        formulas[op] = _sdpa_cpu_flop
    for op in _optional_ops(["_scaled_dot_product_flash_attention_for_cpu_backward"]):
        formulas[op] = _sdpa_cpu_backward_flop
    return formulas


def _pooling_formulas() -> dict[Any, Callable[..., int]]:
    formulas: dict[Any, Callable[..., int]] = {}
    for op in _optional_ops(["max_pool3d_with_indices", "avg_pool3d"]):
        formulas[op] = _window_pool_flop
    for op in _optional_ops(["adaptive_max_pool3d", "_adaptive_avg_pool3d"]):
        formulas[op] = _adaptive_pool_flop
    return formulas


def register_flop_formulas() -> list[str]:
    """Register the FFT and CPU-SDPA formulas into torch's FLOP registry; returns the ops this call added.
    Done on import; an op with a formula is left alone. Example::

        >>> register_flop_formulas()  # already done on import
        []
    """
    added = []
    for op, formula in _base_formulas().items():
        if op not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(op)(formula)
            added.append(str(op))
    return added


register_flop_formulas()


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------
def _si(value: float) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= div:
            return f"{value / div:.3f} {suffix}"
    return f"{value:.0f} "


@dataclass
class FlopReport:
    """What :func:`count` measured (1 multiply-add = 2 FLOPs).

    Example::

        >>> count(nn.Conv3d(1, 2, 3), torch.randn(1, 1, 5, 5, 5, device="meta")).macs
        1458.0
    """

    flops: int
    by_op: dict[str, int] = field(default_factory=dict)  # "aten.convolution", "aten._fft_r2c", ... -> FLOPs
    by_module: dict[str, dict[str, int]] = field(default_factory=dict)  # "<RootClass>.<qualified.name>" -> by_op
    uncounted: dict[str, int] = field(default_factory=dict)  # ops run without a formula -> calls (no views)
    params: int | None = None  # None for a plain function
    inputs: list[tuple[int, ...]] = field(default_factory=list)  # shapes of the tensor inputs

    @property
    def macs(self) -> float:
        """Multiply-accumulates, ``flops / 2``."""
        return self.flops / 2

    def module_flops(self, depth: int | None = None) -> dict[str, int]:
        """Total FLOPs per module, optionally only modules at most ``depth`` levels deep."""
        out = {}
        for name, ops in self.by_module.items():
            if name == "Global" or (depth is not None and name.count(".") + 1 > depth):
                continue
            out[name] = sum(ops.values())
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``flops``, ``macs``, ``params``, ``by_op``, ``uncounted``, ``inputs``)."""
        return {
            "flops": self.flops,
            "macs": self.macs,
            "params": self.params,
            "by_op": dict(self.by_op),
            "uncounted": dict(self.uncounted),
            "inputs": [list(s) for s in self.inputs],
        }

    def table(self, depth: int = 2, max_uncounted: int = 20) -> str:
        """A plain-text report: totals, per op, per module down to ``depth``, uncounted ops."""
        total = max(self.flops, 1)
        lines = [
            f"FLOPs {_si(self.flops)} | MACs {_si(self.macs)}"
            + (f" | params {self.params / 1e6:.3f} M" if self.params is not None else "")
            + (f" | inputs {', '.join(str(tuple(s)) for s in self.inputs)}" if self.inputs else ""),
            "",
            f"{'op':<56}{'FLOPs':>14}{'%':>8}",
        ]
        for op, v in sorted(self.by_op.items(), key=lambda kv: -kv[1]):
            lines.append(f"{op:<56}{_si(v):>14}{100 * v / total:>7.1f}%")
        mods = self.module_flops(depth)
        if mods:
            lines += ["", f"{'module':<56}{'FLOPs':>14}{'%':>8}"]
            for name in sorted(mods):
                indent = "  " * name.count(".")
                lines.append(f"{indent + name:<56}{_si(mods[name]):>14}{100 * mods[name] / total:>7.1f}%")
        if self.uncounted:
            items = sorted(self.uncounted.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{k}×{v}" for k, v in items[:max_uncounted])
            more = f", … {len(items) - max_uncounted} more" if len(items) > max_uncounted else ""
            lines += ["", f"not counted (elementwise, reductions, norms; op×calls): {shown}{more}"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


class _OpRecorder(TorchDispatchMode):
    """Records every op that reaches dispatch (entered outside FlopCounterMode: sees what it ran)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[Any] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not getattr(func, "is_view", False):
            self.calls[func._overloadpacket] += 1
        return func(*args, **(kwargs or {}))


def _tensor_shapes(obj: Any) -> list[tuple[int, ...]]:
    leaves = torch.utils._pytree.tree_leaves(obj)
    return [tuple(t.shape) for t in leaves if isinstance(t, torch.Tensor)]


def count(model: Callable[..., Any], *inputs: Any, count_pooling: bool = False, **kwargs: Any) -> FlopReport:
    """The :class:`FlopReport` of one forward call ``model(*inputs, **kwargs)``, under ``no_grad`` and in eval mode.
    ``model``: an ``nn.Module`` (mode restored) or any callable; ``count_pooling``: see the module docstring. Example::

        >>> m = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4**3, 2))
        >>> count(m, torch.randn(1, 3, 4, 4, 4)).flops == 2 * (8 * 3 * 27 * 4**3) + 2 * (8 * 4**3 * 2)
        True
    """
    if not callable(model):
        raise TypeError(f"model: expected an nn.Module or a callable, got {type(model).__name__}")
    register_flop_formulas()
    mapping = _pooling_formulas() if count_pooling else {}
    # custom_mapping keys overriding nothing torch already counts
    mapping = {k: v for k, v in mapping.items() if k not in flop_counter.flop_registry}
    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with _OpRecorder() as recorder, FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            with torch.no_grad():
                model(*inputs, **kwargs)
    finally:
        if was_training:
            model.train()
    counted = set(counter.flop_registry)
    raw = counter.get_flop_counts()
    by_module = {name: {str(op): int(v) for op, v in ops.items()} for name, ops in raw.items()}
    by_op = dict(by_module.get("Global", {}))
    uncounted = {str(op): n for op, n in recorder.calls.items() if op not in counted and str(op) not in _NO_ARITHMETIC}
    params = sum(p.numel() for p in model.parameters()) if isinstance(model, nn.Module) else None
    return FlopReport(
        flops=int(counter.get_total_flops()),
        by_op=by_op,
        by_module=by_module,
        uncounted=dict(sorted(uncounted.items())),
        params=params,
        inputs=_tensor_shapes((inputs, kwargs)),
    )


# --------------------------------------------------------------------------------------------
# registry models
# --------------------------------------------------------------------------------------------
def model_inputs(
    cfg: dict[str, Any],
    input_size: int | Sequence[int] | None = None,
    batch: int = 1,
    device: torch.device | str = "meta",
    dtype: torch.dtype = torch.float32,
) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    """Random ``(args, kwargs)`` for ``model(*args, **kwargs)``, from a registry model's ``pretrained_cfg``.
    ``x: (N, C, D, H, W)``, plus ``tabular: (N, F)`` when ``cfg["sequences"]`` and ``cfg["num_tabular"] > 0``.
    ``input_size``: ``None`` (the cfg's), ``(C, D, H, W)``, or ``(D, H, W)`` / an int (a cube) with the cfg's ``C``;
    ``dtype``: the volume's. Example::

        >>> args, _ = model_inputs({"input_size": (3, 64, 96, 96)}, input_size=32)
        >>> tuple(args[0].shape)
        (1, 3, 32, 32, 32)
    """
    from backbones3d import is_multi_sequence

    if "input_size" not in cfg:
        raise ValueError(f"cfg: expected an 'input_size' key (C, D, H, W), got keys {sorted(cfg)}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: expected an int ≥ 1, got {batch!r}")
    channels = int(cfg["input_size"][0])
    if input_size is None:
        size = tuple(int(s) for s in cfg["input_size"])
    elif isinstance(input_size, int):
        size = (channels, input_size, input_size, input_size)
    else:
        size = tuple(int(s) for s in input_size)
        if len(size) == 3:
            size = (channels, *size)
    if len(size) != 4 or min(size) < 1:
        raise ValueError(
            f"input_size: expected an int, (D, H, W) or (C, D, H, W) of positive sizes, got {input_size!r}"
        )
    x = torch.randn(batch, *size, device=device, dtype=dtype)
    args: tuple[torch.Tensor, ...] = (x,)
    if is_multi_sequence(cfg) and int(cfg.get("num_tabular", 0) or 0) > 0:
        args = (x, torch.randn(batch, int(cfg["num_tabular"]), device=device, dtype=dtype))
    return args, {}


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build on CPU, each parameter/buffer moved to ``meta`` as it is registered (for constructors that read values)."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def on_meta_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(module, name, param)

    def on_meta_buffer(module: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        register_buffer(module, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = on_meta_parameter, on_meta_buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def _build(name: str, device: torch.device | str, **model_kwargs: Any) -> nn.Module:
    """``backbones3d.create_model`` on ``device``; on ``meta``, falls back to :func:`_parameters_on_meta`."""
    from backbones3d import create_model  # application-level import, kept lazy (DESIGN.md §1)

    try:
        with torch.device(device):
            return create_model(name, **model_kwargs)
    except NotImplementedError:  # "Cannot copy out of meta tensor": the constructor reads values
        if torch.device(device).type != "meta":
            raise
    with _parameters_on_meta():
        return create_model(name, **model_kwargs)


def count_model(
    name_or_model: str | nn.Module,
    input_size: int | Sequence[int] | None = None,
    batch: int = 1,
    device: torch.device | str = "meta",
    count_pooling: bool = False,
    **model_kwargs: Any,
) -> FlopReport:
    """The :class:`FlopReport` of a registry model (built on ``device``, ``meta`` by default) at its cfg input size.
    ``name_or_model``: a registry name (``model_kwargs`` go to ``create_model``) or a model with a ``pretrained_cfg``;
    ``input_size`` as in :func:`model_inputs`; FLOPs scale linearly with ``batch``. Example::

        >>> count_model("resnet50_3d").macs / 1e9  # GMACs, paper-scale on meta: no compute  # doctest: +SKIP
    """
    if isinstance(name_or_model, str):
        model = _build(name_or_model, device, **model_kwargs)
    elif isinstance(name_or_model, nn.Module):
        if model_kwargs:
            raise TypeError(f"model_kwargs: only valid with a registry name, got {sorted(model_kwargs)}")
        model = name_or_model
    else:
        raise TypeError(f"name_or_model: expected a registry name or an nn.Module, got {type(name_or_model).__name__}")
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, dict):
        raise ValueError(f"name_or_model: {type(model).__name__} has no pretrained_cfg dict with an 'input_size'")
    param = next(model.parameters(), None)
    inputs_device = param.device if param is not None else torch.device(device)
    args, kwargs = model_inputs(cfg, input_size, batch, device=inputs_device)
    return count(model, *args, count_pooling=count_pooling, **kwargs)


# --------------------------------------------------------------------------------------------
# fvcore cross-check
# --------------------------------------------------------------------------------------------
# traced op -> (kind, position of the size argument `n`/`s`, position of `dim`, default dims)
_FVCORE_FFT_OPS: dict[str, tuple[str, int, int, tuple[int, ...] | None]] = {
    "aten::fft_fft": ("c2c", 1, 2, (-1,)),
    "aten::fft_ifft": ("c2c", 1, 2, (-1,)),
    "aten::fft_fft2": ("c2c", 1, 2, (-2, -1)),
    "aten::fft_ifft2": ("c2c", 1, 2, (-2, -1)),
    "aten::fft_fftn": ("c2c", 1, 2, None),
    "aten::fft_ifftn": ("c2c", 1, 2, None),
    "aten::fft_rfft": ("r2c", 1, 2, (-1,)),
    "aten::fft_rfft2": ("r2c", 1, 2, (-2, -1)),
    "aten::fft_rfftn": ("r2c", 1, 2, None),
    "aten::fft_irfft": ("c2r", 1, 2, (-1,)),
    "aten::fft_irfft2": ("c2r", 1, 2, (-2, -1)),
    "aten::fft_irfftn": ("c2r", 1, 2, None),
}
_FVCORE_NORM_OPS = (
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::adaptive_avg_pool2d",
    "aten::grid_sampler",
)


def _jit_constant(value: Any) -> Any:
    """A traced argument's constant value (ints, lists of ints built by ``ListConstruct``), else ``None``."""
    node = value.node()
    if node.kind() == "prim::ListConstruct":
        items = [_jit_constant(v) for v in node.inputs()]
        return None if any(i is None for i in items) else items
    if node.kind() == "prim::Constant":
        return value.toIValue()
    return None


def _fvcore_fft_handle(kind: str, size_pos: int, dim_pos: int, default_dims: tuple[int, ...] | None):
    from fvcore.nn.jit_handles import get_shape

    def handle(inputs: list[Any], outputs: list[Any]) -> float:
        in_shape = get_shape(inputs[0])
        out_shape = get_shape(outputs[0])
        dims = _jit_constant(inputs[dim_pos]) if len(inputs) > dim_pos else None
        sizes = _jit_constant(inputs[size_pos]) if len(inputs) > size_pos else None
        if isinstance(dims, int):
            dims = (dims,)
        if isinstance(sizes, int):
            sizes = (sizes,)
        if dims is None:
            dims = default_dims or tuple(range(-(len(sizes) if sizes else len(in_shape)), 0))
        if kind == "c2r":
            signal = out_shape  # the real output carries the true length
        elif kind == "r2c" and sizes is not None:
            signal = list(in_shape)
            for d, s in zip(dims, sizes):
                signal[d] = s
        else:
            signal = out_shape if kind == "c2c" else in_shape
        return fft_flops(signal, dims, kind) / 2  # fvcore counts MACs

    return handle


def _fvcore_depthwise_handle(inputs: list[Any], outputs: list[Any]) -> float:
    """``spectral3d::depthwise_conv3d``: MACs as fvcore counts a grouped conv, ``N C D H W kd kh kw``."""
    from fvcore.nn.jit_handles import get_shape

    return float(math.prod(get_shape(inputs[0])) * math.prod(get_shape(inputs[1])[2:]))


def fvcore_macs(
    model: nn.Module,
    inputs: Any,
    count_norms: bool = False,
    by_operator: bool = False,
) -> float | tuple[float, dict[str, float]]:
    """fvcore's MACs for ``model(*inputs)`` (traced in eval mode on real tensors: use a small input), FFTs added.
    ``count_norms``: keep fvcore's norm, 2D, ``grid_sampler`` handles; ``by_operator``: ``(total, per_op)``. Example::

        >>> fvcore_macs(nn.Conv3d(1, 2, 3), torch.randn(1, 1, 5, 5, 5))
        1458.0
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # fvcore calls the deprecated torch.jit.script
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, inputs)
            analysis.set_op_handle(**{name: _fvcore_fft_handle(*spec) for name, spec in _FVCORE_FFT_OPS.items()})
            analysis.set_op_handle(**{"spectral3d::depthwise_conv3d": _fvcore_depthwise_handle})
            if not count_norms:
                analysis.set_op_handle(**dict.fromkeys(_FVCORE_NORM_OPS))
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            total = float(analysis.total())
            per_op = {k: float(v) for k, v in analysis.by_operator().items()}
    finally:
        if was_training:
            model.train()
    return (total, per_op) if by_operator else total
