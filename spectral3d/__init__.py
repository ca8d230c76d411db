"""spectral3d: spectral adaptive 3D layers and ops for multi-sequence MRI lesion classification.

``import spectral3d`` imports nothing heavy: layers and ops load on first access (PEP 562); the custom
ops ``torch.ops.spectral3d.*`` register when :mod:`spectral3d.ops` is imported. The applications
(``data``, ``train``, ``cli``, ``gradcam``, ``metrics``, ``flops``) and ``backbones3d`` load on demand.

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
