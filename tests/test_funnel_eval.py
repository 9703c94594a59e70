"""Truth-based scoring of funnel models and the RankScore trade-off (mtlbook.analysis.truth)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import mtlbook as mb
from mtlbook.analysis.truth import (
    excess_logloss,
    expected_auc,
    funnel_predictions,
    paired_improvement,
    plot_truth_calibration,
    score_against_truth,
)
from mtlbook.book.ch12_5 import (
    FunnelRun,
    NaiveCVR,
    fit_funnel_models,
    plot_tradeoff,
    rank_tradeoff,
    selection_shift,
    top_k_mask,
    tradeoff_by_seed,
)
from mtlbook.models import AITM, ESMM, SingleTask

SMALL = {"n_users": 100, "n_items": 50, "click_rate": 0.1, "purchase_rate": 0.03}


def _brute_force_auc(score: np.ndarray, q: np.ndarray) -> float:
    """Σ_{i≠j} q_i (1 − q_j) [s_i > s_j, ties ½] / Σ_{i≠j} q_i (1 − q_j), pair by pair."""
    num = den = 0.0
    for i in range(len(score)):
        for j in range(len(score)):
            if i == j:
                continue
            w = q[i] * (1 - q[j])
            den += w
            num += w * (1.0 if score[i] > score[j] else 0.5 if score[i] == score[j] else 0.0)
    return num / den


# ------------------------------------------------------------------------------- metrics
def test_expected_auc_is_the_ordinary_auc_for_hard_labels():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(float)
    score = np.round(rng.random(300) + 0.5 * y, 1)  # rounded: many ties
    assert expected_auc(score, y) == pytest.approx(roc_auc_score(y, score), abs=1e-12)


def test_expected_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(1)
    q = rng.random(40)
    score = np.round(q + 0.3 * rng.standard_normal(40), 1)
    assert expected_auc(score, q) == pytest.approx(_brute_force_auc(score, q), abs=1e-12)


def test_expected_auc_is_the_mean_auc_over_label_draws():
    rng = np.random.default_rng(2)
    q = rng.uniform(0.05, 0.6, 500)
    score = q + 0.1 * rng.standard_normal(500)
    draws = [roc_auc_score(rng.random(500) < q, score) for _ in range(400)]
    assert expected_auc(score, q) == pytest.approx(np.mean(draws), abs=3e-3)
    assert expected_auc(q, q) > expected_auc(score, q) > 0.5


def test_expected_auc_errors():
    with pytest.raises(ValueError, match="probabilities"):
        expected_auc([0.1, 0.2], [0.5, 1.5])
    with pytest.raises(ValueError, match="undefined"):
        expected_auc([0.1, 0.2], [0.0, 0.0])
    with pytest.raises(ValueError, match="expected 2"):
        expected_auc([0.1, 0.2], [0.5, 0.5, 0.5])


def test_excess_logloss_is_cross_entropy_minus_entropy():
    rng = np.random.default_rng(3)
    q, p = rng.uniform(0.01, 0.99, 200), rng.uniform(0.01, 0.99, 200)
    cross = -np.mean(q * np.log(p) + (1 - q) * np.log(1 - p))
    entropy = -np.mean(q * np.log(q) + (1 - q) * np.log(1 - q))
    assert excess_logloss(p, q) == pytest.approx(cross - entropy, rel=1e-10)
    assert excess_logloss(q, q) == pytest.approx(0.0, abs=1e-12)
    # 0/1 truth: the excess is the ordinary log-loss.
    y = (rng.random(200) < 0.5).astype(float)
    assert excess_logloss(p, y) == pytest.approx(
        -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rel=1e-10
    )


# ------------------------------------------------------------------------------- ranking
def test_top_k_mask_per_group_and_globally():
    score = np.array([0.1, 0.9, 0.5, 0.3, 0.7, 0.2])
    groups = np.array([0, 0, 0, 1, 1, 2])
    mask = top_k_mask(score, 2, groups)
    assert mask.tolist() == [False, True, True, True, True, True]  # group 2 has one row
    assert top_k_mask(score, 2).tolist() == [False, True, False, False, True, False]
    with pytest.raises(ValueError, match="positive integer"):
        top_k_mask(score, 0)
    with pytest.raises(ValueError, match="groups has"):
        top_k_mask(score, 1, groups[:3])


def test_top_k_mask_random_groups_pick_the_largest():
    rng = np.random.default_rng(4)
    score, groups = rng.random(1000), rng.integers(0, 30, 1000)
    mask = top_k_mask(score, 5, groups)
    for g in range(30):
        mine = score[groups == g]
        np.testing.assert_array_equal(
            np.sort(score[mask & (groups == g)]), np.sort(mine)[-min(5, len(mine)) :]
        )


def test_rank_tradeoff_with_the_truth_reaches_both_optima():
    rng = np.random.default_rng(5)
    pctr, pcvr = rng.uniform(0.01, 0.3, 600), rng.uniform(0.05, 0.5, 600)
    groups = rng.integers(0, 20, 600)
    out = rank_tradeoff(
        pctr, pcvr, pctr, pctr * pcvr, alphas=[1, 2], betas=[0, 1, 2], k=5, groups=groups
    ).set_index(["alpha", "beta"])
    assert out.loc[(1, 0), "clicks_vs_best"] == pytest.approx(1.0)
    assert out.loc[(1, 1), "purchases_vs_best"] == pytest.approx(1.0)
    # Only β/α matters: (1, 1) and (2, 2) pick the same impressions.
    pd.testing.assert_series_equal(out.loc[(1, 1)], out.loc[(2, 2)], check_names=False)
    assert (out["clicks_vs_best"] <= 1 + 1e-12).all()
    assert (out["purchases_vs_best"] <= 1 + 1e-12).all()
    assert (out["clicks_vs_random"] > 1).all()


def test_rank_tradeoff_random_reference():
    pctr = np.array([0.1, 0.2, 0.3, 0.4])
    pctcvr = pctr / 10
    out = rank_tradeoff(
        pctr, np.ones(4), pctr, pctcvr, alphas=[1], betas=[0], k=1, groups=[0, 0, 1, 1]
    )
    # Random: half of each group's sum; the top-1 of each group: 0.2 + 0.4.
    assert out["clicks"].iloc[0] == pytest.approx(0.6)
    assert out["clicks_vs_random"].iloc[0] == pytest.approx(0.6 / 0.5)
    with pytest.raises(ValueError, match="probabilities"):
        rank_tradeoff(pctr * 3, np.ones(4), pctr, pctcvr, alphas=[1], betas=[0], k=1)


# ------------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def worlds():
    return [
        mb.simulate_funnel(3_000, seed=s, **SMALL).split((0.5, 0.2, 0.3), seed=s) for s in (0, 1)
    ]


@pytest.fixture(scope="module")
def run(worlds) -> FunnelRun:
    return fit_funnel_models(
        worlds,
        [0, 1],
        {
            "naive": NaiveCVR(
                lambda schema, seed: SingleTask(schema, hidden_units=(8,), seed=seed),
                max_cvr_epochs=4,
            ),
            "ESMM": lambda schema, seed: ESMM(schema, tower_units=(8,), seed=seed),
            "AITM": lambda schema, seed: AITM(schema, tower_units=(8,), seed=seed),
        },
        epochs=2,
        batch_size=256,
        lr=1e-2,
    )


def test_fit_funnel_models_predicts_every_test_impression(run, worlds):
    pred = run.predictions
    n_test = [len(w[2]) for w in worlds]
    assert len(pred) == 3 * sum(n_test)
    for (_model, seed), part in pred.groupby(["model", "seed"]):
        test = worlds[seed][2]
        assert len(part) == n_test[seed]
        np.testing.assert_allclose(part["true_pcvr"], test.truth["pcvr"])
        np.testing.assert_array_equal(part["clicked"], test.labels["click"] == 1)
        np.testing.assert_array_equal(part["user"], test.groups)
        assert part[["pctr", "pcvr", "pctcvr"]].apply(lambda c: c.between(0, 1)).all().all()
        # pcvr = min(pctcvr / pctr, 1) for AITM (its pctcvr may exceed its pctr), the
        # product structure for ESMM and the naive pair.
        np.testing.assert_allclose(
            np.minimum(part["pctcvr"], part["pctr"]),
            part["pctr"] * part["pcvr"],
            rtol=1e-4,
            atol=1e-7,
        )
    parts = run.summary.groupby("model")["part"].unique()
    assert set(parts["naive"]) == {"ctr", "cvr (clicked only)"}
    naive_cvr = run.summary[run.summary["part"] == "cvr (clicked only)"]
    assert (naive_cvr["best_epoch"] <= 4).all()  # max_cvr_epochs caps its epochs
    assert len(run.models["naive"]) == 2 and len(run.models["naive"][0]) == 2


def test_naive_cvr_model_is_trained_on_clicked_impressions_only(run, worlds):
    ctr_model, cvr_model = run.models["naive"][0]
    assert ctr_model.task_names == ("click",) and cvr_model.task_names == ("purchase",)
    # Refit the CVR model by hand on the clicked subset: the same weights come out.
    train, valid, _ = (d.select_tasks(["click", "purchase"]) for d in worlds[0])
    for d in (train, valid):
        d.groups = None
    tr = train.subset(train.labels["click"] == 1).select_tasks(["purchase"])
    va = valid.subset(valid.labels["click"] == 1).select_tasks(["purchase"])
    model = SingleTask(tr.schema, hidden_units=(8,), seed=0)
    mb.fit(model, tr, va, seed=0, epochs=4, batch_size=256, lr=1e-2, progress=False)
    for a, b in zip(model.parameters(), cvr_model.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_funnel_predictions_of_each_kind(run, worlds):
    test = worlds[0][2]
    esmm = funnel_predictions(run.models["ESMM"][0], test)
    np.testing.assert_allclose(esmm["pctcvr"], esmm["pctr"] * esmm["pcvr"], rtol=1e-5)
    aitm_model = run.models["AITM"][0]
    aitm = funnel_predictions(aitm_model, test)
    raw = aitm_model.predict(test.select_tasks(["click", "purchase"]))
    np.testing.assert_allclose(aitm["pctr"], raw["click"], rtol=1e-6)
    np.testing.assert_allclose(aitm["pctcvr"], raw["purchase"], rtol=1e-6)
    assert (aitm["pcvr"] <= 1).all()
    naive = funnel_predictions(run.models["naive"][0], test)
    np.testing.assert_allclose(naive["pctcvr"], naive["pctr"] * naive["pcvr"], rtol=1e-12)
    with pytest.raises(TypeError, match="ESMM, an AITM or a pair"):
        funnel_predictions(SingleTask(test.schema), test)


def test_fit_funnel_models_errors(worlds):
    factory = {"ESMM": lambda schema, seed: ESMM(schema, seed=seed)}
    with pytest.raises(ValueError, match="2 worlds for 3 seeds"):
        fit_funnel_models(worlds, [0, 1, 2], factory)
    with pytest.raises(TypeError, match="triple"):
        fit_funnel_models([worlds[0][:2]], [0], factory)
    with pytest.raises(TypeError, match="NaiveCVR"):
        fit_funnel_models(worlds, [0, 1], {"bad": 3})
    no_truth = [tuple(d.subset(np.arange(len(d))) for d in w) for w in worlds]
    for w in no_truth:
        w[2].truth = None
    with pytest.raises(ValueError, match="truth"):
        fit_funnel_models(no_truth, [0, 1], factory)


# ------------------------------------------------------------------------------- scoring
def _perfect(run: FunnelRun) -> pd.DataFrame:
    pred = run.predictions.copy()
    for q in ("pctr", "pcvr", "pctcvr"):
        pred[q] = pred[f"true_{q}"]
    return pred


def test_score_against_truth_of_the_truth_is_perfect(run):
    scores = score_against_truth(_perfect(run), "pcvr").set_index("metric")["value"]
    assert np.allclose(scores["excess_logloss"], 0, atol=1e-12)
    assert np.allclose(scores["rmse"], 0) and np.allclose(scores["mean_ratio"], 1)
    assert np.allclose(scores["spearman"], 1)
    real = score_against_truth(run.predictions, "pcvr")
    assert set(real["subset"]) == {"all", "clicked", "not clicked"}
    # Observed CVR labels exist on clicked impressions only.
    assert set(real.loc[real["metric"] == "auc_labels", "subset"]) == {"clicked"}
    ctr = score_against_truth(run.predictions, "pctr", subsets=["all"])
    assert "auc_labels" in set(ctr["metric"])
    with pytest.raises(ValueError, match="quantity"):
        score_against_truth(run.predictions, "cvr")
    with pytest.raises(ValueError, match="subset"):
        score_against_truth(run.predictions, "pcvr", subsets=["train"])


def test_paired_improvement_signs():
    rows = []
    for seed in range(4):
        for model, auc, loss, ratio in (("base", 0.6, 0.05, 1.5), ("new", 0.7, 0.04, 0.8)):
            rows += [
                (model, seed, "pcvr", "all", "auc_truth", auc + 0.01 * seed),
                (model, seed, "pcvr", "all", "excess_logloss", loss),
                (model, seed, "pcvr", "all", "mean_ratio", ratio),
            ]
    scores = pd.DataFrame(rows, columns=["model", "seed", "quantity", "subset", "metric", "value"])
    out = paired_improvement(scores, "base").set_index("metric")
    assert out.loc["auc_truth", "mean"] == pytest.approx(0.1)
    assert out.loc["excess_logloss", "mean"] == pytest.approx(0.01)
    assert out.loc["mean_ratio", "mean"] == pytest.approx(abs(np.log(1.5)) - abs(np.log(0.8)))
    assert (out["wins"] == 4).all() and (out["n"] == 4).all()
    with pytest.raises(ValueError, match="baseline"):
        paired_improvement(scores, "nope")
    with pytest.raises(ValueError, match="unknown metric"):
        paired_improvement(scores.assign(metric="gauc"), "base")


def test_selection_shift_clicked_impressions_have_higher_rates():
    data = mb.simulate_funnel(20_000, seed=0, **SMALL)
    shift = selection_shift(data)
    assert list(shift.index) == ["all", "clicked", "not clicked"]
    assert (
        shift.loc["clicked", "pcvr"] > shift.loc["all", "pcvr"] > shift.loc["not clicked", "pcvr"]
    )
    assert shift.loc["all", "impressions"] == 20_000
    assert abs(shift.loc["all", "log_price"]) < 1e-6  # standardised over all impressions
    with pytest.raises(ValueError, match="truth"):
        selection_shift(mb.make_correlated_tasks(100, 0.5, task_type="binary"))


def test_plots_and_tradeoff_by_seed(run):
    fig = plot_truth_calibration(run.predictions, "pcvr", seed=0, n_bins=4)
    assert len(fig.axes) == 2
    plt.close(fig)
    trade = tradeoff_by_seed(run.predictions, alphas=[1], betas=[0, 1], k=3)
    assert set(trade["model"]) == {"naive", "ESMM", "AITM", "oracle"}
    assert len(trade) == 4 * 2 * 2  # models × seeds × grid
    oracle = trade[(trade["model"] == "oracle") & (trade["beta"] == 0)]
    assert np.allclose(oracle["clicks_vs_best"], 1)
    fig = plot_tradeoff(trade, models=["oracle", "ESMM"], highlight=(1, 1))
    assert fig.axes[0].get_legend() is not None
    plt.close(fig)
    with pytest.raises(ValueError, match="not in tradeoff"):
        plot_tradeoff(trade, models=["MMoE"])
