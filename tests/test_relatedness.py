"""Relatedness against measured MTL gain (mtlbook.book.ch12_4a)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pytest

import mtlbook as mb
from mtlbook.analysis.compare import model_factory
from mtlbook.analysis.runs import PerTask
from mtlbook.book.ch12_4a import plot_relatedness_gain, relatedness_study
from mtlbook.models import SharedBottom, SingleTask

matplotlib.use("Agg")

SB = model_factory(SharedBottom, bottom_units=(8,), tower_units=(4,))


def cases(n=300):
    return {
        f"p={p}": (lambda s, p=p: mb.make_correlated_tasks(n, p, n_features=8, seed=s))
        for p in (0.0, 0.9)
    }


@pytest.fixture(scope="module")
def study():
    return relatedness_study(
        cases(),
        {"sb": SB},
        [0, 1, 2],
        baseline={"single": PerTask(model_factory(SingleTask, hidden_units=(8,)))},
        conflict_every=2,
        epochs=3,
        batch_size=64,
    )


def test_summary_has_both_measures_and_a_verdict_per_task(study):
    s = study.summary
    assert s[["case", "task"]].values.tolist() == [
        ["p=0.0", "task1"],
        ["p=0.0", "task2"],
        ["p=0.9", "task1"],
        ["p=0.9", "task2"],
    ]
    assert (s["n"] == 3).all()
    assert set(s["verdict"]) <= {"positive", "negative", "inconclusive"}
    assert (s["gain_lo"] <= s["gain_mean"]).all() and (s["gain_mean"] <= s["gain_hi"]).all()
    # the label correlation follows the generator's p
    corr = s.drop_duplicates("case").set_index("case")["label_corr"]
    assert abs(corr["p=0.0"]) < 0.2 < 0.6 < corr["p=0.9"]
    assert s["grad_cosine"].between(-1, 1).all()
    assert (s["grad_cosine_sd"] >= 0).all()


def test_raw_reports_the_original_seeds_and_both_models(study):
    raw = study.raw
    assert sorted(raw["seed"].unique()) == [0, 1, 2]
    assert set(raw["model"]) == {"sb", "single"}
    assert set(raw["case"]) == {"p=0.0", "p=0.9"}
    assert (study.model, study.baseline) == ("sb", "single")
    assert set(study.conflict["case"]) == {"p=0.0", "p=0.9"}
    assert study.conflict["step"].min() == 0


def test_the_first_case_trains_on_the_same_split_as_alone():
    """Case 0 keeps its seeds, so a single-case study is a plain paired comparison."""
    one = relatedness_study({"p=0.9": cases()["p=0.9"]}, SB, [0, 1], epochs=2, batch_size=64)
    assert set(one.raw["model"]) == {"mtl", "single"}
    assert sorted(one.raw["seed"].unique()) == [0, 1]


def test_plot(study):
    fig = plot_relatedness_gain(study.summary)
    assert len(fig.axes) == 2
    plt.close(fig)
    sub = plt.figure().subfigures(2, 1)[1]
    assert plot_relatedness_gain(study.summary, axes=sub.subplots(1, 2)) is sub
    with pytest.raises(ValueError, match="missing"):
        plot_relatedness_gain(study.summary.drop(columns="grad_cosine"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        relatedness_study({}, SB, [0])
    with pytest.raises(ValueError, match="seeds"):
        relatedness_study(cases(), SB, [])
    with pytest.raises(ValueError, match="pairs of tasks"):
        relatedness_study(
            {"funnel": lambda s: mb.simulate_funnel(300, seed=s, with_dwell_time=True)},
            SB,
            [0],
            epochs=1,
        )
    with pytest.raises(ValueError, match="both called"):
        relatedness_study(cases(), {"single": SB}, [0])
    # A per-task baseline as the studied model is refused before anything trains.
    with pytest.raises(TypeError, match=r"model must be a multi-task .* got PerTask"):
        relatedness_study(cases(), PerTask(model_factory(SingleTask)), [0])
