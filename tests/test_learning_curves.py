"""Learning curves of chapter 12.1: label-fraction curves and training/validation loss gaps."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

import mtlbook as mb
from mtlbook.analysis.runs import PerTask
from mtlbook.book.ch12_1 import (
    EpochLosses,
    _sparse,
    generalisation_gap,
    label_fraction_curve,
    loss_curves,
    plot_label_fraction_curve,
    plot_loss_curves,
)
from mtlbook.models import SharedBottom, SingleTask

FIT = {"epochs": 2, "batch_size": 256, "lr": 1e-2}
SMALL = {"n_users": 200, "n_items": 100, "click_rate": 0.1, "purchase_rate": 0.03}


def _funnel(seed: int):
    return mb.simulate_funnel(1_500, seed=seed, **SMALL)


MODELS = {
    "single": PerTask(lambda schema, seed: SingleTask(schema, hidden_units=(8,), seed=seed)),
    "shared": lambda schema, seed: SharedBottom(
        schema, bottom_units=(8,), tower_units=(4,), seed=seed
    ),
}


def test_sparse_labels_are_the_same_with_and_without_the_other_tasks():
    train = _funnel(0).split((0.6, 0.2, 0.2), seed=3)[0]
    transform = _sparse("purchase", 0.2)
    full = transform(train, 3)
    alone = transform(train.select_tasks(["purchase"]), 3)
    assert np.array_equal(full.mask("purchase"), alone.mask("purchase"))
    assert np.array_equal(full.labels["purchase"], alone.labels["purchase"])
    assert full.mask("purchase").mean() == pytest.approx(0.2, abs=0.01)
    assert _sparse("purchase", 1.0) is None


def test_label_fraction_curve_pairs_models_and_fractions():
    curve = label_fraction_curve(
        _funnel, MODELS, [0, 1], task="purchase", label_fractions=[1.0, 0.3], **FIT
    )
    assert sorted(curve["label_fraction"].unique()) == [0.3, 1.0]
    # The single-task baseline is trained on the sparse task only; Shared-Bottom on both.
    assert set(curve.loc[curve["model"] == "single", "task"]) == {"purchase"}
    assert set(curve.loc[curve["model"] == "shared", "task"]) == {"click", "purchase"}
    counts = curve[curve["metric"] == "auc"].groupby(["model", "label_fraction"]).size()
    assert counts[("single", 0.3)] == 2 and counts[("shared", 0.3)] == 4
    fig = plot_label_fraction_curve(curve, baseline="single")
    assert len(fig.axes) == 2
    plt.close(fig)


def test_label_fraction_curve_errors():
    with pytest.raises(ValueError, match="label_fractions"):
        label_fraction_curve(_funnel, MODELS, [0], task="purchase", label_fractions=[0.0])
    with pytest.raises(ValueError, match="not in the data"):
        label_fraction_curve(_funnel, MODELS, [0], task="buy", label_fractions=[0.5])
    with pytest.raises(ValueError, match="transform_train"):
        label_fraction_curve(
            _funnel,
            MODELS,
            [0],
            task="purchase",
            label_fractions=[0.5],
            transform_train=lambda d, s: d,
        )
    with pytest.raises(ValueError, match="seeds"):
        label_fraction_curve(_funnel, MODELS, [], task="purchase", label_fractions=[0.5])


def test_epoch_losses_match_evaluate(funnel_binary):
    train, valid = funnel_binary.split((0.7, 0.3), seed=0)
    record = EpochLosses({"train": train, "valid": valid})
    result = mb.fit(
        SharedBottom(train.schema, seed=0), train, valid, progress=False, callbacks=[record], **FIT
    )
    frame = record.frame
    assert len(frame) == 2 * 2 * 2  # epochs × splits × tasks
    # The validation losses are those fit computed for the same epochs.
    ours = frame[frame["split"] == "valid"].set_index(["epoch", "task"])["loss"]
    h = result.history
    theirs = h[(h["split"] == "valid") & (h["metric"] == "logloss")].set_index(["epoch", "task"])[
        "value"
    ]
    assert np.allclose(ours.sort_index(), theirs.sort_index(), rtol=1e-5)


def test_loss_curves_and_gap(funnel_binary):
    train, valid = funnel_binary.split((0.7, 0.3), seed=0)
    curves = loss_curves(train, valid, MODELS, [0, 1], **FIT)
    assert set(curves["split"]) == {"train", "valid"}
    assert len(curves) == 2 * 2 * 2 * 2 * 2  # models × seeds × tasks × epochs × splits
    gap = generalisation_gap(curves)
    assert len(gap) == 2 * 2 * 2
    assert np.allclose(gap["gap"], gap["valid_loss"] - gap["train_loss"])
    assert gap["best_epoch"].between(1, 2).all()
    fig = plot_loss_curves(curves)
    assert len(fig.axes) == 4  # losses and gaps, one column per task
    plt.close(fig)
    with pytest.raises(ValueError, match="loss_curves"):
        generalisation_gap(curves.drop(columns="best_epoch"))
    with pytest.raises(ValueError, match="data"):
        EpochLosses({})


def test_gap_at_a_fixed_epoch(funnel_binary):
    train, valid = funnel_binary.split((0.7, 0.3), seed=0)
    curves = loss_curves(train, valid, {"shared": MODELS["shared"]}, [0], **FIT)
    last = generalisation_gap(curves, epoch=2)
    assert (last["epoch"] == 2).all()
    row = curves[(curves["epoch"] == 2) & (curves["task"] == "click")].set_index("split")["loss"]
    got = last.set_index("task").loc["click", "gap"]
    assert got == pytest.approx(row["valid"] - row["train"])
    with pytest.raises(ValueError, match="epoch"):
        generalisation_gap(curves, epoch=9)


def test_paired_difference_sign_and_pairing():
    import pandas as pd

    from mtlbook.book.ch12_1 import paired_difference

    rows = [
        ("b", 0, "t", "auc", 0.50),
        ("m", 0, "t", "auc", 0.70),
        ("b", 1, "t", "auc", 0.60),
        ("m", 1, "t", "auc", 0.70),
        ("b", 0, "t", "logloss", 0.30),
        ("m", 0, "t", "logloss", 0.20),
        ("b", 1, "t", "logloss", 0.30),
        ("m", 1, "t", "logloss", 0.10),
    ]
    df = pd.DataFrame(rows, columns=["model", "seed", "task", "metric", "value"])
    out = paired_difference(df, "b").set_index("metric")
    assert out.loc["auc", "mean"] == pytest.approx(0.15)
    assert out.loc["logloss", "mean"] == pytest.approx(0.15)  # lower is better: b − m
    assert out.loc["auc", "n"] == 2
    with pytest.raises(ValueError, match="baseline"):
        paired_difference(df, "zzz")
