"""restart_study(): random restarts on fixed data, scored once on test at the best validation
epoch; restart_summary(), gate_divergence() and the two plots; clear errors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

import mtlbook as mb
from mtlbook.book.ch12_3_3a import (
    CURVE_COLUMNS,
    SCORE_COLUMNS,
    compare_with_paper,
    gate_divergence,
    gate_shift,
    paper_models,
    plot_mmoe_diagram,
    plot_moe_diagrams,
    plot_omoe_diagram,
    plot_restart_curves,
    plot_restart_distributions,
    restart_study,
    restart_summary,
    zh_claims,
)
from mtlbook.book.page import setup_page
from mtlbook.models import MMoE, OMoE, SharedBottom

CORRELATIONS = (0.5, 1.0)
N_RESTARTS = 3
EPOCHS = 2


def _small_models():
    return {
        "SharedBottom": lambda schema, seed: SharedBottom(
            schema, bottom_units=(8,), tower_units=(4,), seed=seed
        ),
        "MMoE": lambda schema, seed: MMoE(
            schema, n_experts=3, expert_units=(4,), tower_units=(4,), seed=seed
        ),
    }


@pytest.fixture(scope="module")
def study():
    return restart_study(
        _small_models(),
        CORRELATIONS,
        N_RESTARTS,
        n_samples=400,
        epochs=EPOCHS,
        batch_size=64,
        lr=1e-2,
    )


def test_paper_models_have_the_papers_sizes():
    schema = mb.make_correlated_tasks(10, 0.5).schema  # 100 dense inputs, two tasks
    models = {name: f(schema, 0) for name, f in paper_models().items()}
    assert isinstance(models["SharedBottom"], SharedBottom)
    assert type(models["OMoE"]) is OMoE and type(models["MMoE"]) is MMoE
    assert models["SharedBottom"].bottom.units == (113,)
    assert models["MMoE"].experts.n_experts == 8 and models["MMoE"].experts.units == (16,)
    # Experts 100·16·8 + biases 16·8; gates 2·(100·8 + 8); towers 2·(16·8 + 8 + 8 + 1).
    assert models["MMoE"].n_parameters() == 12_928 + 1_616 + 290
    assert models["OMoE"].n_parameters() == 12_928 + 808 + 290
    with pytest.raises(ValueError, match="n_experts"):
        paper_models(n_experts=0)


def test_scores_and_curves_have_one_row_per_run(study):
    n_models = len(_small_models())
    assert list(study.scores.columns) == SCORE_COLUMNS
    assert list(study.curves.columns) == CURVE_COLUMNS
    assert len(study.scores) == len(CORRELATIONS) * n_models * N_RESTARTS * 3
    assert len(study.curves) == len(CORRELATIONS) * n_models * N_RESTARTS * EPOCHS * 3
    assert set(study.scores["task"]) == {"task1", "task2", "all"}
    assert study.scores["best_epoch"].between(1, EPOCHS).all()
    wide = study.scores.pivot_table(
        index=["correlation", "model", "member"], columns="task", values="value"
    )
    np.testing.assert_allclose(wide["all"], wide["task1"] + wide["task2"], rtol=1e-6)
    assert set(study.populations) == {(p, m) for p in CORRELATIONS for m in _small_models()}


def test_data_are_fixed_and_task1_is_the_same_at_every_correlation(study):
    (train_a, _, test_a), (train_b, _, test_b) = (study.data[p] for p in CORRELATIONS)
    np.testing.assert_array_equal(train_a.dense, train_b.dense)
    np.testing.assert_array_equal(train_a.labels["task1"], train_b.labels["task1"])
    assert not np.allclose(train_a.labels["task2"], train_b.labels["task2"])
    assert len(train_a) == 240 and len(test_a) == len(test_b) == 80


def test_a_score_is_the_members_test_mse_at_its_best_epoch(study):
    model = study.populations[(0.5, "MMoE")].model(1)
    test = study.data[0.5][2]
    mse = mb.evaluate(model, test).set_index(["task", "metric"])["value"]
    s = study.scores
    ours = s[(s["correlation"] == 0.5) & (s["model"] == "MMoE") & (s["member"] == 1)]
    ours = ours.set_index("task")["value"]
    assert ours["task1"] == pytest.approx(mse[("task1", "mse")], rel=1e-5)
    assert ours["task2"] == pytest.approx(mse[("task2", "mse")], rel=1e-5)


def test_named_members_are_chosen_on_validation(study):
    summary = study.populations[(1.0, "SharedBottom")].summary
    best = int(summary.loc[summary["best_score"].idxmin(), "member"])
    chosen = study.model("SharedBottom", 1.0, "best")
    expected = study.populations[(1.0, "SharedBottom")].model(best)
    for p, q in zip(chosen.parameters(), expected.parameters(), strict=True):
        assert np.array_equal(p.detach().numpy(), q.detach().numpy())
    assert not chosen.training
    with pytest.raises(ValueError, match="member"):
        study.model("MMoE", 0.5, "typical")
    with pytest.raises(KeyError, match="OMoE"):
        study.model("OMoE", 0.5)


def test_summary_counts_spread_and_bad_runs():
    values = {"A": [1.0, 1.1, 0.9, 1.0, 5.0], "B": [2.0, 2.0, 2.0, 2.0, 2.0]}
    scores = pd.DataFrame(
        [
            {
                "correlation": 0.5,
                "model": m,
                "member": i,
                "seed": i,
                "best_epoch": 1,
                "task": "task1",
                "value": v,
            }
            for m, vs in values.items()
            for i, v in enumerate(vs)
        ]
    )
    table = restart_summary(scores, bad_ratio=1.5).set_index("model")
    assert table.loc["A", "n"] == 5
    assert table.loc["A", "mean"] == pytest.approx(1.8)
    assert table.loc["A", "median"] == pytest.approx(1.0)
    assert table.loc["A", "bad_threshold"] == pytest.approx(1.5)  # 1.5 × lowest median
    assert table.loc["A", "bad_share"] == pytest.approx(0.2)
    assert table.loc["B", "bad_share"] == pytest.approx(1.0)
    assert table.loc["B", "std"] == pytest.approx(0.0)
    assert table.loc["A", "range90"] == pytest.approx(
        np.quantile(values["A"], 0.95) - np.quantile(values["A"], 0.05)
    )
    assert table.loc["A", "lo"] < table.loc["A", "mean"] < table.loc["A", "hi"]
    with pytest.raises(ValueError, match="task"):
        restart_summary(scores, task="task3")
    with pytest.raises(ValueError, match="bad_ratio"):
        restart_summary(scores, bad_ratio=1.0)


def test_gate_divergence_is_a_distance_per_member(study):
    gd = gate_divergence(study, "MMoE")
    assert list(gd.columns) == ["correlation", "member", "seed", "sample_tv", "mean_tv"]
    assert len(gd) == len(CORRELATIONS) * N_RESTARTS
    assert gd[["sample_tv", "mean_tv"]].stack().between(0.0, 1.0).all()
    assert (gd["mean_tv"] <= gd["sample_tv"] + 1e-12).all()  # |mean of diff| ≤ mean of |diff|
    with pytest.raises(ValueError, match="gate"):
        gate_divergence(study, "SharedBottom")
    with pytest.raises(ValueError, match="not in the study"):
        gate_divergence(study, "PLE")


def test_gate_shift_sees_a_gate_that_follows_a_signal():
    data = mb.make_correlated_tasks(400, 0.0, seed=1)
    model = MMoE(data.schema, n_experts=2, expert_units=(4,), tower_units=(4,), seed=0)
    with torch.no_grad():  # task1's gate follows x0, task2's ignores the inputs
        model.gates.weight.zero_()
        model.gates.bias.zero_()
        model.gates.weight[0, 0], model.gates.weight[0, 1] = 5.0, -5.0
    signals = {"x0": data.dense[:, 0], "x1": data.dense[:, 1]}
    shift = gate_shift(model, data, signals).set_index(["gate", "signal"])["tv"]
    assert shift[("task1", "x0")] > 0.5
    assert shift[("task1", "x1")] < 0.1
    assert shift[("task2", "x0")] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="one value per sample"):
        gate_shift(model, data, {"short": np.zeros(3)})


def test_compare_with_paper_computes_each_verdict():
    rng = np.random.default_rng(0)
    means = {
        ("SharedBottom", 0.5): 3.0,
        ("SharedBottom", 1.0): 2.0,
        ("OMoE", 0.5): 2.0,
        ("OMoE", 1.0): 1.0,
        ("MMoE", 0.5): 1.1,
        ("MMoE", 1.0): 1.0,
    }
    scores = pd.DataFrame(
        [
            {
                "correlation": p,
                "model": m,
                "member": i,
                "seed": i,
                "best_epoch": 1,
                "task": "task1",
                "value": mu + 0.01 * rng.standard_normal(),
            }
            for (m, p), mu in means.items()
            for i in range(20)
        ]
    )
    table = compare_with_paper(scores)
    assert list(table.columns) == ["figure", "claim", "value", "lo", "hi", "verdict"]
    verdict = dict(zip(table["claim"], table["verdict"], strict=True))
    assert verdict["MMoE: mean loss at p=0.5 minus at p=1 > 0"] == "yes"
    assert (
        verdict["MMoE less sensitive to p than OMoE (|change of OMoE| − |change of MMoE| > 0)"]
        == "yes"
    )
    assert verdict["p=1: OMoE ≈ MMoE (difference ≈ 0)"] == "consistent"
    assert verdict["p=0.5: MMoE beats OMoE (mean OMoE − MMoE > 0)"] == "yes"
    with pytest.raises(ValueError, match="needs models"):
        compare_with_paper(scores[scores["model"] != "OMoE"])


@pytest.fixture()
def page():
    """The book's CJK font (a missing glyph raises), rcParams and warning filters restored."""
    with matplotlib.rc_context(), warnings.catch_warnings():
        setup_page()
        yield
    plt.close("all")


