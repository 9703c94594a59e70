"""fit(): training, determinism, the NaN guard, model selection, callbacks; masked losses."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mtlbook as mb
from mtlbook.data import Batch, MultiTaskData, TaskSpec
from mtlbook.losses import task_losses
from mtlbook.models import SharedBottom

FAST = {"batch_size": 128, "device": "cpu", "progress": False}


def _small_model(schema, seed: int = 0, dropout: float = 0.0) -> SharedBottom:
    return SharedBottom(schema, bottom_units=(16,), tower_units=(8,), dropout=dropout, seed=seed)


@pytest.fixture(scope="module")
def parts(correlated_binary):
    """Train and validation halves of the binary correlated data."""
    return correlated_binary.split((0.5, 0.5), seed=0)


@pytest.fixture(scope="module")
def flipped_valid(parts):
    """The validation half with every label flipped: better on train means worse here."""
    valid = parts[1]
    return MultiTaskData(
        dense=valid.dense,
        labels={k: 1.0 - v for k, v in valid.labels.items()},
        tasks=valid.schema.tasks,
        dense_names=valid.schema.dense,
    )


def _series(history, split: str, task: str, metric: str) -> np.ndarray:
    rows = history[
        (history["split"] == split) & (history["task"] == task) & (history["metric"] == metric)
    ].sort_values("epoch")
    return rows["value"].to_numpy()


def test_loss_falls(parts):
    train, valid = parts
    result = mb.fit(_small_model(train.schema), train, valid, epochs=5, lr=1e-2, **FAST)
    train_loss = _series(result.history, "train", "all", "loss")
    valid_loss = _series(result.history, "valid", "all", "loss")
    assert len(train_loss) == len(valid_loss) == 5
    assert train_loss[-1] < 0.9 * train_loss[0]
    assert valid_loss.min() < valid_loss[0]
    assert result.epochs_run == 5
    assert isinstance(result, mb.training.FitResult)
    assert not result.model.training


def test_history_columns_and_contents(parts):
    train, valid = parts
    result = mb.fit(_small_model(train.schema), train, valid, epochs=2, **FAST)
    hist = result.history
    assert list(hist.columns) == ["epoch", "split", "task", "metric", "value"]
    assert set(hist["split"]) == {"train", "valid"}
    assert set(hist["epoch"]) == {1, 2}
    train_rows = hist[hist["split"] == "train"]
    assert set(train_rows["metric"]) == {"loss", "weight"}
    assert set(train_rows["task"]) == {"task1", "task2", "all"}
    valid_rows = hist[hist["split"] == "valid"]
    assert {"auc", "logloss", "loss"} <= set(valid_rows["metric"])
    # The valid 'all' loss is the sum of the tasks' log-losses.
    for epoch in (1, 2):
        rows = valid_rows[valid_rows["epoch"] == epoch]
        per_task = rows[(rows["metric"] == "logloss")]["value"].sum()
        total = rows[(rows["task"] == "all") & (rows["metric"] == "loss")]["value"].item()
        assert total == pytest.approx(per_task)
    metrics = result.valid_metrics()
    assert set(metrics.index) == {"task1", "task2", "all"}


def test_weights_logged(parts):
    train, valid = parts
    result = mb.fit(_small_model(train.schema), train, valid, epochs=3, **FAST)
    hist = result.history
    weights = hist[(hist["split"] == "train") & (hist["metric"] == "weight")]
    assert len(weights) == 3 * 2
    assert set(weights["task"]) == {"task1", "task2"}
    assert sorted(weights["epoch"].unique()) == [1, 2, 3]
    assert (weights["value"] == 1.0).all()  # EqualWeight


def test_determinism_same_seeds(parts):
    train, valid = parts
    runs = [
        mb.fit(
            _small_model(train.schema, seed=3, dropout=0.2), train, valid, epochs=2, seed=9, **FAST
        )
        for _ in range(2)
    ]
    a, b = (r.history["value"].to_numpy() for r in runs)
    np.testing.assert_array_equal(a, b)
    for pa, pb in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_different_fit_seed_changes_results(parts):
    train, valid = parts
    a = mb.fit(_small_model(train.schema, seed=3), train, valid, epochs=2, seed=1, **FAST)
    b = mb.fit(_small_model(train.schema, seed=3), train, valid, epochs=2, seed=2, **FAST)
    assert not np.array_equal(a.history["value"].to_numpy(), b.history["value"].to_numpy())


def test_fit_seed_drives_dropout(parts):
    """On identical rows the shuffling order is irrelevant, so only dropout is random."""
    _, valid = parts
    row = valid.dense[:1]
    same = MultiTaskData(
        dense=np.repeat(row, 256, axis=0),
        labels={"task1": np.ones(256), "task2": np.zeros(256)},
        tasks=valid.schema.tasks,
        dense_names=valid.schema.dense,
    )
    losses = []
    for seed in (1, 1, 2):
        model = _small_model(same.schema, seed=3, dropout=0.5)
        result = mb.fit(model, same, valid, epochs=2, seed=seed, **FAST)
        losses.append(_series(result.history, "train", "all", "loss"))
    np.testing.assert_array_equal(losses[0], losses[1])
    assert not np.array_equal(losses[0], losses[2])


def test_fit_does_not_depend_on_global_rng(parts):
    train, valid = parts
    values = []
    for global_seed in (10, 20):
        torch.manual_seed(global_seed)
        model = _small_model(train.schema, seed=3, dropout=0.3)
        values.append(mb.fit(model, train, valid, epochs=1, seed=4, **FAST).history["value"])
    np.testing.assert_array_equal(values[0].to_numpy(), values[1].to_numpy())


def test_fit_leaves_global_rng_unchanged(parts):
    train, valid = parts
    model = _small_model(train.schema)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    mb.fit(model, train, valid, epochs=1, **FAST)
    assert torch.equal(state, torch.get_rng_state())


# ---------------------------------------------------------------- the NaN guard


def test_nan_guard_huge_label_scale(huge_task2_scale):
    train, valid = huge_task2_scale.split((0.8, 0.2), seed=0)
    with pytest.raises(FloatingPointError, match=r"task 'task2'.*step 1\b"):
        mb.fit(_small_model(train.schema), train, valid, epochs=1, **FAST)


class _NaNAfter(SharedBottom):
    """Outputs NaN for task2 from the third training forward pass on."""

    def __init__(self, schema, **kwargs):
        super().__init__(schema, **kwargs)
        self.calls = 0

    def forward(self, batch):
        out = super().forward(batch)
        if self.training:
            self.calls += 1
            if self.calls >= 3:
                out["task2"] = out["task2"] * float("nan")
        return out


def test_nan_guard_model_outputs_nan(parts):
    train, valid = parts
    model = _NaNAfter(train.schema, bottom_units=(8,), tower_units=(4,))
    with pytest.raises(FloatingPointError, match=r"task 'task2'.*epoch 1, step 3\b"):
        mb.fit(model, train, valid, epochs=2, **FAST)


# ---------------------------------------------------------------- model selection


class _Snapshots(mb.Callback):
    def __init__(self):
        self.states = {}

    def on_epoch_end(self, model, epoch, history):
        self.states[epoch] = copy.deepcopy(model.state_dict())


def test_selection_uses_validation_and_restores_best(parts, flipped_valid):
    train, _ = parts
    snaps = _Snapshots()
    result = mb.fit(
        _small_model(train.schema),
        train,
        flipped_valid,
        epochs=4,
        lr=1e-2,
        callbacks=[snaps],
        **FAST,
    )
    hist = result.history
    valid_loss = _series(hist, "valid", "all", "loss")
    train_loss = _series(hist, "train", "all", "loss")
    best_valid = int(np.argmin(valid_loss)) + 1
    best_train = int(np.argmin(train_loss)) + 1
    assert best_valid != best_train, "the construction should separate the two epochs"
    assert result.best_epoch == best_valid
    assert result.best_score == pytest.approx(valid_loss.min())
    assert result.best_epoch < result.epochs_run == 4
    # The returned model holds the weights of the best epoch, not of the last one.
    state = result.model.state_dict()
    for key, value in snaps.states[result.best_epoch].items():
        assert torch.equal(state[key], value), key
    assert any(not torch.equal(state[k], v) for k, v in snaps.states[4].items())
    # Evaluating it on the validation data reproduces the best epoch's history.
    metrics = mb.evaluate(result.model, flipped_valid)
    logged = result.valid_metrics()
    for task, metric, value in metrics.itertuples(index=False):
        assert value == pytest.approx(logged.loc[task, metric], rel=1e-6, abs=1e-9)
    last = result.valid_metrics(4)
    assert metrics["value"].sum() != pytest.approx(
        sum(last.loc[t, m] for t, m in zip(metrics["task"], metrics["metric"], strict=True))
    )


def test_without_restore_best_keeps_last_weights(parts, flipped_valid):
    train, _ = parts
    snaps = _Snapshots()
    result = mb.fit(
        _small_model(train.schema),
        train,
        flipped_valid,
        epochs=3,
        lr=1e-2,
        restore_best=False,
        callbacks=[snaps],
        **FAST,
    )
    assert result.best_epoch < 3
    state = result.model.state_dict()
    for key, value in snaps.states[3].items():
        assert torch.equal(state[key], value), key


def test_early_stopping_stops_early(parts, flipped_valid):
    train, _ = parts
    result = mb.fit(
        _small_model(train.schema),
        train,
        flipped_valid,
        epochs=8,
        lr=1e-2,
        early_stopping=2,
        **FAST,
    )
    assert result.epochs_run < 8
    assert result.epochs_run == result.best_epoch + 2
    assert result.history["epoch"].max() == result.epochs_run


def test_monitor_auc_picks_max(parts):
    train, valid = parts
    result = mb.fit(
        _small_model(train.schema), train, valid, epochs=4, lr=1e-2, monitor="task1:auc", **FAST
    )
    auc = _series(result.history, "valid", "task1", "auc")
    assert int(np.argmax(auc)) != int(np.argmin(auc))
    assert result.best_epoch == int(np.argmax(auc)) + 1
    assert result.best_score == pytest.approx(auc.max())
    assert result.monitor == "task1:auc"


def test_monitor_auc_picks_max_on_flipped_labels(parts, flipped_valid):
    train, _ = parts
    result = mb.fit(
        _small_model(train.schema),
        train,
        flipped_valid,
        epochs=4,
        lr=1e-2,
        monitor="task2:auc",
        **FAST,
    )
    auc = _series(result.history, "valid", "task2", "auc")
    assert int(np.argmax(auc)) != int(np.argmin(auc))
    assert result.best_epoch == int(np.argmax(auc)) + 1


def test_monitor_logloss_picks_min(parts):
    train, valid = parts
    result = mb.fit(
        _small_model(train.schema), train, valid, epochs=3, lr=1e-2, monitor="task2:logloss", **FAST
    )
    logloss = _series(result.history, "valid", "task2", "logloss")
    assert result.best_epoch == int(np.argmin(logloss)) + 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": -2}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"early_stopping": 0}, "early_stopping"),
        ({"monitor": "accuracy"}, "monitor"),
        ({"monitor": "task9:auc"}, "monitor"),
        ({"monitor": "task1:mse"}, "mse"),
        ({"monitor": "task1:auc:max"}, "monitor"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_arguments(parts, kwargs, match):
    train, valid = parts
    args = {"epochs": 1, **FAST, **kwargs}
    with pytest.raises(ValueError, match=match):
        mb.fit(_small_model(train.schema), train, valid, **args)


def test_data_with_another_schema(parts, correlated_small, funnel_small):
    train, valid = parts
    for other in (correlated_small, funnel_small):
        with pytest.raises(ValueError, match="schema"):
            mb.fit(_small_model(train.schema), train, other, epochs=1, **FAST)
        with pytest.raises(ValueError, match="schema"):
            mb.fit(_small_model(train.schema), other, valid, epochs=1, **FAST)


def test_bad_types(parts):
    train, valid = parts
    with pytest.raises(TypeError):
        mb.fit(_small_model(train.schema), train, valid.to_frame(), epochs=1, **FAST)
    with pytest.raises(TypeError, match="weighting"):
        mb.fit(_small_model(train.schema), train, valid, epochs=1, weighting="equal", **FAST)


# ---------------------------------------------------------------- callbacks


class _Recorder(mb.Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, model, weighting):
        self.events.append(("begin", weighting.weights))

    def on_step_end(self, model, step, losses):
        self.events.append(("step", step, losses))

    def on_epoch_end(self, model, epoch, history):
        self.events.append(("epoch", epoch, history))


def test_callback_hooks(parts):
    train, valid = parts
    recorder = _Recorder()
    epochs = 3
    mb.fit(_small_model(train.schema), train, valid, epochs=epochs, callbacks=[recorder], **FAST)
    events = recorder.events
    steps_per_epoch = -(-len(train) // FAST["batch_size"])
    assert events[0] == ("begin", {"task1": 1.0, "task2": 1.0})
    assert sum(e[0] == "begin" for e in events) == 1
    steps = [e for e in events if e[0] == "step"]
    assert [e[1] for e in steps] == list(range(1, epochs * steps_per_epoch + 1))
    for _, _, losses in steps:
        assert set(losses) == {"task1", "task2"}
        assert all(isinstance(v, float) and np.isfinite(v) for v in losses.values())
    epoch_events = [e for e in events if e[0] == "epoch"]
    assert [e[1] for e in epoch_events] == [1, 2, 3]
    for _, epoch, frame in epoch_events:
        assert list(frame.columns) == ["epoch", "split", "task", "metric", "value"]
        assert (frame["epoch"] == epoch).all()
    # Each epoch's end comes after that epoch's steps and before the next epoch's.
    kinds = [e[0] for e in events]
    for k, position in enumerate(i for i, kind in enumerate(kinds) if kind == "epoch"):
        assert kinds[position - 1] == "step"
        assert sum(kind == "step" for kind in kinds[:position]) == (k + 1) * steps_per_epoch


# ---------------------------------------------------------------- masked losses


def _masked_setup():
    data = MultiTaskData(
        dense=np.zeros((6, 1)),
        labels={
            "click": [1, 0, 1, 1, 0, 0],
            "buy": [1, 0, 0, 1, 0, 0],
            "stay": [2.0, 0.0, 5.0, 1.0, 0.0, 0.0],
        },
        tasks=[
            TaskSpec("click", "binary"),
            TaskSpec("buy", "binary"),
            TaskSpec("stay", "regression"),
        ],
        masks={
            "buy": [True, False, True, True, False, False],
            "stay": [True, False, True, True, False, False],
        },
        dense_names=["x"],
    )
    return data


def test_masked_task_loss_averages_over_mask_only():
    data = _masked_setup()
    batch = next(iter(data.loader(batch_size=6, shuffle=False)))
    torch.manual_seed(0)
    outputs = {name: torch.randn(6, requires_grad=True) for name in data.task_names}
    losses = task_losses(outputs, batch, data.schema)
    mask = torch.tensor([True, False, True, True, False, False])
    y = batch.labels
    expected_click = F.binary_cross_entropy_with_logits(outputs["click"], y["click"])
    expected_buy = F.binary_cross_entropy_with_logits(outputs["buy"][mask], y["buy"][mask])
    expected_stay = ((outputs["stay"][mask] - y["stay"][mask]) ** 2).mean()
    torch.testing.assert_close(losses["click"], expected_click)
    torch.testing.assert_close(losses["buy"], expected_buy)
    torch.testing.assert_close(losses["stay"], expected_stay)
    # The model hook gives the same numbers.
    model = _small_model(data.schema)
    hooked = model.task_losses(outputs, batch)
    for name in data.task_names:
        torch.testing.assert_close(hooked[name], losses[name])
    # Outputs outside the mask do not matter.
    moved = {k: v.detach().clone() for k, v in outputs.items()}
    moved["buy"][~mask] += 10.0
    moved["stay"][~mask] -= 7.0
    again = task_losses(moved, batch, data.schema)
    torch.testing.assert_close(again["buy"], losses["buy"])
    torch.testing.assert_close(again["stay"], losses["stay"])


def test_all_false_mask_gives_zero_loss_with_graph():
    data = _masked_setup()
    rows = data.subset([1, 4, 5])  # no row inside the masks
    batch = next(iter(rows.loader(batch_size=3, shuffle=False)))
    assert not batch.masks["buy"].any() and not batch.masks["stay"].any()
    outputs = {name: torch.randn(3, requires_grad=True) for name in data.task_names}
    losses = task_losses(outputs, batch, data.schema)
    assert losses["buy"].item() == 0.0
    assert losses["stay"].item() == 0.0
    assert losses["click"].item() > 0.0
    total = sum(losses.values())
    total.backward()
    assert torch.count_nonzero(outputs["buy"].grad) == 0
    assert torch.count_nonzero(outputs["stay"].grad) == 0


def test_batch_to_keeps_everything():
    data = _masked_setup()
    batch = next(iter(data.loader(batch_size=4, shuffle=False)))
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and len(moved) == 4
    assert set(moved.labels) == set(batch.labels) and set(moved.masks) == {"buy", "stay"}
