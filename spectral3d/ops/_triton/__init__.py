"""Triton kernels (``kernels``) and their launchers (``launchers``) for :mod:`spectral3d.ops`.

Imported lazily by the ops, only when a Triton path is taken, so ``import spectral3d`` never
imports Triton.
"""
