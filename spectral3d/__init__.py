"""spectral3d: spectral adaptive 3D layers and ops for multi-sequence MRI lesion classification.

``import spectral3d`` gives the ops and layers only; the applications (``spectral3d.train``,
``spectral3d.cli``, ``spectral3d.gradcam``, ``spectral3d.data``) and the networks
(``backbones3d``) are imported on demand, so this import stays light and has no cycle.
"""

__version__ = "0.1.0"

from spectral3d.layers.norm import GRN3d, LayerNorm3d  # noqa: E402

__all__ = ["__version__", "GRN3d", "LayerNorm3d"]