def test_plots_return_figures(study, page):
    for fig in (
        plot_restart_curves(study.curves),
        plot_restart_distributions(study.scores, task="all"),
        plot_restart_distributions(study.scores, kind="hist"),
    ):
        assert isinstance(fig, plt.Figure)
        fig.canvas.draw()  # every Chinese label has its glyphs
        plt.close(fig)
    with pytest.raises(ValueError, match="kind"):
        plot_restart_distributions(study.scores, kind="violin")


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_moe_diagrams_label_experts_gates_and_towers_in_chinese(page):
    omoe, mmoe = plot_omoe_diagram(), plot_mmoe_diagram(["点击", "购买", "停留时长"])
    both = plot_moe_diagrams()
    for fig in (omoe, mmoe, both):
        fig.canvas.draw()
        texts = "\n".join(_texts(fig))
        for word in ("输入特征", "专家 1", "专家 n", "加权求和", "任务塔", "ŷ"):
            assert word in texts
        plt.close(fig)
    assert sum(t.startswith("门控（") for t in _texts(omoe)) == 1  # one shared gate
    assert sum(t.startswith("门控（") for t in _texts(mmoe)) == 3  # one gate per task
    assert sum(t.startswith("门控（") for t in _texts(both)) == 1 + 2
    with pytest.raises(ValueError, match="task"):
        plot_mmoe_diagram([])


