"""The λ sweep of soft parameter sharing as one population (mtlbook.book.ch12_3_2)."""

from __future__ import annotations

import matplotlib
import pytest
import torch

import mtlbook as mb
from mtlbook.analysis.compare import model_factory
from mtlbook.analysis.runs import PerTask, population_scores
from mtlbook.book.ch12_3_2 import (
    SweepSoftSharing,
    plot_lambda_sweep,
    plot_weight_distance,
    select_lambda,
    soft_sharing_sweep,
)
from mtlbook.models import SharedBottom, SingleTask, SoftSharing

matplotlib.use("Agg")
FIT = dict(epochs=3, batch_size=64, lr=1e-2, device="cpu")


@pytest.fixture(scope="module")
def split():
    data = mb.make_correlated_tasks(600, 0.8, n_features=10, seed=0)
    return data.split((0.6, 0.2, 0.2), seed=0)


def test_sweep_model_matches_soft_sharing(split):
    train = split[0]
    a = SweepSoftSharing(train.schema, l2_lambda=0.3, hidden_units=(8,), seed=1)
    b = SoftSharing(train.schema, l2_lambda=0.3, hidden_units=(8,), seed=1)
    assert a.n_parameters() == b.n_parameters()
    assert not a.penalty_weight.requires_grad
    torch.testing.assert_close(a.regularization(), b.regularization())
    batch = next(iter(train.loader(32, shuffle=False)))
    for name, out in a(batch).items():
        torch.testing.assert_close(out, b(batch)[name])


def test_sweep_members_follow_separate_fits(split):
    """Member (λ, seed) of the population ends where fit() of SoftSharing(λ, seed) ends."""
    train, valid, test = split
    lambdas = [0.0, 0.5]
    sweep = soft_sharing_sweep(
        train, valid, test, lambdas, [0, 1], model_options={"hidden_units": (8,)}, **FIT
    )
    assert set(sweep["l2_lambda"]) == set(lambdas) and set(sweep["seed"]) == {0, 1}
    stride = 2  # max(seeds) + 1: member (λ_i, s) draws batches with seed i·2 + s
    for i, lam in enumerate(lambdas):
        model = SoftSharing(train.schema, l2_lambda=lam, hidden_units=(8,), seed=1)
        mb.fit(model, train, valid, seed=i * stride + 1, progress=False, **FIT)
        got = sweep[
            (sweep["l2_lambda"] == lam) & (sweep["seed"] == 1) & (sweep["metric"] == "mse")
        ].set_index("task")["value"]
        want = mb.evaluate(model, test).query("metric == 'mse'").set_index("task")["value"]
        for task in want.index:
            assert got[task] == pytest.approx(want[task], rel=1e-3)
        distance = sweep[(sweep["l2_lambda"] == lam) & (sweep["seed"] == 1)]["distance"]
        assert distance.iloc[0] == pytest.approx(float(model.distance().detach()) ** 0.5, rel=1e-3)
    # a strong penalty pulls the networks together
    d = sweep.drop_duplicates(["l2_lambda", "seed"]).groupby("l2_lambda")["distance"].mean()
    assert d[0.5] < d[0.0]
    assert select_lambda(sweep) in lambdas
    fig = plot_lambda_sweep(sweep)
    assert len(fig.axes) == 2
    plot_weight_distance(sweep)


def test_population_scores_and_plot(split):
    train, valid, test = split
    refs, _ = population_scores(
        {
            "single": PerTask(model_factory(SingleTask, hidden_units=(8,))),
            "sb": model_factory(SharedBottom, bottom_units=(8,)),
        },
        train,
        valid,
        {"test": test},
        [0, 1],
        **FIT,
    )
    assert set(refs["model"]) == {"single", "sb"}
    assert set(refs["task"]) == {"task1", "task2"}
    assert len(refs[(refs["model"] == "single") & (refs["metric"] == "mse")]) == 4
    sweep = soft_sharing_sweep(
        train, valid, test, [0.0, 1.0], [0, 1], model_options={"hidden_units": (8,)}, **FIT
    )
    fig = plot_lambda_sweep(sweep, refs)
    assert len(fig.axes) == 2


@pytest.mark.parametrize(
    "lambdas, message", [([], "empty"), ([-1.0], "≥ 0"), ([0.1, 0.1], "repeated")]
)
def test_bad_lambdas(split, lambdas, message):
    with pytest.raises(ValueError, match=message):
        soft_sharing_sweep(*split, lambdas, [0], **FIT)


def test_bad_options(split):
    with pytest.raises(ValueError, match="l2_lambda"):
        soft_sharing_sweep(*split, [0.0], [0], model_options={"l2_lambda": 1.0}, **FIT)
    with pytest.raises(TypeError, match="range"):
        soft_sharing_sweep(*split, [0.0], 3, **FIT)
    with pytest.raises(ValueError, match="valid_loss"):
        select_lambda(split[0].to_frame())
