"""Every exported weighting strategy runs in fit with one model of every family."""

from __future__ import annotations

import pytest

import mtlbook as mb
import mtlbook.weighting as weighting
from mtlbook.models import ESMM, PLE, CrossStitch, SharedBottom
from mtlbook.weighting import Weighting, standard_strategies

TASKS = ("click", "purchase", "dwell_time")
STRATEGIES = standard_strategies(fixed_weights=dict.fromkeys(TASKS, 1.0), schedule={"ratios": 0.9})
FAMILIES = {  # hard sharing, mixture of experts, soft sharing, funnel
    "SharedBottom": lambda s: SharedBottom(s, bottom_units=(8,), tower_units=(4,)),
    "PLE": lambda s: PLE(s, expert_units=(8,), tower_units=(4,)),
    "CrossStitch": lambda s: CrossStitch(s, hidden_units=(8,)),
    "ESMM": lambda s: ESMM(s, tower_units=(8,)),
}


def test_catalogue_covers_every_exported_strategy():
    exported = {getattr(weighting, name) for name in weighting.__all__} - {Weighting}
    built = {type(factory()) for factory in STRATEGIES.values()}
    assert exported == built
    assert len(exported) >= 10


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_strategy_trains_every_family(strategy, family, funnel_small):
    train, valid = funnel_small.split((0.7, 0.3), seed=0)
    model = FAMILIES[family](train.schema)
    result = mb.fit(
        model,
        train,
        valid,
        epochs=2,
        batch_size=256,
        lr=5e-3,
        progress=False,
        weighting=STRATEGIES[strategy](),
    )
    weights = result.history[result.history["metric"] == "weight"]
    assert set(weights["task"]) == set(TASKS)
    assert weights["value"].notna().all()
    assert result.history["value"].notna().all()
