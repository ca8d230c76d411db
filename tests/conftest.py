"""Shared test settings: small thread count, deterministic seeds, a fast hypothesis profile."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "spectral3d",
    deadline=None,
    max_examples=int(os.environ.get("SPECTRAL3D_HYPOTHESIS_EXAMPLES", "8")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)
settings.load_profile("spectral3d")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
