"""Building a MultiTaskData from a DataFrame, and the errors for bad inputs."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mtlbook.data import MultiTaskData, TaskSpec


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "price": [1.0, 2.5, 3.0, 0.5, 4.0, 2.0],
            "age": [20.0, 31.0, 45.0, 22.0, 60.0, 38.0],
            "user": ["u3", "u1", "u2", "u1", "u3", "u1"],
            "item": [10, 30, 20, 10, 10, 30],
            "click": [1, 0, 1, 1, 0, 1],
            "buy": [1.0, np.nan, 0.0, 1.0, np.nan, 0.0],
            "stay": [3.5, 1.0, 2.0, 8.0, 0.0, 4.0],
            "shopper": ["a", "b", "a", "c", "b", "a"],
            "p_true": [0.5, 0.1, 0.4, 0.7, 0.2, 0.3],
        }
    )


def _build(df: pd.DataFrame | None = None, **overrides) -> MultiTaskData:
    kwargs: dict[str, Any] = {
        "dense": ["price", "age"],
        "categorical": ["user", "item"],
        "tasks": {
            "click": "binary",
            "buy": {"kind": "binary", "mask": "click"},
            "stay": "regression",
        },
        "group": "shopper",
        "truth": ["p_true"],
    }
    kwargs.update(overrides)
    return MultiTaskData.from_frame(_frame() if df is None else df, **kwargs)


def test_builds_every_part():
    df = _frame()
    data = _build(df)
    assert len(data) == 6
    assert data.task_names == ("click", "buy", "stay")
    assert data.schema.tasks == (
        TaskSpec("click", "binary"),
        TaskSpec("buy", "binary"),
        TaskSpec("stay", "regression"),
    )
    assert data.schema.dense == ("price", "age")
    assert data.schema.categorical == ("user", "item")
    np.testing.assert_allclose(data.dense, df[["price", "age"]].to_numpy())
    assert data.dense.dtype == np.float32
    np.testing.assert_array_equal(data.labels["click"], df["click"].to_numpy())
    np.testing.assert_allclose(data.labels["stay"], df["stay"].to_numpy())
    # The masked task: mask == click, labels kept inside the mask, NaN outside allowed (→ 0).
    np.testing.assert_array_equal(data.masks["buy"], df["click"].to_numpy() == 1)
    assert set(data.masks) == {"buy"}
    np.testing.assert_array_equal(data.labels["buy"], [1, 0, 0, 1, 0, 0])
    assert not np.isnan(data.labels["buy"]).any()
    # Groups: one integer id per distinct value, rows of the same group share it.
    assert data.groups.dtype == np.int64
    assert data.groups[0] == data.groups[2] == data.groups[5]
    assert data.groups[1] == data.groups[4]
    assert len(np.unique(data.groups)) == 3
    # Truth is kept apart from the features.
    assert list(data.truth.columns) == ["p_true"]
    np.testing.assert_allclose(data.truth["p_true"], df["p_true"])
    assert "p_true" not in data.schema.dense + data.schema.categorical
    # to_frame shows NaN outside the mask.
    frame = data.to_frame()
    assert frame["buy"].isna().tolist() == [False, True, False, False, True, False]


def test_categorical_encoding_and_cardinalities():
    data = _build()
    # Sorted order: u1 → 0, u2 → 1, u3 → 2; 10 → 0, 20 → 1, 30 → 2; 3 is the unknown code.
    np.testing.assert_array_equal(data.categorical[:, 0], [2, 0, 1, 0, 2, 0])
    np.testing.assert_array_equal(data.categorical[:, 1], [0, 2, 1, 0, 0, 2])
    assert data.categorical.dtype == np.int64
    assert data.schema.cardinalities == (4, 4)  # three values and the unknown code
    assert data.encoder.unknown_code("user") == data.encoder.unknown_code("item") == 3
    assert list(data.meta["categories"]["user"]) == ["u1", "u2", "u3"]
    assert list(data.meta["categories"]["item"]) == [10, 20, 30]


def test_dense_only_and_categorical_only():
    df = _frame()
    dense_only = MultiTaskData.from_frame(df, dense=["price"], tasks={"click": "binary"})
    assert dense_only.categorical is None and dense_only.schema.cardinalities == ()
    assert dense_only.groups is None and dense_only.truth is None
    cat_only = MultiTaskData.from_frame(df, categorical=["user"], tasks={"stay": "regression"})
    assert cat_only.dense is None and cat_only.schema.cardinalities == (4,)


def test_masked_task_with_01_mask_column():
    df = _frame()
    data = MultiTaskData.from_frame(
        df, dense=["price"], tasks={"buy": {"kind": "binary", "mask": "click"}}
    )
    assert data.masks["buy"].dtype == bool
    assert data.masks["buy"].sum() == 4


# ---------------------------------------------------------------- errors


def test_length_mismatch_in_constructor():
    with pytest.raises(ValueError, match=r"length mismatch.*'y'.*3 labels.*5 rows"):
        MultiTaskData(
            dense=np.zeros((5, 2)),
            labels={"y": [0.0, 1.0, 0.0]},
            tasks={"y": "binary"},
            dense_names=["a", "b"],
        )


def test_length_mismatch_between_feature_blocks():
    with pytest.raises(ValueError, match="length mismatch"):
        MultiTaskData(
            dense=np.zeros((5, 1)),
            categorical=np.zeros((4, 1), dtype=int),
            labels={"y": np.zeros(5)},
            tasks={"y": "regression"},
            dense_names=["a"],
            categorical_names=["c"],
        )


def test_nan_in_dense_feature():
    df = _frame()
    df.loc[[1, 3], "age"] = np.nan
    with pytest.raises(ValueError, match=re.escape("dense column 'age' has 2 NaN or inf")):
        _build(df)


def test_inf_in_dense_feature():
    df = _frame()
    df.loc[0, "price"] = np.inf
    with pytest.raises(ValueError, match=r"dense column 'price' has 1 NaN or inf"):
        _build(df)


def test_nan_label():
    df = _frame()
    df.loc[[0, 2, 5], "stay"] = np.nan
    with pytest.raises(ValueError, match=r"task 'stay' has 3 NaN"):
        _build(df)


def test_nan_label_inside_mask():
    df = _frame()
    df.loc[0, "buy"] = np.nan  # row 0 is clicked, so inside the mask
    with pytest.raises(ValueError, match=r"task 'buy' has 1 NaN.*inside its mask"):
        _build(df)


def test_non_01_binary_label():
    df = _frame()
    df.loc[2, "click"] = 2
    with pytest.raises(ValueError, match=r"binary task 'click' must have labels 0/1.*2\.0"):
        _build(df)


def test_unknown_task_kind():
    with pytest.raises(ValueError, match=r"task 'stay' has unknown kind 'ordinal'"):
        _build(tasks={"click": "binary", "stay": "ordinal"})


def test_unknown_task_kind_in_dict():
    with pytest.raises(ValueError, match="unknown kind 'multiclass'"):
        _build(tasks={"buy": {"kind": "multiclass", "mask": "click"}})


def test_label_listed_as_feature_is_a_leak():
    with pytest.raises(ValueError, match=r"\['click'\].*label leak"):
        _build(dense=["price", "click"])
    with pytest.raises(ValueError, match="label leak"):
        _build(categorical=["user", "stay"])


def test_missing_column():
    with pytest.raises(ValueError, match=r"\['height'\] not found"):
        _build(dense=["price", "height"])
    with pytest.raises(ValueError, match=r"\['seen'\] not found"):
        _build(tasks={"buy": {"kind": "binary", "mask": "seen"}})
    with pytest.raises(ValueError, match="not found"):
        _build(group="visitor")


def test_missing_categorical_values_take_the_unknown_code():
    df = _frame()
    df.loc[[0, 4], "user"] = None
    df["item"] = df["item"].astype(np.float64)  # integer ids read as floats because of NaN
    df.loc[1, "item"] = np.nan
    data = _build(df)
    # Rows 0 and 4 held the only u3: the vocabulary is u1, u2 and code 2 is unknown.
    assert list(data.meta["categories"]["user"]) == ["u1", "u2"]
    assert list(data.meta["categories"]["item"]) == [10, 20, 30]  # still integer ids
    assert data.schema.cardinalities == (3, 4)
    np.testing.assert_array_equal(data.categorical[:, 0], [2, 0, 1, 0, 2, 0])
    np.testing.assert_array_equal(data.categorical[:, 1], [0, 3, 1, 0, 0, 2])
    assert data.encoder.unknown_counts(df) == {"user": 2, "item": 1}


def test_truth_listed_as_feature():
    with pytest.raises(ValueError, match=r"truth column\(s\) \['p_true'\].*features"):
        _build(dense=["price", "p_true"])


def test_non_numeric_dense_column():
    with pytest.raises(ValueError, match="dense"):
        _build(dense=["price", "user"], categorical=["item"])


def test_non_numeric_dense_column_is_named_with_a_value():
    with pytest.raises(ValueError, match=r"dense column 'user' holds text such as 'u3'"):
        _build(dense=["price", "user"], categorical=["item"])


def test_empty_frame_is_refused():
    with pytest.raises(ValueError, match="df has no rows"):
        _build(_frame().iloc[:0])
    with pytest.raises(ValueError, match="0 rows"):
        MultiTaskData(
            dense=np.zeros((0, 1)),
            labels={"y": np.zeros(0)},
            tasks={"y": "binary"},
            dense_names=["x"],
        )


def test_string_labels_are_reported_as_non_numeric():
    df = _frame()
    df["click"] = np.where(df["click"] == 1, "yes", "no")
    with pytest.raises(
        ValueError,
        match=r"label column 'click' has non-numeric values such as "
        r"'(yes|no)'.*0/1",
    ):
        _build(df, tasks={"click": "binary"})
    with pytest.raises(ValueError, match=r"task 'y' has non-numeric labels such as 'yes'"):
        MultiTaskData(
            dense=np.zeros((2, 1)),
            labels={"y": np.array(["yes", "no"])},
            tasks={"y": "binary"},
            dense_names=["x"],
        )


def test_anything_outside_a_mask_is_ignored():
    df = _frame()
    df["buy"] = df["buy"].astype(object).where(df["click"] == 1, "n/a")  # not clicked: "n/a"
    data = _build(df)
    np.testing.assert_array_equal(data.labels["buy"][~data.masks["buy"]], 0.0)


def test_nan_labels_outside_mask_are_allowed_for_regression():
    df = _frame()
    df["stay"] = df["stay"].where(df["click"] == 1)  # NaN where not clicked
    data = _build(df, tasks={"stay": {"kind": "regression", "mask": "click"}})
    assert set(data.masks) == {"stay"}
    np.testing.assert_array_equal(data.labels["stay"][~data.masks["stay"]], 0.0)


def test_missing_group_ids_are_rejected():
    df = _frame()
    df.loc[[1, 4], "shopper"] = None
    with pytest.raises(ValueError, match="groups has 2 missing values"):
        _build(df)
