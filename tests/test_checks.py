"""spectral3d.checks: the error-type rule (TypeError for a wrong type, ValueError out of range) and the one
parser of ``SPECTRAL3D_CHECK_FINITE``."""

import pytest
import torch

from spectral3d.checks import check_bool, check_int, check_rate, env_flag, finite_checks_enabled
from spectral3d.ops.spectral_modulation import _check_band_range


@pytest.mark.parametrize("value", [2.0, True, "3", None])
def test_check_int_wrong_type(value) -> None:
    with pytest.raises(TypeError, match="depth: expected an int"):
        check_int(value, "depth")


@pytest.mark.parametrize(("value", "kwargs"), [(0, {}), (1, {"minimum": 2}), (4, {"odd": True}), (-1, {"odd": True})])
def test_check_int_out_of_range(value, kwargs) -> None:
    with pytest.raises(ValueError, match="k: expected (a positive int|an int >= 2|an odd int >= 1), got "):
        check_int(value, "k", **kwargs)


def test_check_int_accepts() -> None:
    assert check_int(0, "num_classes", minimum=0) == 0
    assert check_int(5, "k", odd=True) == 5


def test_check_rate_and_bool() -> None:
    assert check_rate(0, "p") == 0.0 and isinstance(check_rate(0, "p"), float)
    with pytest.raises(TypeError, match="p: expected a probability"):
        check_rate(True, "p")
    with pytest.raises(ValueError, match="p: expected a probability"):
        check_rate(1.0, "p")
    with pytest.raises(TypeError, match="bias: expected a bool"):
        check_bool(1, "bias")


@pytest.mark.parametrize(
    ("raw", "on"),
    [(None, False), ("", False), ("0", False), ("false", False), ("False", False), (" OFF ", False), ("no", False)]
    + [("1", True), ("true", True), ("yes", True)],
)
def test_check_finite_flag_one_parser(monkeypatch, raw, on) -> None:
    if raw is None:
        monkeypatch.delenv("SPECTRAL3D_CHECK_FINITE", raising=False)
    else:
        monkeypatch.setenv("SPECTRAL3D_CHECK_FINITE", raw)
    assert env_flag("SPECTRAL3D_CHECK_FINITE") is on
    assert finite_checks_enabled() is on


def test_band_range_checked_on_cpu_whatever_the_flag(monkeypatch) -> None:
    monkeypatch.setenv("SPECTRAL3D_CHECK_FINITE", "false")
    with pytest.raises(ValueError, match=r"band_index: expected values in \[0, 3\)"):
        _check_band_range(torch.tensor([0, 3]), 3)
