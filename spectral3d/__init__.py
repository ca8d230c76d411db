"""spectral3d: spectral adaptive 3D layers and ops for multi-sequence MRI lesion classification.

``import spectral3d`` gives the ops and layers only. The applications (``spectral3d.data``,
``spectral3d.train``, ``spectral3d.cli``, ``spectral3d.gradcam``, ``spectral3d.metrics``,
``spectral3d.flops``) and the networks (``backbones3d``) are imported on demand, so this import
stays light and has no cycle with ``backbones3d``.

Example::

    >>> import torch, spectral3d
    >>> block = spectral3d.SAMBlock(16)
    >>> block(torch.randn(2, 16, 8, 9, 10)).shape
    torch.Size([2, 16, 8, 9, 10])
"""

__version__ = "0.1.0"

from spectral3d.layers import (  # noqa: E402
    DRLM,
    SAMB,
    ConvNeXtV2Block3d,
    DRLMOutput,
    GatedCNNBlock3d,
    GRN3d,
    LayerNorm3d,
    MlpHead,
    MultiScaleFusion,
    SAMBlock,
    TabularEncoder,
    band_index,
)
from spectral3d.ops import (  # noqa: E402
    spectral_features,
    spectral_features_reference,
    spectral_modulation,
    spectral_modulation_reference,
)

__all__ = [
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
    "__version__",
    "band_index",
    "spectral_features",
    "spectral_features_reference",
    "spectral_modulation",
    "spectral_modulation_reference",
]
