"""Triton kernels and launchers of :mod:`spectral3d.ops`, imported only when a Triton path runs."""
