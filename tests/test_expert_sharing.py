"""Tests for mtlbook.book.ch12_3_3b (chapter 12.3.4: PLE and CGC)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mtlbook as mb
from mtlbook.analysis.gates import gate_weights
from mtlbook.analysis.runs import PerTask
from mtlbook.book.ch12_3_3b import (
    CorrelatedSetting,
    choose_setting,
    gate_split,
    matched_lineup,
    parameter_table,
    plot_ple_diagram,
    seesaw_verdicts,
    zh_seesaw,
)
from mtlbook.models import CGC, PLE, MMoE, SharedBottom
from mtlbook.utils import count_parameters


@pytest.fixture(scope="module")
def small():
    return mb.make_correlated_tasks(300, 0.5, n_features=8, seed=0)


def test_matched_lineup_sizes_are_close(small):
    models, sizes = matched_lineup(small.schema, expert_units=8, tower_units=(4,))
    assert list(models) == ["single", "SharedBottom", "MMoE", "CGC", "PLE"]
    assert isinstance(models["single"], PerTask)
    cgc = sizes.set_index("model").loc["CGC", "parameters"]
    assert (abs(sizes["parameters"] - cgc) / cgc).max() < 0.1
    built = models["PLE"](small.schema, 3)
    assert isinstance(built, PLE) and built.n_levels == 2
    assert sizes.set_index("model").loc["MMoE", "parameters"] == count_parameters(
        models["MMoE"](small.schema, 0)
    )


def test_matched_lineup_rejects_bad_arguments(small):
    with pytest.raises(ValueError, match="n_levels"):
        matched_lineup(small.schema, n_levels=1)
    with pytest.raises(TypeError, match="schema"):
        matched_lineup(small)
    with pytest.raises(ValueError, match="two tasks"):
        matched_lineup(small.select_tasks(["task1"]).schema)


def test_parameter_table_splits_shared_and_specific(small):
    table = parameter_table(
        {
            "MMoE": MMoE(small.schema, n_experts=4, expert_units=(8,)),
            "CGC": CGC(small.schema, expert_units=(8,)),
            "SB": SharedBottom(small.schema),
        }
    ).set_index("model")
    assert (table["shared"] + table["task_specific"] == table["parameters"]).all()
    # same number of experts: CGC shares a smaller part than MMoE
    assert table.loc["CGC", "shared_fraction"] < table.loc["MMoE", "shared_fraction"]
    with pytest.raises(TypeError, match="MultiTaskModel"):
        parameter_table({"x": object()})


def test_gate_split_rows_sum_to_one(small):
    model = PLE(small.schema, n_levels=2, n_shared_experts=2, n_task_experts=1, expert_units=(8,))
    split = gate_split(gate_weights(model, small))
    assert list(split["gate"]) == ["task1", "task2", "shared", "task1", "task2"]
    totals = split[["own", "shared", "other_tasks"]].fillna(0.0).sum(axis=1)
    assert np.allclose(totals, 1.0, atol=1e-5)
    task_gates = split[split["gate"] != "shared"]
    assert (task_gates["other_tasks"] == 0).all()  # CGC/PLE task gates cannot see them
    assert split.loc[split["gate"] == "shared", "own"].isna().all()
    mmoe = gate_split(gate_weights(MMoE(small.schema, expert_units=(8,)), small))
    assert np.allclose(mmoe["shared"], 1.0)


def test_gate_split_errors(small):
    with pytest.raises(TypeError):
        gate_split("weights")
    with pytest.raises(ValueError, match="missing"):
        gate_split(pd.DataFrame({"level": [0]}))
    funnel = mb.simulate_funnel(500, seed=0, n_users=50, n_items=30)
    grouped = gate_weights(CGC(funnel.schema, expert_units=(4,)), funnel, by="segment")
    with pytest.raises(ValueError, match="ungrouped"):
        gate_split(grouped)


def _frame(values: dict[str, tuple[float, float]], seeds=(0, 1, 2)) -> pd.DataFrame:
    rows = []
    for config, (a, b) in values.items():
        for s in seeds:
            jitter = 0.001 * s
            rows += [
                (config, s, "task1", "mse", a + jitter),
                (config, s, "task2", "mse", b - jitter),
            ]
    return pd.DataFrame(rows, columns=["configuration", "seed", "task", "metric", "value"])


def test_seesaw_verdicts():
    frame = _frame(
        {"single": (1.0, 1.0), "both": (0.5, 0.5), "saw": (0.5, 1.5), "worse": (2.0, 2.0)}
    )
    v = seesaw_verdicts(frame).set_index("configuration")
    assert v.loc["both", "verdict"] == "better on both"
    assert v.loc["saw", "verdict"] == "seesaw"
    assert v.loc["worse", "verdict"] == "worse on both"
    assert v.loc["both", "task1_gain"] == pytest.approx(50.0, abs=0.5)
    assert v.loc["both", "significant"] == 2
    with pytest.raises(ValueError, match="baseline"):
        seesaw_verdicts(frame, baseline="nope")


def test_correlated_setting():
    setting = CorrelatedSetting(0.5, label_fraction=0.2, n_samples=200, n_features=6)
    data = setting.make_data(1)
    assert len(data) == 200 and data.schema.n_dense == 6
    thinned = setting.transform_train(data, 1)
    assert thinned.mask("task2").mean() == pytest.approx(0.2, abs=0.05)
    assert thinned.mask("task1").all()
    assert CorrelatedSetting(0.5).transform_train(data, 1) is data
    with pytest.raises(ValueError, match="label_fraction"):
        CorrelatedSetting(0.5, label_fraction=0.0)
    with pytest.raises(ValueError, match="correlation"):
        CorrelatedSetting(1.5)


def test_choose_setting_uses_validation_and_picks_one(small):
    models, _ = matched_lineup(small.schema, expert_units=4, tower_units=(4,))
    settings = {
        "a": CorrelatedSetting(0.5, n_samples=300, n_features=8),
        "b": CorrelatedSetting(0.0, label_fraction=0.3, n_samples=300, n_features=8),
    }
    chosen, table = choose_setting(settings, models, [0, 1], epochs=2, batch_size=64)
    assert chosen in settings
    assert set(table["setting"]) == {"a", "b"}
    assert list(table["configuration"].unique()) == ["SharedBottom"]
    assert table.loc[table["chosen"], "setting"].eq(chosen).all()
    best = table.groupby("setting")["score"].max()
    assert best[chosen] == best.max()
    with pytest.raises(ValueError, match="validation"):
        choose_setting(settings, models, [0], split="test")
    with pytest.raises(ValueError, match="lacks"):
        choose_setting(settings, {"single": models["single"]}, [0])
    with pytest.raises(TypeError, match="CorrelatedSetting"):
        choose_setting({"x": 0.5}, models, [0])


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


@pytest.fixture()
def page():
    """setup_page() in a sandbox: rcParams and warning filters restored afterwards."""
    import warnings

    import matplotlib
    import matplotlib.pyplot as plt

    from mtlbook.book.page import setup_page

    with matplotlib.rc_context(), warnings.catch_warnings():
        yield setup_page()
    plt.close("all")


def test_plot_ple_diagram_levels(page):
    import warnings

    ple, cgc = plot_ple_diagram(levels=2), plot_ple_diagram(levels=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph fails the test
        ple.canvas.draw()
    assert {"第 1 层", "第 2 层", "共享门控", "任务 A 门控", "任务 A 独占专家"} <= set(_texts(ple))
    assert "共享门控" not in _texts(cgc)  # the top level (CGC's only one) has no shared gate
    assert "第 2 层" not in _texts(cgc)
    with pytest.raises(ValueError, match="levels"):
        plot_ple_diagram(levels=0)


def test_zh_seesaw_relabels_plot_seesaw(page):
    import warnings

    from mtlbook.analysis.seesaw import plot_seesaw

    frame = _frame({"single": (1.0, 1.0), "CGC": (0.5, 0.5), "SB task1:task2=4:1": (0.5, 1.5)})
    fig = zh_seesaw(plot_seesaw(frame))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "任务 1 MSE（测试集；越小越好，坐标轴反向）"
    assert ax.get_title().startswith("跷跷板图：任务 1 与 任务 2")
    assert {"单任务", "CGC", "SB 任务 1:任务 2=4:1"} <= set(_texts(fig))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "单任务（均值）" in legend and not any("better" in t for t in legend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.canvas.draw()
