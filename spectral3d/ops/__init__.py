"""Spectral ops (DESIGN.md §3, "The ops"): Eq. 2 and the ``[R, I, |X|]`` features as custom ops.

``spectral_modulation`` / ``spectral_features`` are ``torch.library`` custom ops (Triton on CUDA);
``spectral_modulation_reference`` / ``spectral_features_reference`` are the plain PyTorch oracles.
"""

from spectral3d.ops.spectral_modulation import (
    spectral_features,
    spectral_features_reference,
    spectral_modulation,
    spectral_modulation_reference,
)

__all__ = [
    "spectral_features",
    "spectral_features_reference",
    "spectral_modulation",
    "spectral_modulation_reference",
]
