"""Every docstring example of the package runs and prints what it says (doctest).

The modules are found by walking the package, so a new module's examples are tested as soon as
it exists.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import matplotlib
import pytest

import mtlbook

ALL_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(mtlbook.__path__, "mtlbook.")
    if not info.name.endswith("__main__")
)
#: The modules with at least one example.
MODULES = [
    name
    for name in ALL_MODULES
    if any(test.examples for test in doctest.DocTestFinder().find(importlib.import_module(name)))
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    module = importlib.import_module(name)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    plt.close("all")
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_package_has_examples():
    assert len(ALL_MODULES) > 60 and len(MODULES) > 30
