"""Recording mixing parameters over training (mtlbook.analysis.mixing)."""

from __future__ import annotations

import matplotlib
import pandas as pd
import pytest

import mtlbook as mb
from mtlbook.analysis.mixing import (
    MixingRecorder,
    cross_task_share,
    mixing_frame,
    plot_mixing_history,
    plot_mixing_matrices,
)
from mtlbook.models import CrossStitch, SharedBottom, Sluice

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def split():
    data = mb.make_correlated_tasks(400, 0.5, n_features=8, seed=0)
    return data.split((0.75, 0.25), seed=0)


def test_mixing_frame_cross_stitch_initial_values(split):
    model = CrossStitch(split[0].schema, hidden_units=(8, 8))
    frame = mixing_frame(model)
    assert set(frame["parameter"]) == {"alpha/0", "alpha/1"}
    a0 = frame[frame["parameter"] == "alpha/0"]
    assert a0["value"].round(6).tolist() == [0.9, 0.1, 0.1, 0.9]
    assert a0["row"].tolist() == ["task1", "task1", "task2", "task2"]
    share = cross_task_share(frame.assign(epoch=0))
    assert share["share"].round(6).eq(0.1).all()


def test_mixing_frame_sluice_labels(split):
    model = Sluice(split[0].schema, hidden_units=(8, 8), n_subspaces=2)
    frame = mixing_frame(model)
    alpha = frame[frame["parameter"] == "alpha/0"]
    assert len(alpha) == 16
    assert alpha["row"].iloc[0] == "task1:0"
    beta = frame[frame["parameter"] == "beta"]
    assert beta["col"].tolist() == ["layer 0", "layer 1"] * 2
    assert beta["col_task"].isna().all()
    share = cross_task_share(frame.assign(epoch=0))
    assert set(share["parameter"]) == {"alpha/0", "alpha/1"}  # β is skipped
    # each (task, subspace) row keeps 0.9 and spreads 0.1 over 3 others, 2 of them other-task
    assert share["share"].round(6).eq(round(0.1 * 2 / 3, 6)).all()


def test_recorder_records_every_epoch_and_scalars(split):
    train, valid = split
    recorder = MixingRecorder(scalars={"orthogonality": lambda m: m.orthogonality()})
    model = Sluice(train.schema, hidden_units=(8, 8), seed=0)
    result = mb.fit(
        model,
        train,
        valid,
        epochs=3,
        lr=5e-2,
        batch_size=64,
        progress=False,
        device="cpu",
        callbacks=[recorder],
        restore_best=False,
    )
    frame = recorder.frame()
    assert sorted(frame["epoch"].unique()) == [0, 1, 2, 3]
    last = frame[frame["epoch"] == 3].set_index(["parameter", "row", "col"])["value"]
    now = mixing_frame(result.model).set_index(["parameter", "row", "col"])["value"]
    pd.testing.assert_series_equal(last, now, check_names=False)
    first = frame[frame["epoch"] == 0]["value"].to_numpy()
    assert (frame[frame["epoch"] == 3]["value"].to_numpy() != first).any()  # α learned
    scalars = recorder.scalar_frame()
    assert scalars["epoch"].tolist() == [0, 1, 2, 3]
    assert (scalars["name"] == "orthogonality").all()
    fig = plot_mixing_history(frame, best_epochs={None: result.best_epoch})
    assert len(fig.axes) == 3
    assert len(plot_mixing_matrices(frame, epoch=result.best_epoch).axes) == 3
    with pytest.raises(ValueError, match="several epochs"):
        plot_mixing_matrices(frame)
    faceted = pd.concat([frame.assign(p=0.0), frame.assign(p=0.9)])
    assert len(plot_mixing_history(faceted, facet="p").axes) == 6


def test_errors(split):
    with pytest.raises(ValueError, match="no learned mixing"):
        mixing_frame(SharedBottom(split[0].schema))
    with pytest.raises(TypeError, match="MultiTaskModel"):
        mixing_frame("model")
    with pytest.raises(TypeError, match="callable"):
        MixingRecorder(scalars={"x": 1})
    with pytest.raises(RuntimeError, match="nothing recorded"):
        MixingRecorder().frame()
    with pytest.raises(ValueError, match="lacks column"):
        cross_task_share(pd.DataFrame({"value": [1.0]}))
