"""Drop-in 3D layers (DESIGN.md §3–§7). Re-exported flat, timm-style."""

from spectral3d.layers.norm import GRN3d, LayerNorm3d

__all__ = ["GRN3d", "LayerNorm3d"]
