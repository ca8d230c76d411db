"""Deprecated location: the argument checks live in :mod:`spectral3d.checks`."""

from spectral3d.checks import *  # noqa: F403
from spectral3d.checks import __all__  # noqa: F401
