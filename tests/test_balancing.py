"""Loss-balancing tools of chapter 12.4 (mtlbook.book.ch12_4a)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import mtlbook as mb
from mtlbook.analysis.compare import compare, model_factory
from mtlbook.analysis.gradients import GradientConflict
from mtlbook.analysis.runs import PerTask, RecordingTrainer
from mtlbook.book.ch12_4a import (
    initial_losses,
    inverse_loss_weights,
    plot_metric_history,
    plot_scale_mismatch,
    plot_strategy_run,
    plot_weight_history,
    transfer_by_weighting,
    weight_frame,
)
from mtlbook.models import SharedBottom, SingleTask
from mtlbook.weighting import FixedWeights, UncertaintyWeighting

matplotlib.use("Agg")

SMALL = {"n_users": 100, "n_items": 50}
FIT = {"epochs": 2, "batch_size": 256, "lr": 1e-2}
METRICS = {"click": "auc", "purchase": "auc", "dwell_time": "mse"}


def make_funnel(seed: int) -> mb.MultiTaskData:
    return mb.simulate_funnel(
        1_500, seed=seed, with_dwell_time=True, click_rate=0.1, purchase_rate=0.03, **SMALL
    ).without_groups()


SB = model_factory(SharedBottom, bottom_units=(8,), tower_units=(4,))


def test_without_groups_drops_groups_only():
    data = mb.simulate_funnel(300, seed=0, **SMALL)
    out = data.without_groups()
    assert out.groups is None and data.groups is not None
    assert np.array_equal(out.labels["click"], data.labels["click"])
    assert "gauc" not in set(mb.evaluate(SB(out.schema, 0), out)["metric"])


def test_initial_losses_show_the_scale_gap_and_leave_the_model_alone():
    data = make_funnel(0)
    model = SB(data.schema, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = initial_losses(model, data, max_rows=800)
    assert set(losses) == set(data.task_names)
    assert losses["dwell_time"] > 100 * losses["click"]
    assert all(np.isfinite(v) and v > 0 for v in losses.values())
    assert all((before[k] == v).all() for k, v in model.state_dict().items())
    assert model.training  # the mode is restored


def test_initial_losses_checks_the_tasks():
    data = make_funnel(0)
    with pytest.raises(ValueError, match="tasks"):
        initial_losses(SB(data.schema, 0), data.select_tasks(["click", "purchase"]))
    with pytest.raises(TypeError, match="MultiTaskModel"):
        initial_losses("model", data)


def test_inverse_loss_weights_equalise_weighted_losses():
    losses = {"a": 0.5, "b": 2.0, "c": 800.0}
    w = inverse_loss_weights(losses)
    assert sum(w.values()) == pytest.approx(3.0)
    weighted = [w[k] * losses[k] for k in losses]
    assert np.allclose(weighted, weighted[0])
    for bad in ({}, {"a": 0.0}, {"a": float("nan")}):
        with pytest.raises(ValueError):
            inverse_loss_weights(bad)


def test_recording_trainer_keeps_adaptive_histories_and_vectorises_the_rest():
    recorder = RecordingTrainer()
    result = compare(
        {"sb": SB},
        make_funnel,
        seeds=2,
        trainer=recorder,
        weightings={
            "equal": lambda: FixedWeights({"click": 1.0, "purchase": 1.0, "dwell_time": 1.0}),
            "uncertainty": UncertaintyWeighting,
        },
        monitor="click:auc",
        **FIT,
    )
    assert sorted(recorder.histories) == [("sb", "uncertainty", 0), ("sb", "uncertainty", 1)]
    assert set(result.raw["weighting"]) == {"equal", "uncertainty"}
    weights = weight_frame(recorder.histories)
    assert list(weights.columns) == ["model", "weighting", "seed", "epoch", "task", "weight"]
    assert set(weights["task"]) == set(METRICS)
    assert (weights["weight"] > 0).all()
    fig = plot_weight_history(weights)
    fig2 = plot_metric_history(recorder.histories, "click", "auc", reference=0.6)
    sub = plt.figure().subfigures(1, 2)[1]
    assert plot_metric_history(recorder.histories, "click", "auc", ax=sub.subplots()) is sub
    plt.close(fig)
    plt.close(fig2)
    with pytest.raises(ValueError, match="no weights recorded"):
        plot_weight_history(weights, ["gradnorm"])
    with pytest.raises(ValueError, match="no validation rows"):
        plot_metric_history(recorder.histories, "click", "mse")


def test_recording_trainer_without_vectorising_records_everything():
    recorder = RecordingTrainer(vectorise=False)
    compare({"sb": SB}, make_funnel, seeds=1, trainer=recorder, **FIT)
    assert list(recorder.histories) == [("sb", "equal", 0)]
    assert weight_frame(recorder.histories[("sb", "equal", 0)])["weight"].eq(1.0).all()


def test_transfer_by_weighting_pairs_each_weighting_with_the_baseline():
    single = compare(
        {"single": PerTask(model_factory(SingleTask, hidden_units=(8,)))},
        make_funnel,
        seeds=3,
        **FIT,
    ).raw
    mtl = compare(
        {"sb": SB},
        make_funnel,
        seeds=3,
        weightings={
            "equal": mb.weighting.EqualWeight,
            "fixed": lambda: FixedWeights({"click": 1.0, "purchase": 1.0, "dwell_time": 1e-3}),
        },
        **FIT,
    ).raw
    out = transfer_by_weighting(single, mtl, metrics=METRICS)
    assert sorted(set(out["weighting"])) == ["equal", "fixed"]
    assert len(out) == 6 and (out["n"] == 3).all()
    assert set(out["verdict"]) <= {"positive", "negative", "inconclusive"}
    with pytest.raises(ValueError, match="no model"):
        transfer_by_weighting(single, mtl, model="mmoe")


def test_scale_and_strategy_plots():
    data = make_funnel(0)
    train, valid = data.split((0.7, 0.3), seed=0)
    probe = GradientConflict(train, every=2, probe_size=300)
    result = mb.fit(SB(train.schema, 0), train, valid, progress=False, callbacks=[probe], **FIT)
    fig = plot_scale_mismatch(result.history, probe.norms())
    plt.close(fig)
    test = pd.DataFrame(
        {"task": list(METRICS), "metric": list(METRICS.values()), "value": [0.6, 0.6, 500.0]}
    )
    fig = plot_strategy_run(result.history, test, reference={"click": 0.65}, title="t")
    assert len(fig.axes) == 4
    plt.close(fig)
    with pytest.raises(ValueError, match="norm frame"):
        plot_scale_mismatch(result.history, probe.norms().iloc[:0])
