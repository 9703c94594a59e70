"""mtlbook.analysis: gate weights, expert utilisation, gradient conflict, task relatedness.

The gate statistics are checked against the gates themselves (per-sample sums, a direct
computation, pooled groups); the flags against gates whose biases are set by hand; the
gradient cosines against tasks whose gradients are exactly opposite or exactly equal; the
task relatedness against the generator's correlation and a hand-made table.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

import mtlbook as mb
from mtlbook.analysis.experts import expert_usage, expert_utilization, plot_expert_utilization
from mtlbook.analysis.gates import _pool_groups as pool_groups
from mtlbook.analysis.gates import gate_weights, plot_gate_heatmap
from mtlbook.analysis.gradients import (
    GradientConflict,
    gradient_conflict,
    pairwise_cosine,
    plot_gradient_conflict,
)
from mtlbook.analysis.relatedness import plot_task_relatedness, task_relatedness
from mtlbook.data import MultiTaskData
from mtlbook.models import (
    AITM,
    CGC,
    PLE,
    CrossStitch,
    DSelectK,
    MMoE,
    OMoE,
    SharedBottom,
    SingleTask,
)

SMALL = {"expert_units": (8,), "tower_units": (4,), "embedding_dim": 4}
FAST = {"batch_size": 100, "device": "cpu", "progress": False}

GATED = {
    "OMoE": lambda s: OMoE(s, n_experts=3, **SMALL),
    "MMoE": lambda s: MMoE(s, n_experts=3, **SMALL),
    "CGC": lambda s: CGC(s, n_shared_experts=2, n_task_experts=1, **SMALL),
    "PLE": lambda s: PLE(s, n_levels=2, n_shared_experts=2, n_task_experts=1, **SMALL),
    "DSelectK": lambda s: DSelectK(s, n_experts=4, k=2, **SMALL),
}


@pytest.fixture(scope="module")
def funnel(funnel_small) -> MultiTaskData:
    """600 impressions of the small funnel (click, purchase, masked dwell_time)."""
    return funnel_small.subset(np.arange(600))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _ple(schema) -> PLE:
    return GATED["PLE"](schema)


# ---------------------------------------------------------------------------- gate weights
@pytest.mark.parametrize("name", list(GATED))
def test_gate_weights_sum_to_one_per_sample_and_gate(name, funnel):
    data = funnel.subset(np.arange(150))
    # One group per sample: every group's mean is that sample's weight.
    weights = gate_weights(GATED[name](data.schema), data, by=np.arange(len(data)), batch_size=64)
    assert (weights["n"] == 1).all()
    sums = weights.groupby(["group", "level", "gate"])["mean"].sum()
    assert len(sums) == len(data) * weights.groupby(["level", "gate"]).ngroups
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-6)
    assert weights["mean"].between(0, 1).all()


def test_gate_weights_structure_of_mmoe_and_omoe(funnel):
    mmoe = gate_weights(GATED["MMoE"](funnel.schema), funnel)
    assert list(mmoe.columns) == ["level", "gate", "expert", "expert_kind", "n", "mean", "std"]
    assert list(dict.fromkeys(mmoe["gate"])) == list(funnel.task_names)
    assert set(mmoe["expert"]) == {"shared/0", "shared/1", "shared/2"}
    assert (mmoe["expert_kind"] == "shared").all() and (mmoe["level"] == 0).all()
    assert (mmoe["n"] == len(funnel)).all()
    omoe = gate_weights(GATED["OMoE"](funnel.schema), funnel)
    assert omoe["gate"].unique().tolist() == ["shared"]
    np.testing.assert_allclose(omoe["mean"].sum(), 1.0, atol=1e-6)


def test_gate_weights_of_ple_levels_and_shared_gate(funnel):
    weights = gate_weights(_ple(funnel.schema), funnel)
    tasks = list(funnel.task_names)
    level0 = weights[weights["level"] == 0]
    level1 = weights[weights["level"] == 1]
    assert list(dict.fromkeys(level0["gate"])) == [*tasks, "shared"]
    assert list(dict.fromkeys(level1["gate"])) == tasks  # no shared gate on the top level
    shared_gate = level0[level0["gate"] == "shared"]
    assert shared_gate["expert"].tolist() == [f"{t}/0" for t in tasks] + ["shared/0", "shared/1"]
    for task in tasks:
        gate = level1[level1["gate"] == task]
        assert gate["expert"].tolist() == [f"{task}/0", "shared/0", "shared/1"]
        assert gate["expert_kind"].tolist() == [task, "shared", "shared"]
    np.testing.assert_allclose(weights.groupby(["level", "gate"])["mean"].sum(), 1.0, atol=1e-6)


def test_gate_weights_mean_and_std_match_a_direct_computation(funnel):
    model = GATED["MMoE"](funnel.schema).eval()
    weights = gate_weights(model, funnel, batch_size=128)  # several batches, summed
    with torch.no_grad():
        model(next(iter(funnel.loader(len(funnel), shuffle=False))))
    for record in model.gate_records():
        w = record.weights.double().numpy()
        rows = weights[weights["gate"] == record.gate]
        np.testing.assert_allclose(rows["mean"], w.mean(0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(rows["std"], w.std(0, ddof=1), rtol=1e-4, atol=1e-7)


def test_gate_weights_restores_training_mode(funnel):
    model = GATED["MMoE"](funnel.schema).train()
    gate_weights(model, funnel)
    assert model.training


@pytest.mark.parametrize("by", ["segment", "category"])
def test_grouped_gate_weights_pool_to_the_overall_weights(by, funnel):
    model = _ple(funnel.schema)
    overall = gate_weights(model, funnel)
    grouped = gate_weights(model, funnel, by=by)
    assert list(grouped.columns) == [
        "level",
        "gate",
        "expert",
        "expert_kind",
        by,
        "n",
        "mean",
        "std",
    ]
    groups = funnel.to_frame()[by]
    assert set(grouped[by]) == set(groups)
    keys = ["level", "gate", "expert"]
    # One row set per group: every group has every (level, gate, expert) once.
    for _, part in grouped.groupby(by):
        assert part[keys].values.tolist() == overall[keys].values.tolist()
    sizes = grouped.drop_duplicates(by).set_index(by)["n"]
    assert sizes.sum() == len(funnel)
    assert sizes.to_dict() == groups.value_counts().to_dict()
    # The n-weighted mean of the groups' means is the overall mean (and the pooled std the
    # overall std).
    weighted = (
        grouped.assign(s=grouped["mean"] * grouped["n"]).groupby(keys, sort=False)[["s", "n"]].sum()
    )
    np.testing.assert_allclose(weighted["s"] / weighted["n"], overall["mean"], atol=1e-9)
    pooled = pool_groups(grouped, by)
    np.testing.assert_allclose(pooled["std"], overall["std"], rtol=1e-6)


def test_gate_weights_by_labels_and_encoded_categories():
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame(
        {
            "x": rng.standard_normal(n),
            "city": rng.choice(["Oslo", "Rome"], n),
            "a": (rng.random(n) < 0.5).astype(float),
            "b": rng.standard_normal(n),
        }
    )
    data = MultiTaskData.from_frame(
        df, dense=["x"], categorical=["city"], tasks={"a": "binary", "b": "regression"}
    )
    model = MMoE(data.schema, n_experts=2, **SMALL)
    by_city = gate_weights(model, data, by="city")
    assert set(by_city["city"]) == {"Oslo", "Rome"}  # the original labels, not the codes
    labels = np.where(df["x"] > 0, "high", "low")
    by_array = gate_weights(model, data, by=labels)
    assert set(by_array["group"]) == {"high", "low"}
    assert by_array.drop_duplicates("group")["n"].sum() == n


def test_gate_weights_errors(funnel, correlated_small):
    with pytest.raises(ValueError, match="SharedBottom has no gates"):
        gate_weights(SharedBottom(funnel.schema, bottom_units=(8,)), funnel)
    with pytest.raises(ValueError, match=r"CrossStitch has no gates.*mixing_parameters"):
        gate_weights(CrossStitch(correlated_small.schema, hidden_units=(8,)), correlated_small)
    model = GATED["MMoE"](funnel.schema)
    with pytest.raises(ValueError, match="not a column"):
        gate_weights(model, funnel, by="country")
    with pytest.raises(ValueError, match="missing values"):
        gate_weights(model, funnel, by="dwell_time")  # NaN outside its mask
    with pytest.raises(ValueError, match="one group label per sample"):
        gate_weights(model, funnel, by=np.zeros(3))
    with pytest.raises(ValueError, match="schema"):
        gate_weights(model, correlated_small)


def test_gate_weights_of_aitm(funnel_binary):
    data = funnel_binary.subset(np.arange(300))
    weights = gate_weights(AITM(data.schema, tower_units=(8,), embedding_dim=4), data)
    assert weights["expert"].tolist() == ["transfer", "own"]
    np.testing.assert_allclose(weights["mean"].sum(), 1.0, atol=1e-6)


# ---------------------------------------------------------------------------- utilisation
def _rigged_mmoe(schema, n_experts: int = 4) -> MMoE:
    """An MMoE whose gates ignore the input: the first task's gate puts (almost) all its
    weight on expert 1, and no gate gives expert 3 any weight."""
    model = MMoE(schema, n_experts=n_experts, **SMALL)
    with torch.no_grad():
        model.gates.weight.zero_()
        bias = model.gates.bias.view(len(schema.tasks), n_experts)  # dense: gate-major
        bias.zero_()
        bias[0, 1] = 20.0  # collapsed: e^20 / (e^20 + 2) ≈ 1
        bias[:, 3] = -20.0  # unused by every gate
    return model


def test_utilization_flags_a_collapsed_gate_and_an_unused_expert(funnel):
    model = _rigged_mmoe(funnel.schema)
    util = expert_utilization(model, funnel)
    assert util["gate"].tolist() == list(funnel.task_names)
    first, others = util.iloc[0], util.iloc[1:]
    assert first["collapsed_gate"] and first["top_expert"] == "shared/1"
    assert first["effective_experts"] == pytest.approx(1.0, abs=1e-6)
    assert not others["collapsed_gate"].any()
    np.testing.assert_allclose(others["effective_experts"], 3.0, rtol=1e-6)  # 3 of 4 used
    # Input-independent gates: each sample's weights are the mean weights.
    np.testing.assert_allclose(
        util["sample_effective_experts"], util["effective_experts"], rtol=1e-6
    )
    assert all(t == ("shared/3",) for t in util["unused_experts"])

    usage = expert_usage(gate_weights(model, funnel))
    assert usage.loc[usage["unused_expert"], "expert"].tolist() == ["shared/3"]
    assert usage.set_index("expert").loc["shared/1", "top_gate"] == funnel.task_names[0]

    # From the gate_weights frame: the same flags and entropies, no per-sample entropy.
    from_frame = expert_utilization(gate_weights(model, funnel))
    pd.testing.assert_series_equal(from_frame["entropy"], util["entropy"])
    assert from_frame["collapsed_gate"].tolist() == util["collapsed_gate"].tolist()
    assert from_frame["sample_entropy"].isna().all()


def test_utilization_thresholds_are_arguments(funnel):
    model = _rigged_mmoe(funnel.schema)
    # A stricter collapse threshold than the rigged gate's top weight: nothing collapsed.
    assert not expert_utilization(model, funnel, collapse_threshold=1.0)["collapsed_gate"].any()
    fresh = expert_utilization(GATED["MMoE"](funnel.schema), funnel)
    assert not fresh["collapsed_gate"].any()
    assert all(t == () for t in fresh["unused_experts"])
    # With unused_fraction = 1 an expert below the uniform share in every gate is "unused".
    usage = expert_usage(gate_weights(model, funnel), unused_fraction=1.0)
    assert set(usage.loc[usage["unused_expert"], "expert"]) == {"shared/3"}
    with pytest.raises(ValueError, match="unused_fraction"):
        expert_usage(gate_weights(model, funnel), unused_fraction=0.0)


def test_grouped_utilization(funnel):
    util = expert_utilization(_rigged_mmoe(funnel.schema), funnel, by="segment")
    n_segments = funnel.to_frame()["segment"].nunique()
    assert len(util) == n_segments * len(funnel.task_names)
    assert util.groupby("segment")["collapsed_gate"].sum().eq(1).all()
    with pytest.raises(ValueError, match="data"):
        expert_utilization(_rigged_mmoe(funnel.schema))


# ---------------------------------------------------------------------------- gradients
def test_pairwise_cosine_on_constructed_gradients():
    grads = torch.tensor(
        [[1.0, 2.0, 0.0], [-1.0, -2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 5.0], [0.0, 0.0, 0.0]]
    )
    cosine = pairwise_cosine(grads)
    assert cosine[0, 1] == pytest.approx(-1.0) and cosine[0, 2] == pytest.approx(1.0)
    assert cosine[0, 3] == pytest.approx(0.0)
    assert np.isnan(cosine[4]).all() and np.isnan(cosine[:, 4]).all()  # zero gradient
    g = np.random.default_rng(0).standard_normal((4, 50))
    unit = g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(pairwise_cosine(g), unit @ unit.T, atol=1e-12)


class _OpposedLosses(SharedBottom):
    """task2's loss is minus task1's: their gradients are exactly opposite."""

    def task_losses(self, outputs, batch):
        losses = super().task_losses(outputs, batch)
        return {"task1": losses["task1"], "task2": -losses["task1"]}


def _twin_tasks(data: MultiTaskData) -> MultiTaskData:
    """The data with task2's labels replaced by task1's: two identical tasks."""
    return MultiTaskData(
        dense=data.dense,
        dense_names=data.schema.dense,
        labels={"task1": data.labels["task1"], "task2": data.labels["task1"]},
        tasks=data.schema.tasks,
    )


def _twin_towers(model: SharedBottom) -> SharedBottom:
    with torch.no_grad():
        for p in [*model.towers.weights, *model.towers.biases]:
            p[1] = p[0]
    return model


def test_opposite_losses_give_cosine_minus_one(correlated_small):
    model = _OpposedLosses(correlated_small.schema, bottom_units=(16,), tower_units=(8,))
    frame = gradient_conflict(model, correlated_small, probe_size=300)
    assert frame[["task_a", "task_b"]].values.tolist() == [["task1", "task2"]]
    assert frame["cosine"].iloc[0] == pytest.approx(-1.0, abs=1e-6)
    assert frame["norm_a"].iloc[0] == pytest.approx(frame["norm_b"].iloc[0], rel=1e-6)
    assert frame["norm_a"].iloc[0] > 0


def test_identical_tasks_give_cosine_one_during_training(correlated_small):
    data = _twin_tasks(correlated_small)
    model = _twin_towers(SharedBottom(data.schema, bottom_units=(16,), tower_units=(8,)))
    assert gradient_conflict(model, data)["cosine"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    conflict = GradientConflict(data, every=4, probe_size=200)
    mb.fit(model, data, data, epochs=2, callbacks=[conflict], **FAST)  # twins stay twins
    frame = conflict.frame()
    assert frame["step"].tolist() == [0, 4, 8, 12, 16, 20]
    assert frame["epoch"].tolist() == [0, 1, 1, 2, 2, 2]
    np.testing.assert_allclose(frame["cosine"], 1.0, atol=1e-5)
    norms = conflict.norms()
    assert list(norms.columns) == ["step", "epoch", "task", "norm"]
    assert len(norms) == 2 * len(frame)


def test_gradient_conflict_callback_does_not_change_training(correlated_small):
    train, valid = correlated_small.split((0.7, 0.3), seed=0)

    def run(callbacks):
        model = SharedBottom(train.schema, bottom_units=(16,), tower_units=(8,), dropout=0.2)
        mb.fit(model, train, valid, epochs=2, callbacks=callbacks, **FAST)
        return model.state_dict()

    conflict = GradientConflict(valid, every=3, probe_size=128)
    with_callback, without = run([conflict]), run([])
    assert all(torch.equal(with_callback[k], without[k]) for k in without)
    frame = conflict.frame()
    assert frame["step"].tolist() == [0, 3, 6, 9, 12]
    assert frame["cosine"].between(-1, 1).all() and (frame["norm_a"] > 0).all()


def test_gradient_conflict_errors(correlated_small):
    train, valid = correlated_small.split((0.5, 0.5), seed=0)
    single = SingleTask(train.schema, hidden_units=(8,))
    with pytest.raises(ValueError, match="SingleTask has no shared parameters"):
        gradient_conflict(single, valid)
    with pytest.raises(ValueError, match="SingleTask has no shared parameters"):
        mb.fit(single, train, valid, epochs=1, callbacks=[GradientConflict(valid)], **FAST)
    one = correlated_small.select_tasks(["task1"])
    with pytest.raises(ValueError, match="one task"):
        gradient_conflict(SharedBottom(one.schema, bottom_units=(8,)), one)
    with pytest.raises(ValueError, match="every"):
        GradientConflict(valid, every=0)


# ---------------------------------------------------------------------------- relatedness
def test_task_relatedness_recovers_the_correlation_order():
    pearson, spearman = [], []
    for p in (0.0, 0.5, 1.0):
        row = task_relatedness(mb.make_correlated_tasks(2_000, p, n_features=8, seed=0)).iloc[0]
        pearson.append(row["pearson"])
        spearman.append(row["spearman"])
        assert np.isnan(row["lift"])  # regression tasks: no conditional rates
    assert pearson == sorted(pearson) and spearman == sorted(spearman)
    assert abs(pearson[0]) < 0.1 and pearson[2] > 0.99


def test_task_relatedness_conditional_rates_on_a_hand_made_table():
    a = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=float)
    b = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], dtype=float)
    c = np.arange(10, dtype=float) ** 2
    mask_c = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1, 1], dtype=bool)
    data = MultiTaskData(
        dense=np.zeros((10, 1)),
        dense_names=["x"],
        labels={"a": a, "b": b, "c": c},
        tasks={"a": "binary", "b": "binary", "c": "regression"},
        masks={"c": mask_c},
    )
    frame = task_relatedness(data).set_index(["task_a", "task_b"])
    assert len(frame) == 6  # every ordered pair
    ab, ba = frame.loc[("a", "b")], frame.loc[("b", "a")]
    assert ab["n"] == 10
    assert ab["p_b"] == pytest.approx(0.4)
    assert ab["p_b_given_a1"] == pytest.approx(3 / 4)
    assert ab["p_b_given_a0"] == pytest.approx(1 / 6)
    assert ab["lift"] == pytest.approx(0.75 / 0.4)
    assert ba["p_b_given_a1"] == pytest.approx(3 / 4) and ba["p_b_given_a0"] == pytest.approx(1 / 6)
    assert ab["pearson"] == pytest.approx(np.corrcoef(a, b)[0, 1])
    # A masked task is compared on the samples where both are defined.
    ac = frame.loc[("a", "c")]
    assert ac["n"] == mask_c.sum()
    assert ac["pearson"] == pytest.approx(np.corrcoef(a[mask_c], c[mask_c])[0, 1])
    assert ac["spearman"] == pytest.approx(spearmanr(a[mask_c], c[mask_c]).statistic)
    assert np.isnan(ac["lift"]) and ac["spearman"] == frame.loc[("c", "a"), "spearman"]


def test_task_relatedness_of_the_funnel(funnel):
    frame = task_relatedness(funnel).set_index(["task_a", "task_b"])
    assert frame.loc[("purchase", "click"), "p_b_given_a1"] == 1.0  # no purchase without click
    assert frame.loc[("click", "purchase"), "lift"] > 1
    # click is constant (1) where dwell_time is defined: no correlation, not an error.
    assert np.isnan(frame.loc[("click", "dwell_time"), "pearson"])


# ---------------------------------------------------------------------------- figures
def test_every_plot_returns_a_figure(funnel, correlated_small):
    ple = _ple(funnel.schema)
    weights = gate_weights(ple, funnel)
    grouped = gate_weights(ple, funnel, by="segment")
    figures = [
        plot_gate_heatmap(weights),
        plot_gate_heatmap(weights, value="std", annotate=False),
        plot_gate_heatmap(grouped),
        plot_gate_heatmap(grouped, group=grouped["segment"].iloc[0]),
        plot_gate_heatmap(gate_weights(GATED["MMoE"](funnel.schema), funnel)),
        plot_expert_utilization(expert_utilization(ple, funnel)),
        plot_expert_utilization(
            expert_utilization(_rigged_mmoe(funnel.schema), funnel, by="segment")
        ),
        plot_expert_utilization(expert_utilization(weights)),
        plot_gradient_conflict(gradient_conflict(ple, funnel, probe_size=200)),
        plot_task_relatedness(task_relatedness(funnel)),
        plot_task_relatedness(task_relatedness(correlated_small)),  # no binary pair
    ]
    conflict = GradientConflict(correlated_small, every=5, probe_size=100)
    model = SharedBottom(correlated_small.schema, bottom_units=(8,))
    mb.fit(model, correlated_small, correlated_small, epochs=1, callbacks=[conflict], **FAST)
    figures.append(plot_gradient_conflict(conflict.frame()))
    assert all(isinstance(fig, plt.Figure) for fig in figures)
    assert len(figures[0].axes) == 3  # two levels and a colour bar
    with pytest.raises(ValueError, match="group"):
        plot_gate_heatmap(grouped, group="no such segment")
    with pytest.raises(ValueError, match="grouped frame"):
        plot_gate_heatmap(weights, group=0)
