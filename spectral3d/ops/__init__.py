"""Ops of spectral3d, each a custom op with a plain PyTorch reference beside it: ``spectral_modulation``
(Eq. 2) and ``spectral_features`` (Triton on CUDA; ``*_reference`` the PyTorch oracles), ``depthwise_conv3d``
and ``selective_scan``. ``use_kernels`` / ``SPECTRAL3D_KERNEL`` pick each op's implementation;
``spectral3d.ops.testing`` holds the test hooks.
"""

from spectral3d.ops._switch import KERNEL_MODES, OPS, kernel_mode, use_kernels
from spectral3d.ops.depthwise_conv3d import depthwise_conv3d, depthwise_conv3d_reference
from spectral3d.ops.spectral_modulation import (
    spectral_features,
    spectral_features_reference,
    spectral_modulation,
    spectral_modulation_reference,
)

__all__ = [
    "KERNEL_MODES",
    "OPS",
    "depthwise_conv3d",
    "depthwise_conv3d_reference",
    "kernel_mode",
    "spectral_features",
    "spectral_features_reference",
    "spectral_modulation",
    "spectral_modulation_reference",
    "use_kernels",
]
