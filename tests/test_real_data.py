"""Tests of mtlbook.book.appendix_a: official splits, user subsets, conditional tasks and the
comparison on given splits. Offline, on small synthetic stand-ins for the real data sets."""

from __future__ import annotations

import doctest

import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import mtlbook as mb
from mtlbook.analysis.compare import CompareResult, model_factory
from mtlbook.analysis.runs import PerTask
from mtlbook.book import appendix_a as real_data
from mtlbook.book.appendix_a import (
    OnTasks,
    add_conditional_task,
    compare_on_splits,
    conditional_estimate,
    group_subset,
    headline_table,
    official_split,
    plot_gains,
)
from mtlbook.data import MultiTaskData
from mtlbook.models import ESMM, MMoE, SingleTask
from mtlbook.training.population import fit_population

matplotlib.use("Agg")
FIT = {"epochs": 2, "batch_size": 256, "lr": 1e-2}


def _with_parts(n_train: int = 30, n_test: int = 10) -> MultiTaskData:
    n = n_train + n_test
    rng = np.random.default_rng(0)
    return MultiTaskData(
        dense=rng.normal(size=(n, 2)),
        dense_names=["a", "b"],
        labels={"y": rng.integers(0, 2, n)},
        tasks={"y": "binary"},
        truth=pd.DataFrame({"part": ["train"] * n_train + ["test"] * n_test, "row": np.arange(n)}),
    )


@pytest.fixture(scope="module")
def funnel() -> MultiTaskData:
    """2,000 impressions with click, purchase (= click and buy) and purchase | click."""
    data = mb.simulate_funnel(
        2_000, seed=3, n_users=80, n_items=60, click_rate=0.2, purchase_rate=0.06
    )
    return add_conditional_task(data, "purchase", "click")


# ----------------------------------------------------------------------------- official_split


def test_official_split_keeps_the_test_part_and_carves_validation_from_train():
    data = _with_parts()
    train, valid, test = official_split(data, valid_fraction=0.2, seed=1)
    assert (len(train), len(valid), len(test)) == (24, 6, 10)
    assert test.truth["row"].tolist() == list(range(30, 40))  # the official part, in order
    rows = set(train.truth["row"]) | set(valid.truth["row"])
    assert rows == set(range(30)) and not set(train.truth["row"]) & set(valid.truth["row"])
    _, other_valid, other_test = official_split(data, valid_fraction=0.2, seed=2)
    assert len(other_valid) == 6 and set(other_valid.truth["row"]) != set(valid.truth["row"])
    assert other_test.truth["row"].tolist() == test.truth["row"].tolist()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"column": "fold"}, "truth columns are"),
        ({"valid_fraction": 0.0}, "valid_fraction"),
        ({"valid_fraction": 1.0}, "valid_fraction"),
    ],
)
def test_official_split_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        official_split(_with_parts(), **kwargs)


def test_official_split_needs_both_parts():
    with pytest.raises(ValueError, match="empty split"):
        official_split(_with_parts(n_test=0))
    data = _with_parts()
    data.truth.loc[0, "part"] = "dev"
    with pytest.raises(ValueError, match="expected only"):
        official_split(data)


# ----------------------------------------------------------------------------- group_subset


def test_group_subset_keeps_whole_groups(funnel):
    kept = group_subset(funnel, 0.25, seed=0)
    users = np.unique(kept.groups)
    assert len(users) == round(0.25 * len(np.unique(funnel.groups)))
    full_counts = pd.Series(funnel.groups).value_counts()
    kept_counts = pd.Series(kept.groups).value_counts()
    assert (kept_counts == full_counts[kept_counts.index]).all()  # every kept user whole
    assert group_subset(funnel, 1.0) is funnel
    assert not np.array_equal(np.unique(group_subset(funnel, 0.25, seed=1).groups), users)


def test_group_subset_errors():
    with pytest.raises(ValueError, match="groups"):
        group_subset(_with_parts(), 0.5)
    with pytest.raises(ValueError, match="fraction"):
        group_subset(mb.simulate_funnel(100, n_users=10, n_items=10), 0.0)


# ------------------------------------------------------------------------ conditional tasks


