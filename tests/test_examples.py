"""The examples in the docstrings of the diagnostics, the comparison harness, the population
trainer and the chapters' experiment modules run and print what they say (doctest)."""

from __future__ import annotations

import doctest
import importlib
import sys

import matplotlib
import pytest

MODULES = ["mtlbook.diagnostics", "mtlbook.compare", "mtlbook.population", "mtlbook.restarts",
           "mtlbook.recorders", "mtlbook.soft_sweep", "mtlbook.efficiency",
           "mtlbook.learning_curves", "mtlbook.probes", "mtlbook.expert_sharing",
           "mtlbook.data.mechanisms", "mtlbook.selection", "mtlbook.gradient_surgery",
           "mtlbook.serving", "mtlbook.leaderboard", "mtlbook.balancing",
           "mtlbook.relatedness", "mtlbook.funnel_eval", "mtlbook.real_data",
           "mtlbook.checkpoint", "mtlbook.data._core", "mtlbook.datasets._fetch",
           "mtlbook.distributed", "mtlbook.streaming", "mtlbook.scaling"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    importlib.import_module(name)
    module = sys.modules[name]  # `mtlbook.compare` the attribute is the function
    monkeypatch.setenv("TQDM_DISABLE", "1")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    plt.close("all")
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
