"""count_parameters and match_width."""

from __future__ import annotations

import pytest
import torch

import mtlbook as mb
import mtlbook.utils
from mtlbook.models import SharedBottom, SingleTask


def test_count_parameters_counts_every_scalar(correlated_small):
    model = SharedBottom(correlated_small.schema, bottom_units=(5,), tower_units=(3,))
    n_in = correlated_small.schema.n_dense
    expected = (n_in * 5 + 5) + 2 * (5 * 3 + 3) + 2 * (3 * 1 + 1)
    assert mb.count_parameters(model) == expected == model.n_parameters()


def test_count_parameters_trainable_only(correlated_small):
    model = SharedBottom(correlated_small.schema)
    total = mb.count_parameters(model)
    model.towers.weights[0].requires_grad_(False)
    frozen = model.towers.weights[0].numel()
    assert mb.count_parameters(model) == total - frozen
    assert mb.count_parameters(model, trainable_only=False) == total


def test_match_width_finds_the_closest_width(correlated_small):
    schema = correlated_small.schema
    target = mb.count_parameters(SingleTask(schema, hidden_units=(16, 8)))

    def build(w):
        return SharedBottom(schema, bottom_units=(w,), tower_units=(8,))

    width = mtlbook.utils.match_width(build, target)
    best = min(range(1, 200), key=lambda w: abs(mb.count_parameters(build(w)) - target))
    assert abs(mb.count_parameters(build(width)) - target) == abs(
        mb.count_parameters(build(best)) - target
    )


def test_match_width_can_match_the_dense_part_only():
    data = mb.simulate_funnel(500, seed=0, n_users=300, n_items=200)
    target = mb.count_parameters(
        SharedBottom(data.schema, bottom_units=(16,), tower_units=(8,)), by_part=True
    )["dense"]

    def build(w):  # one network per task: twice the embedding tables of the shared model
        return SingleTask(data.schema, hidden_units=(w, 8))

    dense = mtlbook.utils.match_width(build, target, part="dense")
    total = mtlbook.utils.match_width(build, target)
    parts = mb.count_parameters(build(dense), by_part=True)
    assert parts["embedding"] > target  # the tables alone outweigh the shared model's layers
    assert abs(parts["dense"] - target) <= min(
        abs(mb.count_parameters(build(w), by_part=True)["dense"] - target) for w in (1, 2, 100)
    )
    assert total == 1  # matching the total would leave nothing for the layers
    assert dense > 1


@pytest.mark.parametrize(
    "kwargs",
    [{"target": 0}, {"target": 10, "low": 5, "high": 2}, {"target": 10, "part": "embedding"}],
)
def test_match_width_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        mtlbook.utils.match_width(lambda w: torch.nn.Linear(w, 1), **kwargs)