def test_add_conditional_task_masks_and_copies_labels(funnel):
    cond = "purchase_given_click"
    assert funnel.task_names == ("click", "purchase", cond)
    assert np.array_equal(funnel.mask(cond), funnel.labels["click"] == 1)
    assert np.array_equal(
        funnel.labels[cond][funnel.mask(cond)], funnel.labels["purchase"][funnel.mask(cond)]
    )
    assert funnel.meta["conditional_tasks"] == {cond: ("purchase", "click")}
    assert cond not in funnel.schema.dense + funnel.schema.categorical
    # Subsets keep the record, so a split still knows its conditional task.
    assert funnel.subset([0, 1]).meta["conditional_tasks"] == {cond: ("purchase", "click")}


def test_add_conditional_task_errors(funnel):
    base = funnel.select_tasks(["click", "purchase"])
    with pytest.raises(ValueError, match="not a task"):
        add_conditional_task(base, "buy", "click")
    with pytest.raises(ValueError, match="must differ"):
        add_conditional_task(base, "click", "click")
    with pytest.raises(ValueError, match="already exists"):
        add_conditional_task(funnel, "purchase", "click")
    with pytest.raises(ValueError, match="not the joint event"):
        add_conditional_task(base, "click", "purchase")  # clicks without a purchase exist
    with pytest.raises(ValueError, match="masked"):
        add_conditional_task(funnel, "click", "purchase_given_click", name="x")
    dwell = mb.simulate_funnel(200, n_users=10, n_items=10, with_dwell_time=True)
    with pytest.raises(ValueError, match="binary"):
        add_conditional_task(dwell, "dwell_time", "click")


def test_conditional_estimate_ratio_pcvr_and_none(funnel):
    p = pd.DataFrame({"click": [0.5, 0.1], "purchase": [0.25, 0.2], "pcvr": [0.9, 0.9]})
    assert conditional_estimate(p, "purchase", "click").tolist() == [0.5, 1.0]
    esmm = ESMM(funnel.select_tasks(["click", "purchase"]).schema)
    assert conditional_estimate(p, "purchase", "click", esmm).tolist() == [0.9, 0.9]
    # An ESMM of another funnel has a pcvr column, but not this funnel's: use the ratio.
    other = ESMM(esmm.schema, ctr_task="purchase", ctcvr_task="click")
    assert conditional_estimate(p, "purchase", "click", other).tolist() == [0.5, 1.0]
    assert conditional_estimate(p[["click"]], "purchase", "click") is None


# --------------------------------------------------------------------------- compare_on_splits


def test_compare_on_splits_scores_conditional_tasks(funnel):
    single = PerTask(model_factory(SingleTask, hidden_units=(8,)))
    models = {
        "single": single,
        "mmoe": model_factory(MMoE, n_experts=2, expert_units=(8,), tower_units=(4,)),
        "esmm": model_factory(ESMM, tower_units=(8,)),
        "naive": OnTasks(single, ["purchase_given_click"]),
    }
    result = compare_on_splits(
        models, lambda s: funnel.split((0.6, 0.2, 0.2), seed=s), [0, 1], **FIT
    )
    assert isinstance(result, CompareResult)
    raw = result.raw
    tasks = raw.groupby("model")["task"].agg(lambda t: sorted(set(t))).to_dict()
    both = ["click", "purchase", "purchase_given_click"]
    assert tasks == {"single": both, "mmoe": both, "esmm": both, "naive": ["purchase_given_click"]}
    assert set(raw["metric"]) == {"auc", "logloss", "gauc"}
    assert sorted(raw["seed"].unique()) == [0, 1]
    # The conditional task is trained only by the model that asks for it.
    trained = raw.dropna(subset=["best_epoch"]).groupby("model")["task"].agg(set).to_dict()
    assert "purchase_given_click" not in trained["mmoe"] | trained["single"]
    assert trained["naive"] == {"purchase_given_click"}
    gains = result.gains("single")
    assert {"mmoe", "esmm", "naive"} == set(gains["model"])
    table = headline_table({"funnel": result}, {"funnel": ["auc", "gauc"]})
    assert list(table.columns) == ["single", "mmoe", "esmm", "naive"]
    assert table.loc[("funnel", "click", "auc"), "naive"] == ""


