"""Shared test settings: deterministic seeds, a fast hypothesis profile, an opt-in one-thread fixture."""

from __future__ import annotations

import os
from collections.abc import Iterator

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

# Kernel tests in Triton's interpreter need TRITON_INTERPRET=1 at process start: test_triton_interpreter.py
# runs them in a subprocess.
collect_ignore_glob = [] if os.environ.get("TRITON_INTERPRET") == "1" else ["interpreter/*"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a test module (opt in: ``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Tiny ops on a shared 2-core machine: intra-op threads spin and cost 10-40x (measured). The previous
    thread count is restored after the module.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
