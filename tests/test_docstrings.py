"""Every ``Example::`` in the public modules runs: the docstrings are tested code, not prose."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import backbones3d
import spectral3d

_SKIP = {"spectral3d.cli"}  # argparse entry point; covered by tests/test_cli.py


def _modules() -> list[str]:
    names = []
    for pkg in (spectral3d, backbones3d):
        names.append(pkg.__name__)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
            if info.name not in _SKIP and "._triton" not in info.name:
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs={**module.__dict__}):
        runner.run(test, out=lambda _s: None)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (python -m doctest -v)"
