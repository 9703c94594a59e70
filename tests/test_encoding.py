"""FrameEncoder and MultiTaskData.from_frame(like=...): an encoding fitted once on the training
rows and reused on any later frame — codes, the unknown code, min_count, hashing,
standardisation, the trip through JSON, and the errors at the boundary."""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mtlbook.data import MultiTaskData
from mtlbook.data.encoding import ENCODER_FORMAT, FrameEncoder

TASKS = {"click": "binary", "buy": {"kind": "binary", "mask": "click"}}
SPEC: dict[str, Any] = {
    "dense": ["price", "age"],
    "categorical": ["shop", "item"],
    "tasks": TASKS,
    "group": "user",
}


def _train() -> pd.DataFrame:
    """Text shops, integer item ids, a masked task and group ids."""
    return pd.DataFrame(
        {
            "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "age": [20.0, 30.0, 40.0, 50.0, 60.0, 70.0],
            "shop": ["b", "a", "c", "a", "b", "a"],
            "item": [30, 10, 20, 10, 30, 10],
            "click": [1, 0, 1, 1, 0, 1],
            "buy": [1.0, np.nan, 0.0, 1.0, np.nan, 0.0],
            "user": ["x", "y", "x", "z", "y", "x"],
        }
    )


def _test() -> pd.DataFrame:
    """Seen, unseen ("d", 99) and missing values (None, NaN: the item ids become floats)."""
    return pd.DataFrame(
        {
            "price": [2.5, 0.5, 7.0, 3.0, 1.0],
            "age": [25.0, 35.0, 45.0, 55.0, 65.0],
            "shop": ["a", "d", None, "c", "b"],
            "item": [20.0, 99.0, 10.0, np.nan, 30.0],
            "click": [1, 0, 0, 1, 1],
            "buy": [0.0, np.nan, np.nan, 1.0, 0.0],
            "user": ["y", "x", "w", "x", "z"],
        }
    )


@pytest.fixture
def train() -> MultiTaskData:
    return MultiTaskData.from_frame(_train(), **SPEC)


# ---------------------------------------------------------------------- codes
def test_seen_values_keep_their_codes_and_the_rest_is_unknown(train):
    # Vocabularies a, b, c and 10, 20, 30 (sorted); code 3 is unknown in both columns.
    assert train.schema.cardinalities == (4, 4)
    assert train.categorical.tolist() == [[1, 2], [0, 0], [2, 1], [0, 0], [1, 2], [0, 0]]
    test = MultiTaskData.from_frame(_test(), like=train)
    assert test.categorical.tolist() == [[0, 1], [3, 3], [3, 0], [2, 3], [1, 2]]
    assert test.schema == train.schema
    assert test.encoder is train.encoder and test.schema.encoder is train.encoder
    assert train.encoder.unknown_code("shop") == train.encoder.unknown_code("item") == 3
    assert train.encoder.unknown_counts(_test()) == {"shop": 2, "item": 2}
    assert list(test.meta["categories"]["shop"]) == ["a", "b", "c"]


def test_encode_is_from_frame_like(train):
    a = train.encode(_test())
    b = MultiTaskData.from_frame(_test(), like=train)
    np.testing.assert_array_equal(a.categorical, b.categorical)
    np.testing.assert_array_equal(a.dense, b.dense)
    np.testing.assert_array_equal(a.labels["buy"], b.labels["buy"])
    np.testing.assert_array_equal(a.masks["buy"], b.masks["buy"])
    assert len(a.groups) == 5 and a.schema == train.schema


def test_like_takes_an_encoder_or_anything_with_one(train):
    for like in (train, train.encoder, SimpleNamespace(encoder=train.encoder)):
        data = MultiTaskData.from_frame(_test().assign(p=0.5), like=like, truth=["p"])
        assert data.categorical[:, 0].tolist() == [0, 3, 3, 2, 1]
        assert list(data.truth.columns) == ["p"]


