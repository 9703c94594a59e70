"""The comparison harness (compare, its CLI) and the seesaw and negative-transfer diagnostics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import mtlbook as mb
from mtlbook.__main__ import main
from mtlbook.analysis.compare import (
    CompareResult,
    compare,
    model_factory,
    resolve_data,
    resolve_models,
)
from mtlbook.analysis.runs import PerTask, repeat_fits, train_jobs
from mtlbook.analysis.seesaw import pareto_front, plot_seesaw, seesaw, seesaw_table
from mtlbook.analysis.transfer import negative_transfer, plot_negative_transfer, summarise_transfer
from mtlbook.models import MMoE, SharedBottom, SingleTask
from mtlbook.weighting import FixedWeights

FIT = {"epochs": 1, "batch_size": 128, "lr": 1e-2}
TABLE_COLUMNS = ["model", "weighting", "task", "metric", "mean", "lo", "hi", "n", "formatted"]
TINY = {"hidden_units": (4,)}


def _tiny_data(seed: int) -> mb.MultiTaskData:
    return mb.make_correlated_tasks(240, 0.5, n_features=6, seed=seed)


def _tiny_models() -> dict:
    return {
        "ST": PerTask(model_factory(SingleTask, **TINY)),
        "SB": model_factory(SharedBottom, bottom_units=(4,), tower_units=(2,)),
    }


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------------------- compare


def test_compare_with_names():
    result = compare(["single", "shared_bottom"], "correlated:0.5", n_samples=200, seeds=2, **FIT)
    # 2 models × 2 seeds × 2 tasks × 2 metrics (mse, mae).
    assert len(result.raw) == 16
    assert set(result.raw["model"]) == {"single", "shared_bottom"}
    table = result.table()
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == 2 * 2 * 2 and (table["n"] == 2).all()
    assert (table["lo"] <= table["mean"]).all() and (table["mean"] <= table["hi"]).all()
    row = table.iloc[0]
    assert row["formatted"] == f"{row['mean']:.4g} [{row['lo']:.4g}, {row['hi']:.4g}]"
    wide = result.table(wide=True)
    assert wide.shape == (2, 4)
    assert list(wide.index) == [("single", "equal"), ("shared_bottom", "equal")]
    gains = result.gains("single")
    assert set(gains["model"]) == {"shared_bottom"} and len(gains) == 4


def test_compare_with_factories_weightings_and_fixed_data(correlated_small):
    result = compare(
        _tiny_models(),
        correlated_small,
        weightings=["equal", "uncertainty"],
        seeds=[3, 5],
        metrics="mse",
        **FIT,
    )
    assert set(result.raw["seed"]) == {3, 5}
    table = result.table()
    assert set(table["metric"]) == {"mse"}
    # 2 models × 2 weightings × 2 tasks, each over 2 seeds.
    assert len(table) == 8 and (table["n"] == 2).all()
    # A separate model per task has no weighting to apply: its rows repeat under each name.
    st = table[table["model"] == "ST"].pivot(index="task", columns="weighting", values="mean")
    np.testing.assert_allclose(st["equal"], st["uncertainty"])
    gains = result.gains("ST")
    assert set(gains["weighting"]) == {"equal", "uncertainty"} and set(gains["model"]) == {"SB"}
    # A fixed data set gets a new split per seed: the two seeds differ.
    one = result.raw[(result.raw["model"] == "SB") & (result.raw["metric"] == "mse")]
    assert one.groupby("seed")["value"].sum().nunique() == 2


def test_compare_with_a_data_function_and_mapping_of_names():
    result = compare(
        {"baseline": "single", "MMoE-2": model_factory(MMoE, n_experts=2, expert_units=(4,))},
        _tiny_data,
        seeds=1,
        metrics={"task1": "mse", "task2": ["mse", "mae"]},
        **FIT,
    )
    table = result.table()
    assert set(table["model"]) == {"baseline", "MMoE-2"}
    assert sorted(table.loc[table["model"] == "MMoE-2", "metric"]) == ["mae", "mse", "mse"]
    assert table["lo"].isna().all()  # one seed: no interval
    assert table["formatted"].iloc[0] == f"{table['mean'].iloc[0]:.4g}"


def test_resolvers():
    models = resolve_models("single, MMoE,shared-bottom")
    assert isinstance(models["single"], PerTask)
    assert models["MMoE"](_tiny_data(0).schema, 0).__class__ is MMoE
    assert "SharedBottom" in repr(models["shared-bottom"])
    funnel = resolve_data("funnel_dwell", n_samples=500)(1)
    assert len(funnel) == 500 and funnel.task_names == ("click", "purchase", "dwell_time")
    binary = resolve_data("correlated-binary:0.9", n_samples=100)(0)
    assert binary.meta["correlation"] == 0.9 and binary.schema.tasks[0].kind == "binary"
    negative = resolve_data("correlated:-0.5", n_samples=100)(0)
    assert negative.meta["correlation"] == -0.5
    with pytest.raises(TypeError, match="model class"):
        model_factory(lambda schema, seed: None)
    with pytest.raises(TypeError, match="pass a factory"):
        resolve_models({"SB": SharedBottom(_tiny_data(0).schema)})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"models": ["single", "mmmoe"]}, r"unknown model 'mmmoe'; choose from single, .*mmoe"),
        ({"data": "funnels"}, r"unknown data 'funnels'; choose from funnel, funnel_dwell"),
        ({"data": "correlated"}, r"needs a correlation in \[-1, 1\]"),
        ({"data": "correlated:1.5"}, r"needs a correlation"),
        (
            {"weightings": ["equal", "uncertainty2"]},
            r"unknown weighting 'uncertainty2'; choose "
            r"from equal, uncertainty",
        ),
        ({"weightings": ["fixed"]}, r"'fixed' needs its settings"),
        ({"metrics": "auc"}, r"unknown metric\(s\) \['auc'\]; available: \['mae', 'mse'\]"),
        ({"models": ["esmm"]}, r"model 'esmm' cannot be built for tasks"),
        ({"seeds": 0}, r"seeds must be"),
    ],
)
def test_compare_rejects_bad_names_before_training(kwargs, message, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained although a name was wrong")

    # ``mtlbook.analysis.compare`` is also the name of the function the package exports, so patch
    # the module object itself.
    monkeypatch.setattr(sys.modules["mtlbook.analysis.compare"], "repeat_fits", no_training)
    arguments = {"models": ["single"], "data": "correlated:0.5", "n_samples": 100, **kwargs}
    with pytest.raises(ValueError, match=message):
        compare(arguments.pop("models"), arguments.pop("data"), **arguments)


def test_csv_is_written_atomically_and_reads_back(tmp_path, monkeypatch):
    path = tmp_path / "results" / "out.csv"
    result = compare(_tiny_models(), _tiny_data, seeds=2, csv=path, **FIT)
    back = pd.read_csv(path)
    pd.testing.assert_frame_equal(back, result.raw, check_dtype=False)
    pd.testing.assert_frame_equal(
        CompareResult.read_csv(path).table(), result.table(), check_dtype=False
    )
    assert os.listdir(path.parent) == ["out.csv"]

    # A write that fails halfway leaves the previous file whole and no temporary file behind.
    before = path.read_bytes()

    def broken_to_csv(self, handle, **kwargs):
        handle.write("model,weighting\nhalf")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken_to_csv)
    with pytest.raises(OSError, match="disk full"):
        result.to_csv(path)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["out.csv"]


def test_cli_compare_runs_and_rejects_bad_names(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    csv = tmp_path / "cli.csv"
    common = [
        sys.executable,
        "-m",
        "mtlbook",
        "compare",
        "--data",
        "correlated:0.5",
        "--samples",
        "150",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--threads",
        "1",
    ]
    # Both processes at once: most of their time is importing torch.
    good = subprocess.Popen(
        [*common, "--models", "single,shared_bottom", "--baseline", "single", "--csv", str(csv)],
        env=env,
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    bad = subprocess.Popen(
        [*common, "--models", "single,nope"],
        env=env,
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = good.communicate(timeout=300)
    _, bad_err = bad.communicate(timeout=300)
    assert good.returncode == 0, err
    assert "shared_bottom" in out and "gain over single" in out
    assert set(pd.read_csv(csv)["model"]) == {"single", "shared_bottom"}
    assert bad.returncode == 2
    assert "unknown model 'nope'; choose from single" in bad_err


def test_cli_help_lists_the_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in ("shared_bottom", "cross_stitch", "correlated-binary:P", "uncertainty", "--csv"):
        assert name in text
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--data", "nope"])
    assert exit_info.value.code == 2
    assert "unknown data 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the trainer seam


def test_repeat_fits_hands_every_job_to_one_trainer():
    calls = []

    def recording_trainer(jobs, fit_kwargs, progress):
        calls.append(list(jobs))
        return train_jobs(jobs, fit_kwargs, progress)

    models = _tiny_models()
    df = repeat_fits(_tiny_data, models, [0, 1], trainer=recording_trainer, **FIT)
    # Per seed: one job per task for the PerTask model, one joint job for the other.
    assert len(calls) == 1 and len(calls[0]) == 2 * (2 + 1)
    reference = repeat_fits(_tiny_data, models, [0, 1], **FIT)
    pd.testing.assert_series_equal(df["value"], reference["value"])
    valid = repeat_fits(_tiny_data, models, [0, 1], split="valid", trainer=recording_trainer, **FIT)
    assert all(job.report is job.valid for job in calls[-1])
    assert not np.allclose(valid["value"], reference["value"])
    with pytest.raises(ValueError, match="split"):
        repeat_fits(_tiny_data, models, [0], split="train", **FIT)


def test_repeat_fits_can_share_one_split_across_seeds():
    made = []

    def make_data(seed):
        made.append(seed)
        return _tiny_data(seed)

    calls = []

    def recording_trainer(jobs, fit_kwargs, progress):
        calls.append(list(jobs))
        return train_jobs(jobs, fit_kwargs, progress)

    df = repeat_fits(
        make_data, _tiny_models(), [4, 5, 6], data_per_seed=False, trainer=recording_trainer, **FIT
    )
    assert made == [4]
    # All seeds of a configuration (and task, for PerTask) see the same data objects, so a
    # vectorised trainer can train them together; only the initial weights differ.
    groups = {}
    for job in calls[0]:
        groups.setdefault((job.model, job.train.task_names), set()).add(id(job.train))
    assert len(groups) == 3 and all(len(ids) == 1 for ids in groups.values())
    sb = df[(df["model"] == "SB") & (df["metric"] == "mse")]
    assert sb.groupby("seed")["value"].sum().nunique() == 3


# ---------------------------------------------------------------------------- seesaw


def test_pareto_front_respects_metric_directions():
    table = pd.DataFrame(
        {
            "config": ["A", "B", "C", "D", "E", "F"],
            "auc": [0.80, 0.75, 0.70, 0.80, 0.85, 0.75],
            "mse": [1.00, 0.80, 1.20, 1.10, np.nan, 0.80],
        }
    ).set_index("config")
    # AUC higher and MSE lower is better: C is beaten by A and B, D by A (tie on AUC, worse
    # MSE); E has no MSE; F ties B exactly, and ties do not dominate.
    front = pareto_front(table, maximize=["auc"], minimize=["mse"])
    assert front.index.equals(table.index) and front.name == "pareto"
    assert front[front].index.tolist() == ["A", "B", "F"]
    # Both higher-better: D (0.80, 1.10) now beats A and B; C has the highest value.
    both_max = pareto_front(table, maximize=["auc", "mse"])
    assert both_max[both_max].index.tolist() == ["C", "D"]
    # Both lower-better: the lowest of each.
    both_min = pareto_front(table, minimize=["auc", "mse"])
    assert both_min[both_min].index.tolist() == ["B", "C", "F"]
    with pytest.raises(ValueError, match="objective"):
        pareto_front(table)
    with pytest.raises(ValueError, match="not in the table"):
        pareto_front(table, maximize=["ndcg"])


def _hand_seesaw() -> pd.DataFrame:
    """Click AUC and dwell-time MSE per seed for four configurations."""
    means = {"single": (0.70, 10.0), "A": (0.72, 9.0), "B": (0.75, 11.0), "C": (0.69, 10.5)}
    rows = []
    for config, (auc, mse) in means.items():
        for seed, noise in enumerate([-0.01, 0.0, 0.01]):
            rows += [
                (config, seed, "click", "auc", auc + noise),
                (config, seed, "dwell_time", "mse", mse + 10 * noise),
            ]
    return pd.DataFrame(rows, columns=["model", "seed", "task", "metric", "value"])


def test_seesaw_table_and_plot_on_a_hand_made_frame():
    table = seesaw_table(_hand_seesaw()).set_index("configuration")
    assert list(table.columns) == [
        "n",
        "click_auc",
        "click_auc_lo",
        "click_auc_hi",
        "dwell_time_mse",
        "dwell_time_mse_lo",
        "dwell_time_mse_hi",
        "pareto",
        "beats_baseline",
    ]
    assert table.loc["A", "click_auc"] == pytest.approx(0.72)
    # A: better on both (higher AUC, lower MSE); B: better AUC, worse MSE; C: worse on both.
    assert table["pareto"].to_dict() == {"single": False, "A": True, "B": True, "C": False}
    assert pd.isna(table.loc["single", "beats_baseline"])
    assert table["beats_baseline"].iloc[1:].tolist() == [True, False, False]
    fig = plot_seesaw(_hand_seesaw())
    assert isinstance(fig, plt.Figure)
    ax = fig.axes[0]
    assert not ax.xaxis_inverted() and ax.yaxis_inverted()  # MSE axis reversed: up = better
    assert "dwell_time MSE" in ax.get_ylabel()
    # Axes inside a SubFigure: drawn there, the layout left to whoever made the SubFigure.
    sub = plt.figure().subfigures(1, 2)[1]
    assert plot_seesaw(_hand_seesaw(), ax=sub.subplots()) is sub


def test_seesaw_sweeps_ratios_against_one_baseline():
    frame = seesaw(["shared_bottom"], _tiny_data, ratios=[0.5, 2], seeds=2, **FIT)
    assert list(frame.columns) == [
        "configuration",
        "model",
        "weighting",
        "ratio",
        "seed",
        "task",
        "metric",
        "value",
        "split",
    ]
    # (baseline + 1 model × 2 ratios) × 2 seeds × 2 tasks, one metric per task.
    assert len(frame) == 3 * 2 * 2
    assert set(frame["metric"]) == {"mse"} and set(frame["split"]) == {"test"}
    counts = frame.groupby("configuration", sort=False).size()
    assert counts.to_dict() == {
        "single": 4,
        "shared_bottom task1:task2=0.5:1": 4,
        "shared_bottom task1:task2=2:1": 4,
    }
    assert frame.loc[frame["configuration"] == "single", "ratio"].isna().all()
    assert sorted(frame["ratio"].dropna().unique()) == [0.5, 2.0]
    valid = seesaw(["shared_bottom"], _tiny_data, ratios=[0.5, 2], seeds=2, split="valid", **FIT)
    assert set(valid["split"]) == {"valid"} and not np.allclose(valid["value"], frame["value"])
    assert isinstance(plot_seesaw(frame), plt.Figure)
    with pytest.raises(ValueError, match="ratios must be positive"):
        seesaw(["shared_bottom"], _tiny_data, ratios=[0.0], seeds=1, **FIT)
    with pytest.raises(ValueError, match="unknown task"):
        seesaw(["shared_bottom"], _tiny_data, tasks=["task1", "nope"], seeds=1, **FIT)
    with pytest.raises(ValueError, match="task 'task1' has no metric 'auc'"):
        seesaw(["shared_bottom"], _tiny_data, metrics=("auc", "mse"), seeds=1, **FIT)
    with pytest.raises(ValueError, match="only the baseline"):
        seesaw(["single"], _tiny_data, seeds=1, **FIT)


# ---------------------------------------------------------------------------- negative transfer


def _hand_results() -> pd.DataFrame:
    """Per seed: on task a (AUC) MTL is always better, on b (MSE) always worse, on c mixed."""
    rows = []
    for seed, (a, b, c) in enumerate(
        [(0.02, 0.3, 0.05), (0.03, 0.2, -0.04), (0.01, 0.4, 0.02), (0.02, 0.25, -0.03)]
    ):
        rows += [
            ("single", seed, "a", "auc", 0.70),
            ("mtl", seed, "a", "auc", 0.70 + a),
            ("single", seed, "b", "mse", 2.0),
            ("mtl", seed, "b", "mse", 2.0 + b),
            ("single", seed, "c", "mse", 1.0),
            ("mtl", seed, "c", "mse", 1.0 + c),
        ]
    return pd.DataFrame(rows, columns=["model", "seed", "task", "metric", "value"])


def test_summarise_transfer_verdicts_and_signs():
    out = summarise_transfer(_hand_results(), "mtl", "single").set_index("task")
    assert out["verdict"].to_dict() == {"a": "positive", "b": "negative", "c": "inconclusive"}
    assert (out["n"] == 4).all()
    # The difference is MTL − baseline in the metric's units; the gain is positive = better.
    assert out.loc["b", "diff_mean"] == pytest.approx(0.2875)
    assert out.loc["b", "gain_mean"] == pytest.approx(-100 * 0.2875 / 2.0)
    assert out.loc["a", "gain_mean"] == pytest.approx(100 * 0.02 / 0.70)
    assert out.loc["a", "model_mean"] == pytest.approx(0.72)
    assert out.loc["a", "baseline_lo"] == pytest.approx(0.70)
    one_seed = summarise_transfer(_hand_results().query("seed == 0"), "mtl")
    assert set(one_seed["verdict"]) == {"inconclusive"}  # no interval from one seed
    with pytest.raises(ValueError, match="not in the results"):
        summarise_transfer(_hand_results(), "mmoe")
    assert isinstance(plot_negative_transfer(out.reset_index()), plt.Figure)
    sub = plt.figure().subfigures(2, 1)[0]
    assert plot_negative_transfer(out.reset_index(), ax=sub.subplots()) is sub


def test_negative_transfer_when_one_task_takes_the_shared_bottleneck():
    # Unrelated binary tasks (p = 0) and a 2-unit shared bottom whose gradient is dominated by
    # task1 (weight 100): task2 is left without features. The baseline is the same
    # architecture trained once per task, so only the sharing differs.
    narrow = model_factory(SharedBottom, bottom_units=(2,), tower_units=(8,))
    out = negative_transfer(
        {"shared": narrow},
        lambda seed: mb.make_correlated_tasks(
            400, 0.0, n_features=8, task_type="binary", seed=seed
        ),
        seeds=4,
        baseline=PerTask(narrow),
        weighting=lambda: FixedWeights({"task1": 100.0, "task2": 1.0}),
        epochs=5,
        lr=2e-2,
        batch_size=32,
    )
    assert list(out.columns) == [
        "task",
        "metric",
        "model",
        "baseline",
        "n",
        "model_mean",
        "model_lo",
        "model_hi",
        "baseline_mean",
        "baseline_lo",
        "baseline_hi",
        "diff_mean",
        "diff_lo",
        "diff_hi",
        "gain_mean",
        "gain_lo",
        "gain_hi",
        "verdict",
    ]
    assert out["task"].tolist() == ["task1", "task2"] and set(out["metric"]) == {"auc"}
    assert (out["model"] == "shared").all() and (out["baseline"] == "baseline").all()
    task2 = out.set_index("task").loc["task2"]
    assert task2["verdict"] == "negative", out
    assert task2["gain_hi"] < 0 and task2["diff_mean"] < 0


def test_positive_transfer_to_a_sparse_related_task():
    # Identical tasks (p = 1); task2 keeps 4 % of its training labels. Sharing lends it
    # task1's representation; alone it has about a dozen labels.
    model = model_factory(SharedBottom, bottom_units=(16,), tower_units=())
    out = negative_transfer(
        {"shared": model},
        lambda seed: mb.make_correlated_tasks(
            500, 1.0, n_features=16, task_type="binary", seed=seed
        ),
        seeds=4,
        baseline=PerTask(model),
        transform_train=lambda d, seed: d.subsample_labels("task2", 0.04, seed=seed),
        epochs=5,
        lr=2e-2,
        batch_size=32,
    )
    task2 = out.set_index("task").loc["task2"]
    assert task2["verdict"] == "positive", out
    assert task2["gain_lo"] > 0