def test_compare_on_splits_matches_a_direct_population_run(funnel):
    """ESMM's score on the conditional task is its own pCVR's AUC on the clicked test rows."""
    train, valid, test = funnel.split((0.6, 0.2, 0.2), seed=5)
    factory = model_factory(ESMM, tower_units=(8,))
    result = compare_on_splits({"esmm": factory}, (train, valid, test), [3, 4], **FIT)
    base = [d.select_tasks(["click", "purchase"]) for d in (train, valid, test)]
    valid_plain = base[1].subset(np.arange(len(base[1])))
    valid_plain.groups = None
    direct = fit_population(
        lambda s: factory(base[0].schema, s), base[0], valid_plain, [3, 4], **FIT
    )
    clicked = test.mask("purchase_given_click")
    for k, seed in enumerate([3, 4]):
        pcvr = direct.model(k).predict(base[2])["pcvr"].to_numpy()
        expected = roc_auc_score(test.labels["purchase"][clicked], pcvr[clicked])
        raw = result.raw
        got = raw[
            (raw["seed"] == seed)
            & (raw["task"] == "purchase_given_click")
            & (raw["metric"] == "auc")
        ]["value"].item()
        assert got == pytest.approx(expected, abs=1e-9)


def test_compare_on_splits_errors(funnel):
    splits = funnel.split((0.6, 0.2, 0.2), seed=0)
    with pytest.raises(ValueError, match="not tasks of the data"):
        compare_on_splits({"mmoe": "mmoe"}, splits, [0], tasks=["view"], **FIT)
    with pytest.raises(ValueError, match="not tasks of the data"):
        compare_on_splits({"x": OnTasks("single", ["view"])}, splits, [0], **FIT)
    with pytest.raises(TypeError, match=r"\(train, valid, test\)"):
        compare_on_splits({"mmoe": "mmoe"}, splits[:2], [0], **FIT)
    with pytest.raises(ValueError, match="distinct"):
        compare_on_splits({"mmoe": "mmoe"}, splits, [0, 0], **FIT)


# ------------------------------------------------------------------------- tables and figures


def _toy_result(shift: float) -> CompareResult:
    rows = [
        (m, "equal", s, t, "auc", 0.7 + shift * (m == "b") + 0.01 * s)
        for m in ("a", "b")
        for s in range(3)
        for t in ("y", "z")
    ]
    return CompareResult(
        pd.DataFrame(rows, columns=["model", "weighting", "seed", "task", "metric", "value"])
    )


def test_headline_table_values_and_gains():
    results = {"one": _toy_result(0.07), "two": _toy_result(-0.07)}
    values = headline_table(results)
    assert values.index.tolist() == [
        ("one", "y", "auc"),
        ("one", "z", "auc"),
        ("two", "y", "auc"),
        ("two", "z", "auc"),
    ]
    assert values.loc[("one", "y", "auc"), "b"].startswith("0.78 [")
    gains = headline_table(results, gains_over="a")
    assert list(gains.columns) == ["b"]
    assert gains.loc[("one", "y", "auc"), "b"].startswith("+")
    assert gains.loc[("two", "y", "auc"), "b"].startswith("-")
    with pytest.raises(ValueError, match="no rows"):
        headline_table(results, "gauc")
    with pytest.raises(TypeError, match="CompareResult"):
        headline_table({"one": pd.DataFrame()})


def test_plot_gains_draws_one_row_per_task():
    import matplotlib.pyplot as plt

    gains = _toy_result(0.07).gains("a")
    ax = plot_gains(gains, title="toy")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["y（AUC）", "z（AUC）"]
    assert ax.get_title() == "toy"
    with pytest.raises(ValueError, match="columns"):
        plot_gains(gains.drop(columns="lo"))
    plt.close("all")


def test_docstring_examples(monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setenv("TQDM_DISABLE", "1")
    result = doctest.testmod(real_data, optionflags=doctest.ELLIPSIS, verbose=False)
    plt.close("all")
    assert result.attempted > 0 and result.failed == 0