def test_numeric_ids_read_as_floats_from_a_csv_match_the_integer_vocabulary(train):
    csv = "price,age,shop,item,click,buy,user\n1,20,a,10,1,1,x\n2,30,b,,0,,y\n3,40,c,30,1,0,z\n"
    frame = pd.read_csv(io.StringIO(csv))
    assert frame["item"].dtype == np.float64  # NaN made the ids floats
    data = train.encode(frame)
    assert data.categorical[:, 1].tolist() == [0, 3, 2]
    # Not whole: never equal to an integer id.
    assert train.encode(_test().assign(item=10.5)).categorical[:, 1].tolist() == [3] * 5
    # Ids read as floats in training are integer ids in the vocabulary.
    fitted = MultiTaskData.from_frame(frame, **SPEC)
    assert fitted.encoder.vocabularies["item"] == [10, 30]
    assert all(type(v) is int for v in fitted.encoder.vocabularies["item"])
    assert fitted.encode(_train()).categorical[:, 1].tolist() == [1, 0, 2, 0, 1, 0]


def test_features_need_no_labels(train):
    frame = _test()[["price", "age", "shop", "item"]]
    dense, categorical = train.encoder.features(frame)
    assert dense.dtype == np.float32 and dense.shape == (5, 2)
    assert categorical.dtype == np.int64 and categorical.tolist()[1] == [3, 3]
    assert train.encoder.feature_columns() == ["price", "age", "shop", "item"]
    assert train.encoder.label_columns() == ["click", "buy", "user"]
    # Fitting never looks at the labels either.
    encoder = FrameEncoder(**SPEC).fit(_train()[["price", "age", "shop", "item"]])
    assert encoder.cardinalities == (4, 4) and encoder.schema == train.schema
    assert encoder.describe()["codes"].tolist()[2:] == [4, 4]
    with pytest.raises(KeyError, match="'price' is not a categorical column"):
        encoder.unknown_code("price")


def test_missing_values_in_training_train_the_unknown_code():
    frame = _train()
    frame.loc[2, "shop"] = None
    data = MultiTaskData.from_frame(frame, **SPEC)
    assert data.encoder.vocabularies["shop"] == ["a", "b"]
    assert data.categorical[:, 0].tolist() == [1, 0, 2, 0, 1, 0]
    assert data.schema.cardinalities == (3, 4)


# ---------------------------------------------------------------------- min_count
def test_min_count_codes_rare_values_as_unknown():
    data = MultiTaskData.from_frame(_train(), **SPEC, min_count=2)
    # a (3 rows) and b (2) stay; c (1) is rare: it is unknown, so row 2 trains that code.
    assert data.encoder.vocabularies == {"shop": ["a", "b"], "item": [10, 30]}
    assert data.schema.cardinalities == (3, 3)
    assert data.categorical.tolist() == [[1, 1], [0, 0], [2, 2], [0, 0], [1, 1], [0, 0]]
    test = data.encode(_test())
    assert test.categorical[:, 0].tolist() == [0, 2, 2, 2, 1]  # c is unknown later too
    three = MultiTaskData.from_frame(_train(), **SPEC, min_count=3)
    assert three.encoder.vocabularies == {"shop": ["a"], "item": [10]}


# ---------------------------------------------------------------------- hashing
def test_hash_buckets_for_every_column_are_deterministic():
    a = MultiTaskData.from_frame(_train(), **SPEC, hash_buckets=8)
    assert a.schema.cardinalities == (9, 9)  # 8 buckets and the missing code
    assert a.encoder.vocabularies == {}
    assert a.categorical.max() < 8
    # Another encoder fitted on other rows hashes each value to the same bucket.
    b = MultiTaskData.from_frame(_test().dropna(), **SPEC, hash_buckets=8)
    first, again = a.encode(_test()), b.encode(_test())
    np.testing.assert_array_equal(first.categorical, again.categorical)
    # The same value, in any frame, has one bucket: "a" of train row 1 and test row 0.
    assert first.categorical[0, 0] == a.categorical[1, 0]
    assert first.categorical[4, 1] == a.categorical[0, 1]  # 30.0 (float) and 30 (int)
    # Unseen values fall in a bucket; missing ones take the last code, 8.
    assert first.categorical[1].max() < 8
    assert first.categorical[2, 0] == first.categorical[3, 1] == 8


def test_hash_buckets_per_column():
    data = MultiTaskData.from_frame(_train(), **SPEC, hash_buckets={"item": 5})
    assert data.schema.cardinalities == (4, 6)
    assert list(data.encoder.vocabularies) == ["shop"]
    assert data.encoder.unknown_code("item") == 5
    codes = data.encode(_test()).categorical
    assert codes[:, 0].tolist() == [0, 3, 3, 2, 1]  # shop keeps its vocabulary
    assert codes[3, 1] == 5 and (codes[[0, 1, 2, 4], 1] < 5).all()
    assert data.encoder.describe()["encoding"].tolist() == [
        "as is",
        "as is",
        "vocabulary (text)",
        "hash (5 buckets)",
    ]


