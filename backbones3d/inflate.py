"""2D → 3D weight inflation: load a 2-D timm model's weights into the matching 3-D model, key by name.

Equal shapes are copied; a 2-D kernel ``(O, I, kh, kw)`` meets a 3-D one ``(O, I, kd, kh, kw)`` as
``mode="center"`` (on slice ``kd // 2``, zeros elsewhere: a depth-1 volume reproduces the 2-D network) or
``mode="mean"`` (repeated over depth, ÷ ``kd``: I3D's inflation); any other shape difference is mis-shaped.
The :class:`InflationReport` lists every key. Zero biases the source lacks and a classifier of another class
count are left at initialisation, as timm does; anything else raises with ``strict=True``.

- *(ours)* default ``strict=True``: a parameter left at random init is as bad as a mis-shape; meta ones are unmatched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["InflationReport", "inflate_2d"]

_MODES = ("center", "mean")


@dataclass
class InflationReport:
    """What :func:`inflate_2d` did, key by key.

    Attributes:
        matched: 3-D keys filled from the source (copied or inflated).
        inflated: the subset of ``matched`` whose 2-D kernel was inflated to 3-D.
        unmatched_3d: 3-D keys the source lacks (left as they were).
        unmatched_2d: source keys the 3-D model lacks (ignored).
        mis_shaped: ``(key, source shape, 3-D shape)`` for keys whose shapes do not fit.
        left_at_init: 3-D keys the source lacks that are the identity at initialisation (zero biases).
        classifier: ``(key, source shape, 3-D shape)`` of the classifier, left at init (class counts differ).
    """

    matched: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    unmatched_3d: list[str] = field(default_factory=list)
    unmatched_2d: list[str] = field(default_factory=list)
    mis_shaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    left_at_init: list[str] = field(default_factory=list)
    classifier: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every key on both sides matched (nothing left at initialisation either)."""
        return not (self.unmatched_3d or self.unmatched_2d or self.mis_shaped or self.left_at_init or self.classifier)

    @property
    def body_complete(self) -> bool:
        """Everything matched but the reported, non-fatal differences (what ``strict=True`` requires)."""
        return not (self.unmatched_3d or self.unmatched_2d or self.mis_shaped)

    def __str__(self) -> str:
        lines = [
            f"inflate_2d: {len(self.matched)} keys matched ({len(self.inflated)} kernels inflated), "
            f"{len(self.unmatched_3d)} unmatched in the 3-D model, {len(self.unmatched_2d)} unmatched in the "
            f"source, {len(self.mis_shaped)} mis-shaped, {len(self.left_at_init)} left at initialisation (identity), "
            f"{len(self.classifier)} classifier tensors left at initialisation (other class count)"
        ]
        lines += [f"  unmatched 3-D: {k}" for k in self.unmatched_3d]
        lines += [f"  unmatched source: {k}" for k in self.unmatched_2d]
        lines += [f"  mis-shaped: {k}: source {s} vs 3-D {t}" for k, s, t in self.mis_shaped]
        lines += [f"  left at initialisation (zero, the identity): {k}" for k in self.left_at_init]
        lines += [f"  classifier left at initialisation: {k}: source {s} vs 3-D {t}" for k, s, t in self.classifier]
        return "\n".join(lines)


def _inflate_kernel(weight: torch.Tensor, depth: int, mode: str) -> torch.Tensor:
    if mode == "center":
        out = weight.new_zeros(weight.shape[:2] + (depth,) + weight.shape[2:])
        out[:, :, depth // 2] = weight
        return out
    return weight.unsqueeze(2).expand(-1, -1, depth, -1, -1) / depth


def inflate_2d(
    model3d: nn.Module,
    source: nn.Module | Mapping[str, torch.Tensor],
    mode: str = "center",
    strict: bool = True,
) -> InflationReport:
    """Load a 2-D model's (or state dict's) weights into a 3-D model, inflating conv kernels.

    Args:
        model3d: the 3-D model to fill (in place), e.g. ``mambaout_femto_3d``.
        source: the 2-D model (e.g. ``timm.create_model("mambaout_femto")``) or its state dict.
        mode: ``"center"`` (kernel on the centre depth slice) or ``"mean"`` (replicated, ÷ depth).
        strict: raise ``RuntimeError`` unless every key matches (but for the reported zero biases and classifier).

    Raises:
        ValueError: unknown ``mode``.
        TypeError: ``source`` is neither a module nor a mapping of tensors.
        RuntimeError: with ``strict=True``, any unmatched or mis-shaped key (nothing is loaded then).

    Example::

        >>> import timm, backbones3d
        >>> model3d = backbones3d.create_model("test_mambaout_3d", num_classes=10)
        >>> model2d = timm.models.mambaout.MambaOut(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64), num_classes=10)
        >>> report = inflate_2d(model3d, model2d); report.complete, len(report.inflated)
        (True, 9)
    """
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
    if isinstance(source, nn.Module):
        state2d = source.state_dict()
    elif isinstance(source, Mapping) and all(isinstance(v, torch.Tensor) for v in source.values()):
        state2d = dict(source)
    else:
        raise TypeError(f"source: expected an nn.Module or a mapping of names to tensors, got {type(source).__name__}")

    state3d = model3d.state_dict()
    head = getattr(model3d, "pretrained_cfg", {}).get("classifier")
    report = InflationReport()
    updates: dict[str, torch.Tensor] = {}
    for key, target in state3d.items():
        if key not in state2d:
            if key.endswith("bias") and not target.is_meta and not target.any():
                report.left_at_init.append(key)
            else:
                report.unmatched_3d.append(key)
            continue
        value = state2d[key]
        if value.shape == target.shape:
            updates[key] = value
        elif value.ndim == 4 and target.ndim == 5 and target.shape[:2] + target.shape[3:] == value.shape:
            updates[key] = _inflate_kernel(value, target.shape[2], mode)
            report.inflated.append(key)
        elif head and key.startswith(f"{head}.") and value.shape[1:] == target.shape[1:]:
            report.classifier.append((key, tuple(value.shape), tuple(target.shape)))  # other class count
            continue
        else:
            report.mis_shaped.append((key, tuple(value.shape), tuple(target.shape)))
            continue
        report.matched.append(key)
    report.unmatched_2d = [k for k in state2d if k not in state3d]

    if strict and not report.body_complete:
        raise RuntimeError(f"{report}\n(strict=True: nothing was loaded; pass strict=False to load the matched keys)")
    with torch.no_grad():
        for key, value in updates.items():
            state3d[key].copy_(value)
    return report
