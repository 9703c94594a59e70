"""The per-step gradient-conflict recorder of chapter 12.4 (what PCGrad changes each step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mtlbook as mb
from mtlbook.analysis.gradients import StepConflictLog, step_summary
from mtlbook.models import SharedBottom, SingleTask
from mtlbook.weighting import PCGrad

FIT = dict(epochs=2, batch_size=100, lr=1e-2, progress=False, seed=0)


@pytest.fixture(scope="module")
def conflicting():
    return mb.make_correlated_tasks(600, -0.8, n_features=6, seed=0).split((0.8, 0.2))


def _model(schema):
    return SharedBottom(schema, bottom_units=(8,), tower_units=(4,), seed=0)


@pytest.mark.parametrize("inner", [None, "pcgrad"])
def test_the_recorder_does_not_change_training(conflicting, inner):
    train, valid = conflicting
    make = (lambda: None) if inner is None else (lambda: PCGrad(seed=1))
    plain, logged = _model(train.schema), _model(train.schema)
    mb.fit(plain, train, valid, weighting=make(), **FIT)
    log = StepConflictLog(make())
    mb.fit(logged, train, valid, weighting=log, **FIT)
    for a, b in zip(plain.parameters(), logged.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    steps = 2 * int(np.ceil(len(train) / 100))
    pairs, align = log.pairs(), log.alignment()
    assert list(pairs["step"]) == list(range(1, steps + 1))
    assert set(pairs["epoch"]) == {1, 2}
    assert len(align) == steps * 2 * 2  # steps × tasks × {equal, pcgrad}


def test_pcgrad_update_never_opposes_a_task(conflicting):
    train, valid = conflicting
    log = StepConflictLog()
    mb.fit(
        _model(train.schema), train, valid, weighting=log, **{**FIT, "epochs": 4, "batch_size": 32}
    )
    align = log.alignment()
    pcgrad = align[align["update"] == "pcgrad"]["cosine"]
    assert (pcgrad > -1e-6).all()
    pairs = log.pairs()
    conflict = pairs["cosine"] < 0
    assert conflict.any()  # the data were made to conflict
    # for two tasks the projection turns cos into |cos| (see the module docstring)
    np.testing.assert_allclose(
        pairs.loc[conflict, "cosine_projected"], -pairs.loc[conflict, "cosine"], atol=1e-6
    )
    summary = step_summary({"run": log})
    assert summary.loc["run", "pcgrad_opposes"] == 0.0
    assert summary.loc["run", "steps"] == pairs["step"].nunique()
    assert 0 < summary.loc["run", "conflicting"] <= 1


def test_the_recorder_explains_its_errors(conflicting):
    train, valid = conflicting
    with pytest.raises(TypeError, match="Weighting"):
        StepConflictLog("pcgrad")
    with pytest.raises(TypeError, match="already"):
        StepConflictLog(StepConflictLog())
    with pytest.raises(ValueError, match=r"no shared parameters|has none"):
        mb.fit(SingleTask(train.schema), train, valid, weighting=StepConflictLog(), **FIT)
    one = train.select_tasks(["task1"])
    with pytest.raises(ValueError, match="one task"):
        mb.fit(
            SharedBottom(one.schema),
            one,
            valid.select_tasks(["task1"]),
            weighting=StepConflictLog(),
            **FIT,
        )
    with pytest.raises(ValueError, match="no recorded step"):
        step_summary(StepConflictLog())
    with pytest.raises(TypeError, match="not a StepConflictLog"):
        step_summary({"x": PCGrad()})