# ---------------------------------------------------------------------- standardize
def test_standardize_with_the_training_statistics():
    frame = _train()
    data = MultiTaskData.from_frame(frame, **SPEC, standardize=True)
    for j, col in enumerate(SPEC["dense"]):
        x = frame[col].to_numpy()
        np.testing.assert_allclose(data.dense[:, j], (x - x.mean()) / x.std(), rtol=1e-6)
    test = data.encode(_test())
    x, later = frame["price"].to_numpy(), _test()["price"].to_numpy()
    np.testing.assert_allclose(test.dense[:, 0], (later - x.mean()) / x.std(), rtol=1e-6)


def test_standardize_some_columns_and_a_constant_one():
    frame = _train().assign(age=5.0)  # a constant column: std 0 is taken as 1
    data = MultiTaskData.from_frame(frame, **SPEC, standardize=["age"])
    np.testing.assert_array_equal(data.dense[:, 0], frame["price"])  # not rescaled
    np.testing.assert_array_equal(data.dense[:, 1], 0.0)
    assert data.encoder.dense_stats == {"age": (5.0, 1.0)}
    np.testing.assert_array_equal(data.encode(_test()).dense[:, 1], _test()["age"] - 5.0)


# ---------------------------------------------------------------------- storage
def _through_json(encoder: FrameEncoder) -> FrameEncoder:
    return FrameEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))


