"""spectral3d: spectral adaptive 3D layers and ops for multi-sequence MRI lesion classification.

``import spectral3d`` imports nothing heavy: the ops and layers below are loaded on first access
(PEP 562), so ``spectral3d --help`` and ``spectral3d.__version__`` need no torch. The custom ops
``torch.ops.spectral3d.*`` are registered when :mod:`spectral3d.ops` is imported (any op or layer
access, or ``import backbones3d``, does it). The applications (``spectral3d.data``,
``spectral3d.train``, ``spectral3d.cli``, ``spectral3d.gradcam``, ``spectral3d.metrics``,
``spectral3d.flops``) and the networks (``backbones3d``) are imported on demand; there is no cycle
with ``backbones3d``.

Example::

    >>> import torch, spectral3d
    >>> block = spectral3d.SAMBlock(16)
    >>> block(torch.randn(2, 16, 8, 9, 10)).shape
    torch.Size([2, 16, 8, 9, 10])
"""

from spectral3d._lazy import lazy_exports

__version__ = "0.1.0"

_LAYERS = (
    "DRLM",
    "SAMB",
    "ConvNeXtV2Block3d",
    "DRLMOutput",
    "GRN3d",
    "GatedCNNBlock3d",
    "LayerNorm3d",
    "MlpHead",
    "MultiScaleFusion",
    "SAMBlock",
    "TabularEncoder",
    "band_index",
)
_OPS = ("spectral_features", "spectral_features_reference", "spectral_modulation", "spectral_modulation_reference")

__all__ = [*_LAYERS, "__version__", *_OPS]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {**dict.fromkeys(_LAYERS, "spectral3d.layers"), **dict.fromkeys(_OPS, "spectral3d.ops")},
    submodules=("data", "flops", "gradcam", "layers", "metrics", "ops", "train"),
)