def test_zh_claims_words_every_claim_and_verdict_in_chinese(study):
    scores = study.scores.copy()
    omoe = scores[scores["model"] == "MMoE"].assign(model="OMoE")
    claims = compare_with_paper(pd.concat([scores, omoe], ignore_index=True))
    shown = zh_claims(claims)
    assert list(shown.columns) == ["论文的图", "论文的说法", "数值", "下限", "上限", "判断"]
    assert shown["论文的说法"].str.contains("[\u4e00-\u9fff]").all()
    assert set(shown["判断"]) <= {"是", "否", "否（方向相反）", "无定论", "一致"}
    assert set(shown["论文的图"]) == {"图 4", "图 5"}
    with pytest.raises(ValueError, match="no Chinese wording"):
        zh_claims(claims.assign(claim="something else"))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"models": {}}, TypeError, "non-empty"),
        ({"models": {"x": 3}}, TypeError, "factories"),
        ({"correlations": 0.5}, TypeError, "sequence"),
        ({"correlations": [0.5, 1.5]}, ValueError, r"\[-1, 1\]"),
        ({"correlations": [0.5, 0.5]}, ValueError, "repeats"),
        ({"n_restarts": 0}, ValueError, "n_restarts"),
        ({"monitor": "task1:mse"}, ValueError, "monitor"),
        ({"fractions": (0.5, 0.5)}, ValueError, "fractions"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    args = {
        "models": _small_models(),
        "correlations": [0.5],
        "n_restarts": 2,
        "n_samples": 100,
        "epochs": 1,
        **kwargs,
    }
    with pytest.raises(error, match=match):
        restart_study(**args)
