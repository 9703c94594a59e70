"""The chapters' prose helpers: claims fail strict runs and warn interactive ones."""

from __future__ import annotations

import pytest

from mtlbook.book.evidence import ClaimError, ClaimWarning, claim, glue, strict


def test_a_true_claim_passes_silently(monkeypatch, recwarn):
    monkeypatch.setenv("MTLBOOK_STRICT_CLAIMS", "1")
    assert claim(1 < 2, "one is less than two") is True
    assert not recwarn.list


def test_a_false_claim_fails_a_strict_run(monkeypatch):
    monkeypatch.setenv("MTLBOOK_STRICT_CLAIMS", "1")
    with pytest.raises(ClaimError, match="MMoE beats OMoE"):
        claim(False, "MMoE beats OMoE")


def test_a_false_claim_warns_a_reader(monkeypatch):
    monkeypatch.delenv("MTLBOOK_STRICT_CLAIMS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert not strict()
    with pytest.warns(ClaimWarning, match="MMoE beats OMoE"):
        assert claim(False, "MMoE beats OMoE") is False


def test_ci_is_strict(monkeypatch):
    monkeypatch.delenv("MTLBOOK_STRICT_CLAIMS", raising=False)
    monkeypatch.setenv("CI", "true")
    assert strict()
    with pytest.raises(ClaimError):
        claim(0, "zero is true")


def test_bad_arguments():
    with pytest.raises(TypeError, match="text"):
        claim(True, "")
    with pytest.raises(ValueError, match="name"):
        glue("not a name", 1.0)


def test_glue_returns_the_value_outside_a_notebook():
    assert glue("mse", 0.25) == 0.25


def test_numpy_numbers_are_glued_as_python_numbers(monkeypatch):
    import sys
    import types

    import numpy as np

    glued = {}
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=True: glued.update({name: (value, display)})
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    assert glue("mse", np.float32(0.25)) == np.float32(0.25)
    glue("count", np.int64(7))
    assert glued["mse"] == (0.25, False) and type(glued["mse"][0]) is float
    assert glued["count"] == (7, False) and type(glued["count"][0]) is int
