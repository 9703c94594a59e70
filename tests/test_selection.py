"""Architecture selection on validation with a single test report (chapter 12.4)."""

from __future__ import annotations

import pytest

from mtlbook.analysis.compare import compare, model_factory
from mtlbook.analysis.runs import PerTask
from mtlbook.book.ch12_4b import (
    leaderboard,
    parameter_counts,
    plot_selection,
    select_and_test,
    train_seconds_per_seed,
)
from mtlbook.models import MMoE, SharedBottom, SingleTask

FIT = dict(n_samples=400, epochs=2, batch_size=100)
MODELS = {
    "single": PerTask(model_factory(SingleTask, hidden_units=(8,))),
    "sb": model_factory(SharedBottom, bottom_units=(8,), tower_units=(4,)),
    "mmoe": model_factory(MMoE, n_experts=2, expert_units=(4,), tower_units=(4,)),
}


@pytest.fixture(scope="module")
def selection():
    return select_and_test(MODELS, "correlated:0.5", seeds=3, **FIT)


def test_select_and_test_follows_the_protocol(selection):
    board = selection.board
    assert list(board["rank"]) == [1, 2, 3]
    assert board["score"].is_monotonic_decreasing
    assert selection.chosen == board.index[0]
    assert selection.valid.split == "valid"
    assert selection.test.split == "test"
    assert set(selection.test.raw["model"]) == {selection.chosen, "single"}
    assert selection.reproduced
    # the test run retrains the same fits: the baseline's test scores are those of a plain
    # test-split comparison of the baseline alone
    alone = compare({"single": MODELS["single"]}, "correlated:0.5", seeds=3, **FIT)
    mine = selection.test.raw[selection.test.raw["model"] == "single"]
    assert mine["value"].tolist() == pytest.approx(alone.raw["value"].tolist(), abs=1e-5)


def test_leaderboard_columns(selection):
    board = selection.board
    for column in (
        "task1 mse",
        "task2 mse",
        "gain task1 %",
        "parameters",
        "train_s_per_seed",
        "score_lo",
        "score_hi",
    ):
        assert column in board.columns
    assert board.loc["single", "gain task1 %"] == "—"
    assert (board["score"] < 0).all()  # −MSE for regression tasks
    assert (board["train_s_per_seed"] > 0).all()


def test_parameter_counts_add_the_per_task_models(correlated_small):
    counts = parameter_counts(MODELS, correlated_small.schema)
    single = sum(
        SingleTask(correlated_small.select_tasks([t]).schema, hidden_units=(8,)).n_parameters()
        for t in correlated_small.task_names
    )
    assert counts["single"] == single
    assert (
        counts["sb"]
        == SharedBottom(correlated_small.schema, bottom_units=(8,), tower_units=(4,)).n_parameters()
    )


def test_train_seconds_sum_the_per_task_fits(selection):
    times = train_seconds_per_seed(selection.valid, MODELS)
    raw = selection.valid.raw
    single = raw[raw["model"] == "single"].drop_duplicates(["seed", "task"])
    assert times["single"] == pytest.approx(single.groupby("seed")["train_seconds"].sum().mean())


def test_weights_change_the_score(selection):
    only_task2 = leaderboard(selection.valid, weights={"task2": 1.0})
    raw = selection.valid.raw
    task2 = raw[(raw["task"] == "task2") & (raw["metric"] == "mse")]
    best = task2.groupby("model")["value"].mean().idxmin()
    assert only_task2.index[0] == best


def test_plot_selection(selection):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plot_selection(selection)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_title() == "排行榜（验证集）"
    plt.close(fig)
    with pytest.raises(TypeError, match="Selection"):
        plot_selection(selection.board)


def test_selection_errors(selection):
    with pytest.raises(ValueError, match="sets the split"):
        select_and_test(MODELS, "correlated:0.5", seeds=2, split="test", **FIT)
    with pytest.raises(ValueError, match="must be one of the models"):
        select_and_test({"sb": MODELS["sb"]}, "correlated:0.5", seeds=2, **FIT)
    with pytest.raises(ValueError, match="unknown task"):
        leaderboard(selection.valid, weights={"click": 1.0})
    with pytest.raises(ValueError, match="together"):
        leaderboard(selection.valid, models=MODELS)
    with pytest.raises(ValueError, match="baseline"):
        leaderboard(selection.valid, baseline="nope")
    with pytest.raises(TypeError, match="CompareResult"):
        leaderboard(selection.valid.raw)
