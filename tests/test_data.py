"""The correlated-tasks generator and the MultiTaskData API (split, loader, to_frame)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import mtlbook as mb
from mtlbook.data import Batch, MultiTaskData, Schema, TaskSpec

# ---------------------------------------------------------------- make_correlated_tasks


@pytest.mark.parametrize("p", [-1.0, -0.7, -0.2, 0.0, 0.3, 0.5, 0.9, 0.99, 1.0])
def test_weight_cosine_equals_correlation(p):
    data = mb.make_correlated_tasks(10, p, n_features=16, seed=3)
    w1, w2 = data.weights
    cos = float(w1 @ w2 / (np.linalg.norm(w1) * np.linalg.norm(w2)))
    assert cos == pytest.approx(p, abs=1e-6)


@pytest.mark.parametrize("c", [0.5, 1.0, 3.0])
def test_weight_norm_equals_c(c):
    data = mb.make_correlated_tasks(10, 0.4, n_features=12, c=c, seed=1)
    assert data.weights.shape == (2, 12)
    np.testing.assert_allclose(np.linalg.norm(data.weights, axis=1), [c, c], rtol=1e-9)


def test_label_correlation_rises_with_p():
    corr = []
    for p in (0.0, 0.5, 0.9, 1.0):
        data = mb.make_correlated_tasks(20_000, p, n_features=20, seed=0)
        corr.append(np.corrcoef(data.labels["task1"], data.labels["task2"])[0, 1])
    assert all(a < b for a, b in itertools.pairwise(corr)), corr
    assert abs(corr[0]) < 0.1, corr
    assert corr[-1] > 0.99, corr


def test_regression_tasks_and_truth(correlated_small):
    data = correlated_small
    assert data.task_names == ("task1", "task2")
    assert all(t.kind == "regression" for t in data.schema.tasks)
    assert data.masks == {}
    assert data.schema.dense == tuple(f"x{j}" for j in range(8))
    assert data.schema.categorical == ()
    assert data.categorical is None
    assert list(data.truth.columns) == ["f1", "f2"]
    # Labels are the noise-free values plus noise of std 0.01.
    noise = data.labels["task1"] - data.truth["f1"].to_numpy()
    assert 0.005 < noise.std() < 0.02


def test_binary_task_type_gives_balanced_01_labels():
    data = mb.make_correlated_tasks(5_001, 0.3, n_features=10, task_type="binary", seed=2)
    assert all(t.kind == "binary" for t in data.schema.tasks)
    for name in data.task_names:
        y = data.labels[name]
        assert set(np.unique(y).tolist()) == {0.0, 1.0}
        assert y.mean() == pytest.approx(0.5, abs=0.01)


def test_generator_determinism():
    a = mb.make_correlated_tasks(300, 0.6, n_features=6, seed=11)
    b = mb.make_correlated_tasks(300, 0.6, n_features=6, seed=11)
    c = mb.make_correlated_tasks(300, 0.6, n_features=6, seed=12)
    np.testing.assert_array_equal(a.dense, b.dense)
    np.testing.assert_array_equal(a.weights, b.weights)
    for name in a.task_names:
        np.testing.assert_array_equal(a.labels[name], b.labels[name])
    assert not np.array_equal(a.dense, c.dense)
    assert not np.array_equal(a.weights, c.weights)
    assert not np.array_equal(a.labels["task1"], c.labels["task1"])


def test_sine_parameters_do_not_depend_on_data_seed():
    a = mb.make_correlated_tasks(50, 0.6, n_features=6, seed=1)
    b = mb.make_correlated_tasks(50, 0.6, n_features=6, seed=2)
    np.testing.assert_array_equal(a.meta["alpha"], b.meta["alpha"])
    np.testing.assert_array_equal(a.meta["beta"], b.meta["beta"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"correlation": 1.5}, "correlation must lie in"),
        ({"correlation": -1.01}, "correlation must lie in"),
        ({"task_type": "classification"}, "task_type"),
        ({"n_features": 1}, "n_features"),
        ({"n_features": 0}, "n_features"),
        ({"n_samples": 0}, "n_samples"),
        ({"noise_std": -0.1}, "noise_std"),
    ],
)
def test_generator_argument_validation(kwargs, match):
    args = {"n_samples": 10, "correlation": 0.5, **kwargs}
    with pytest.raises(ValueError, match=match):
        mb.make_correlated_tasks(**args)


def test_weights_missing_on_other_data(make_indexed):
    with pytest.raises(AttributeError):
        _ = make_indexed().weights


# ---------------------------------------------------------------- MultiTaskData accessors


def test_accessors(make_indexed):
    data = make_indexed(103)
    assert len(data) == 103
    assert data.task_names == ("a", "b")
    assert set(data.labels) == {"a", "b"}
    assert data.labels["a"].dtype == np.float32 and data.labels["a"].shape == (103,)
    assert isinstance(data.schema, Schema)
    assert data.schema.dense == ("idx", "noise")
    assert data.schema.n_dense == 2
    assert data.schema.categorical == ("cat",)
    assert data.schema.cardinalities == (5,)
    assert data.schema.tasks == (TaskSpec("a", "binary"), TaskSpec("b", "regression"))
    assert data.schema.task("b").kind == "regression"
    assert set(data.masks) == {"b"}
    with pytest.raises(KeyError, match="nope"):
        data.schema.task("nope")
    assert data.mask("a").all()
    np.testing.assert_array_equal(data.mask("b"), data.masks["b"])
    # Labels outside a mask are stored as 0.
    assert (data.labels["b"][~data.masks["b"]] == 0).all()


def test_subset_keeps_rows_aligned(make_indexed):
    data = make_indexed(50)
    keep = np.array([3, 7, 11, 40])
    part = data.subset(keep)
    assert len(part) == 4
    np.testing.assert_array_equal(part.dense[:, 0], keep)
    np.testing.assert_array_equal(part.truth["t"].to_numpy(), keep)
    np.testing.assert_array_equal(part.groups, keep % 7)
    np.testing.assert_array_equal(part.labels["a"], data.labels["a"][keep])
    np.testing.assert_array_equal(part.masks["b"], data.masks["b"][keep])
    boolean = np.zeros(50, dtype=bool)
    boolean[keep] = True
    np.testing.assert_array_equal(data.subset(boolean).dense, part.dense)
    assert part.schema == data.schema


def test_split_sizes_disjoint_and_complete(make_indexed):
    data = make_indexed(1_000)
    parts = data.split((0.8, 0.1, 0.1), seed=0)
    assert [len(p) for p in parts] == [800, 100, 100]
    ids = [p.dense[:, 0].astype(int) for p in parts]
    union = np.concatenate(ids)
    assert len(np.unique(union)) == 1_000
    np.testing.assert_array_equal(np.sort(union), np.arange(1_000))
    for p, i in zip(parts, ids, strict=True):
        np.testing.assert_array_equal(p.truth["t"].to_numpy(), i)
        np.testing.assert_array_equal(p.groups, i % 7)
        assert p.schema == data.schema
    two = data.split((0.25, 0.75), seed=0)
    assert [len(p) for p in two] == [250, 750]


def test_split_determinism(make_indexed):
    data = make_indexed(500)
    a = data.split((0.6, 0.4), seed=5)
    b = data.split((0.6, 0.4), seed=5)
    c = data.split((0.6, 0.4), seed=6)
    np.testing.assert_array_equal(a[0].dense, b[0].dense)
    np.testing.assert_array_equal(a[1].dense, b[1].dense)
    assert not np.array_equal(a[0].dense, c[0].dense)


@pytest.mark.parametrize(
    "fractions",
    [(1.0,), (0.5, 0.6), (0.5, 0.4), (1.2, -0.2), (0.5, 0.0, 0.5), (0.999, 0.001)],
)
def test_split_bad_fractions(make_indexed, fractions):
    data = make_indexed(50)
    with pytest.raises(ValueError, match="fractions"):
        data.split(fractions)


# ---------------------------------------------------------------- loader


def test_loader_batches_shapes_and_dtypes(make_indexed):
    data = make_indexed(103)
    loader = data.loader(batch_size=32, shuffle=False)
    batches = list(loader)
    assert len(loader) == 4 and len(batches) == 4
    assert [len(b) for b in batches] == [32, 32, 32, 7]
    first = batches[0]
    assert isinstance(first, Batch)
    assert first.dense.shape == (32, 2) and first.dense.dtype == torch.float32
    assert first.categorical.shape == (32, 1) and first.categorical.dtype == torch.int64
    assert set(first.labels) == {"a", "b"}
    assert set(first.masks) == {"b"}
    for name in ("a", "b"):
        assert first.labels[name].shape == (32,) and first.labels[name].dtype == torch.float32
    assert first.masks["b"].shape == (32,) and first.masks["b"].dtype == torch.bool
    # Without shuffling, batches are the rows in order.
    order = torch.cat([b.dense[:, 0] for b in batches]).numpy()
    np.testing.assert_array_equal(order, np.arange(103))
    labels = torch.cat([b.labels["a"] for b in batches]).numpy()
    np.testing.assert_array_equal(labels, data.labels["a"])
    assert len(data.loader(batch_size=32, drop_last=True)) == 3
    assert [len(b) for b in data.loader(batch_size=32, drop_last=True)] == [32, 32, 32]


def _pass_order(loader) -> np.ndarray:
    return torch.cat([b.dense[:, 0] for b in loader]).numpy().astype(int)


def test_shuffled_loader_covers_every_row_once_per_pass(make_indexed):
    data = make_indexed(103)
    loader = data.loader(batch_size=10, shuffle=True, seed=0)
    first, second = _pass_order(loader), _pass_order(loader)
    for order in (first, second):
        assert len(order) == 103
        np.testing.assert_array_equal(np.sort(order), np.arange(103))
    assert not np.array_equal(first, np.arange(103))
    assert not np.array_equal(first, second)
    # Labels and masks travel with their rows.
    batch = next(iter(data.loader(batch_size=103, shuffle=True, seed=4)))
    rows = batch.dense[:, 0].numpy().astype(int)
    np.testing.assert_array_equal(batch.labels["a"].numpy(), data.labels["a"][rows])
    np.testing.assert_array_equal(batch.masks["b"].numpy(), data.masks["b"][rows])
    np.testing.assert_array_equal(batch.categorical[:, 0].numpy(), rows % 5)


def test_shuffled_loader_order_fixed_by_seed(make_indexed):
    data = make_indexed(103)
    a = data.loader(batch_size=16, seed=7)
    b = data.loader(batch_size=16, seed=7)
    c = data.loader(batch_size=16, seed=8)
    np.testing.assert_array_equal(_pass_order(a), _pass_order(b))
    np.testing.assert_array_equal(_pass_order(a), _pass_order(b))  # second passes agree too
    assert not np.array_equal(_pass_order(data.loader(batch_size=16, seed=7)), _pass_order(c))


def test_loader_does_not_touch_global_rng(make_indexed):
    data = make_indexed(40)
    state = torch.get_rng_state()
    _pass_order(data.loader(batch_size=8, seed=1))
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("batch_size", [0, -3, 2.5])
def test_loader_bad_batch_size(make_indexed, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        make_indexed(10).loader(batch_size=batch_size)


# ---------------------------------------------------------------- to_frame


def test_to_frame_nan_outside_masks(make_indexed):
    data = make_indexed(60)
    frame = data.to_frame(include_truth=True)
    assert len(frame) == 60
    for col in ("idx", "noise", "cat", "group", "a", "b", "truth_t"):
        assert col in frame.columns
    mask = data.masks["b"]
    assert 0 < mask.sum() < 60
    assert frame["b"][~mask].isna().all()
    np.testing.assert_allclose(frame["b"][mask].to_numpy(), data.labels["b"][mask])
    assert not frame["a"].isna().any()
    np.testing.assert_array_equal(frame["a"].to_numpy(), data.labels["a"])
    np.testing.assert_array_equal(frame["truth_t"].to_numpy(), np.arange(60))
    assert "truth_t" not in data.to_frame().columns


def test_constructor_accepts_mapping_of_kinds():
    data = MultiTaskData(
        dense=np.zeros((4, 1)), labels={"y": [0, 1, 1, 0]}, tasks={"y": "binary"}, dense_names=["x"]
    )
    assert data.schema.tasks == (TaskSpec("y", "binary"),)
    assert data.groups is None and data.truth is None
