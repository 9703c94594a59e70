"""Tests of mtlbook.book.ch12_6: running studies, tables, ties and the heatmap."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import mtlbook as mb
from mtlbook.analysis.compare import CompareResult
from mtlbook.book.ch12_6 import (
    Leaderboard,
    Study,
    matched_models,
    plot_gain_heatmap,
    run_leaderboard,
)
from mtlbook.utils import count_parameters

FAST = dict(n_samples=300, epochs=2, batch_size=128)


@pytest.fixture(scope="module")
def board():
    studies = {
        "low": Study(
            "correlated:0.2",
            {"single": "single", "shared_bottom": "shared_bottom", "mmoe": "mmoe"},
            metrics="mse",
            settings=FAST,
        ),
        "high": Study(
            "correlated:0.9",
            {"single": "single", "shared_bottom": "shared_bottom"},
            weightings={"equal": "equal", "uncertainty": "uncertainty"},
            only={"uncertainty": ["shared_bottom"]},
            settings=FAST,
        ),
    }
    return run_leaderboard(studies, seeds=3)


def test_runs_every_configuration_and_reuses_the_baseline(board):
    raw = board.raw
    assert raw.columns[0] == "dataset"
    configs = raw.drop_duplicates(["dataset", "model", "weighting"])
    got = sorted(map(tuple, configs[["dataset", "model", "weighting"]].to_numpy()))
    assert got == sorted(
        [
            ("low", "single", "equal"),
            ("low", "shared_bottom", "equal"),
            ("low", "mmoe", "equal"),
            ("high", "single", "equal"),
            ("high", "shared_bottom", "equal"),
            ("high", "single", "uncertainty"),
            ("high", "shared_bottom", "uncertainty"),
        ]
    )
    base = raw[(raw["dataset"] == "high") & (raw["model"] == "single")]
    eq = base[base["weighting"] == "equal"].sort_values(["seed", "task", "metric"])
    un = base[base["weighting"] == "uncertainty"].sort_values(["seed", "task", "metric"])
    np.testing.assert_array_equal(eq["value"].to_numpy(), un["value"].to_numpy())


def test_tables_keep_headline_metrics_and_widen(board):
    table = board.table()
    assert set(table["metric"]) == {"mse"}
    assert {"dataset", "model", "weighting", "task", "mean", "lo", "hi", "formatted"} <= set(
        table.columns
    )
    wide = board.table(wide=True)
    assert ("low", "task1", "mse") in wide.columns
    assert pd.isna(wide.loc[("mmoe", "equal"), ("high", "task1", "mse")])
    gains = board.gains()
    assert "single" not in set(gains["model"])
    assert set(gains["weighting"]) == {"equal", "uncertainty"}
    assert len(board.gains(wide=True)) == 3


def test_best_marks_ties_by_paired_interval():
    seeds = range(4)
    rows = []
    for seed in seeds:
        for model, value in (
            ("single", 1.0),
            ("good", 0.5),
            ("noisy", 0.5 + (-1) ** seed),
            ("bad", 2.0 + 0.01 * seed),
        ):
            rows.append(
                {
                    "model": model,
                    "weighting": "equal",
                    "seed": seed,
                    "task": "t",
                    "metric": "mse",
                    "value": value,
                }
            )
    board = Leaderboard({"d": CompareResult(pd.DataFrame(rows))}, baseline="single")
    best = board.best().iloc[0]
    assert best["best"] == "good (equal)"
    assert best["tied"] == ["noisy (equal)"]
    overall = board.best(overall=True).iloc[0]
    assert overall["task"] == "all tasks"
    assert overall["best"] == "good (equal)"
    assert overall["best_mean"] == pytest.approx(50.0)


def test_csv_round_trip(board, tmp_path):
    path = board.to_csv(tmp_path / "sub" / "board.csv")
    back = pd.read_csv(path)
    assert len(back) == len(board.raw)
    assert list(back.columns) == list(board.raw.columns)


def test_heatmap_draws_one_cell_per_configuration_and_column(board):
    fig = plot_gain_heatmap(board.gains())
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == 3
    assert len(ax.get_xticklabels()) == 4
    sub = plt.figure().subfigures(1, 2)[0]
    assert plot_gain_heatmap(board.gains(), ax=sub.subplots()) is sub
    with pytest.raises(ValueError, match="missing"):
        plot_gain_heatmap(pd.DataFrame({"mean": [1.0]}))


def test_bad_studies_are_refused_with_clear_messages():
    with pytest.raises(ValueError, match="at least one study"):
        run_leaderboard({})
    with pytest.raises(TypeError, match="must be a Study"):
        run_leaderboard({"x": "correlated:0.5"})
    with pytest.raises(ValueError, match="no baseline model"):
        run_leaderboard({"x": Study("correlated:0.5", {"mmoe": "mmoe"}, settings=FAST)})
    with pytest.raises(ValueError, match="not in its weightings"):
        run_leaderboard(
            {
                "x": Study(
                    "correlated:0.5",
                    {"single": "single"},
                    only={"gradnorm": ["single"]},
                    settings=FAST,
                )
            }
        )
    with pytest.raises(ValueError, match="not in its models"):
        run_leaderboard(
            {
                "x": Study(
                    "correlated:0.5",
                    {"single": "single"},
                    weightings={"equal": "equal"},
                    only={"equal": ["ple"]},
                    settings=FAST,
                )
            }
        )


@pytest.mark.parametrize("funnel", [False, True])
def test_the_matched_line_up_has_one_dense_budget(funnel):
    if funnel:
        data = mb.simulate_funnel(500, seed=0, n_users=300, n_items=100)
    else:
        data = mb.make_correlated_tasks(200, 0.5, seed=0)
    models, sizes = matched_models(data.schema, esmm=funnel)
    assert list(sizes["model"]) == list(models)
    assert ("ESMM" in models) == funnel
    dense = sizes.set_index("model")["dense_parameters"]
    assert (dense / dense["CGC"] - 1).abs().max() < 0.05
    for name, spec in models.items():
        make = getattr(spec, "factory", spec)
        model = make(data.schema, 3)
        assert count_parameters(model, by_part=True)["dense"] == dense[name], name
        model(next(iter(data.loader(8, shuffle=False))))  # it runs
    with pytest.raises(ValueError, match="two tasks"):
        matched_models(data.select_tasks([data.task_names[0]]).schema)