def test_to_dict_from_dict_encodes_identically():
    frame = _train().assign(score=[0.5, 1.5, 0.5, 2.25, 1.5, 0.5])  # a float vocabulary
    encoder = FrameEncoder(
        dense=["price", "age"],
        categorical=["shop", "item", "score", "user"],
        tasks=TASKS,
        hash_buckets={"user": 7},
        standardize=["age"],
        min_count=1,
    ).fit(frame)
    back = _through_json(encoder)
    assert back == encoder and back.cardinalities == encoder.cardinalities
    assert back.vocabularies["score"] == [0.5, 1.5, 2.25]
    later = _test().assign(score=[1.5, 9.0, np.nan, 2.25, 0.5])
    for a, b in zip(encoder.features(later), back.features(later), strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.features(later)[1][:, 2].tolist() == [1, 3, 3, 2, 0]
    data, again = encoder.transform(later), back.transform(later)
    assert data.schema == again.schema
    np.testing.assert_array_equal(data.categorical, again.categorical)


def test_from_dict_refuses_another_format_and_missing_entries(train):
    state = train.encoder.to_dict()
    with pytest.raises(ValueError, match=rf"format 99; this mtlbook reads format {ENCODER_FORMAT}"):
        FrameEncoder.from_dict({**state, "format": 99})
    with pytest.raises(ValueError, match="format None"):
        FrameEncoder.from_dict({k: v for k, v in state.items() if k != "format"})
    with pytest.raises(ValueError, match="lack the entry 'kinds'"):
        FrameEncoder.from_dict({k: v for k, v in state.items() if k != "kinds"})
    with pytest.raises(ValueError, match=r"lack the vocabulary of column\(s\) \['item'\]"):
        FrameEncoder.from_dict({**state, "vocabularies": {"shop": ["a"]}})
    with pytest.raises(ValueError, match=r"must be a mapping .*got list"):
        FrameEncoder.from_dict([state])


# ---------------------------------------------------------------------- later frames
def test_a_feature_column_missing_in_a_later_frame_is_named(train):
    with pytest.raises(ValueError, match=r"\['item'\] not found"):
        train.encode(_test().drop(columns="item"))
    with pytest.raises(ValueError, match=r"\['item'\] not found in the frame"):
        train.encoder.features(_test().drop(columns="item"))
    with pytest.raises(ValueError, match=r"\['click'.* not found"):  # labels: only to transform
        train.encode(_test().drop(columns="click"))


def test_a_dense_column_that_became_text_is_named(train):
    with pytest.raises(ValueError, match=r"dense column 'age' holds text such as 'old'"):
        train.encode(_test().assign(age=["old", "1", "2", "3", "4"]))


def test_a_categorical_column_whose_type_changed_is_named(train):
    with pytest.raises(
        ValueError, match=r"categorical column 'shop' held text .* holds numbers \(int64\)"
    ):
        train.encode(_test().assign(shop=[1, 2, 3, 4, 5]))
    with pytest.raises(
        ValueError, match=r"categorical column 'item' held numbers .* holds text such as 'x'"
    ):
        train.encode(_test().assign(item=["x", "10", "20", "30", "y"]))


def test_errors_of_from_frame_like(train):
    with pytest.raises(ValueError, match=re.escape("do not also give ['dense', 'tasks']")):
        MultiTaskData.from_frame(_test(), like=train, dense=["price"], tasks=TASKS)
    with pytest.raises(ValueError, match=re.escape("do not also give ['min_count']")):
        MultiTaskData.from_frame(_test(), like=train, min_count=2)
    with pytest.raises(ValueError, match=r"like must be a data set .* got DataFrame"):
        MultiTaskData.from_frame(_test(), like=_train())
    with pytest.raises(ValueError, match="got SimpleNamespace without an encoder"):
        MultiTaskData.from_frame(_test(), like=SimpleNamespace(encoder="not one"))
    with pytest.raises(ValueError, match="from_frame needs tasks="):
        MultiTaskData.from_frame(_train(), dense=["price"])


def test_an_unfitted_encoder_says_so():
    encoder = FrameEncoder(dense=["price"], categorical=["shop"], tasks={"click": "binary"})
    for use in (
        lambda: encoder.features(_train()),
        lambda: encoder.transform(_train()),
        lambda: encoder.cardinalities,
        lambda: encoder.to_dict(),
        lambda: MultiTaskData.from_frame(_train(), like=encoder),
    ):
        with pytest.raises(ValueError, match=r"not fitted yet; call encoder.fit\(train_frame\)"):
            use()


# ---------------------------------------------------------------------- the spec
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"tasks": {"click": "ordinal"}}, "task 'click' has unknown kind 'ordinal'"),
        ({"tasks": {"buy": {"kind": "rank", "mask": "click"}}}, "unknown kind 'rank'"),
        ({"dense": ["price", "click"]}, r"\['click'\] are also listed as features.*label leak"),
        ({"categorical": ["shop", "buy"]}, "label leak"),
        ({"min_count": 0}, "min_count must be an integer >= 1, got 0"),
        ({"min_count": 2.5}, "min_count must be an integer >= 1, got 2.5"),
        ({"hash_buckets": 0}, "hash_buckets of column 'shop' must be an integer >= 1, got 0"),
        ({"hash_buckets": {"price": 4}}, r"hash_buckets names column\(s\) \['price'\]"),
        ({"hash_buckets": {"item": True}}, "hash_buckets of column 'item' .* got True"),
        ({"standardize": ["shop"]}, r"standardize names column\(s\) \['shop'\] that are not"),
        ({"standardize": "price"}, "standardize must be a list of column names"),
        ({"dense": [], "categorical": []}, "needs at least one feature"),
        ({"categorical": ["shop", "shop"]}, r"\['shop'\] are listed more than once"),
    ],
)
def test_a_bad_spec_is_refused(arguments, message):
    spec = {"dense": ["price", "age"], "categorical": ["shop", "item"], "tasks": TASKS, **arguments}
    with pytest.raises(ValueError, match=message):
        FrameEncoder(**spec)
    with pytest.raises(ValueError, match=message):
        MultiTaskData.from_frame(_train(), **spec)


# ---------------------------------------------------------------------- the encoder travels
def test_the_encoder_survives_split_subset_and_select_tasks(train):
    parts = train.split((0.5, 0.5), seed=0)
    derived = [*parts, train.subset([0, 2]), train.select_tasks(["buy"])]
    for data in derived:
        assert data.encoder is train.encoder and data.schema.encoder is train.encoder
    assert derived[-1].schema.task_names == ("buy",)
    assert derived[-1].schema.cardinalities == train.schema.cardinalities


def test_data_not_built_from_a_frame_has_no_encoder():
    data = MultiTaskData(
        dense=np.zeros((3, 1)), labels={"y": [0, 1, 0]}, tasks={"y": "binary"}, dense_names=["x"]
    )
    assert data.encoder is None
    with pytest.raises(ValueError, match="got MultiTaskData without an encoder"):
        MultiTaskData.from_frame(pd.DataFrame({"x": [1.0], "y": [0]}), like=data)
