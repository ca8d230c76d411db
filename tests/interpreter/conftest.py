"""Tests of the Triton kernels through Triton's CPU interpreter.

They need ``TRITON_INTERPRET=1`` before the kernels are defined, so they run in a process of their own:
``tests/test_triton_interpreter.py`` starts ``pytest tests/interpreter`` with that environment, and
``tests/conftest.py`` leaves this folder out of a normal collection.
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    raise pytest.UsageError("tests/interpreter needs TRITON_INTERPRET=1 (run through tests/test_triton_interpreter.py)")
