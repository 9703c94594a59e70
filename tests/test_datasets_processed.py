"""Readers of processed files in their published layouts (mtlbook.datasets.read_processed).

The fixtures are tiny seeded CSV files written with the headers exactly as published, typed out
here (not taken from the library), so a wrong constant in the library fails these tests:

* AliExpress: MTReclib's data/preprocess.py writes train.csv / test.csv; torch-rechub ships the
  same header in examples/ranking/data/aliexpress/aliexpress_{train,test}_sample.csv.
* Ali-CCP: torch-rechub's examples/ranking/data/ali-ccp/ali_ccp_*_sample.csv.
* Census-Income: torch-rechub's examples/ranking/data/census-income/census_income_*_sample.csv.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import mtlbook as mb
from mtlbook.data import FrameEncoder
from mtlbook.datasets import PROCESSED_LAYOUTS, layout_spec, read_processed
from mtlbook.datasets._census import CENSUS_COLUMNS
from mtlbook.models import SharedBottom

# The header lines as published (the first line of each sample file).
ALIEXPRESS_LINE = (
    "search_id,categorical_1,categorical_2,categorical_3,categorical_4,categorical_5,"
    "categorical_6,categorical_7,categorical_8,categorical_9,categorical_10,"
    "categorical_11,categorical_12,categorical_13,categorical_14,categorical_15,"
    "categorical_16,numerical_1,numerical_2,numerical_3,numerical_4,numerical_5,"
    "numerical_6,numerical_7,numerical_8,numerical_9,numerical_10,numerical_11,"
    "numerical_12,numerical_13,numerical_14,numerical_15,numerical_16,numerical_17,"
    "numerical_18,numerical_19,numerical_20,numerical_21,numerical_22,numerical_23,"
    "numerical_24,numerical_25,numerical_26,numerical_27,numerical_28,numerical_29,"
    "numerical_30,numerical_31,numerical_32,numerical_33,numerical_34,numerical_35,"
    "numerical_36,numerical_37,numerical_38,numerical_39,numerical_40,numerical_41,"
    "numerical_42,numerical_43,numerical_44,numerical_45,numerical_46,numerical_47,"
    "numerical_48,numerical_49,numerical_50,numerical_51,numerical_52,numerical_53,"
    "numerical_54,numerical_55,numerical_56,numerical_57,numerical_58,numerical_59,"
    "numerical_60,numerical_61,numerical_62,numerical_63,click,conversion"
)
ALI_CCP_LINE = (
    "click,purchase,101,121,122,124,125,126,127,128,129,205,206,207,210,216,508,509,702,"
    "853,301,109_14,110_14,127_14,150_14,D109_14,D110_14,D127_14,D150_14,D508,D509,D702,"
    "D853"
)
CENSUS_HEADER = [
    "age",
    "class of worker",
    "industry code",
    "occupation code",
    "education",
    "wage per hour",
    "enrolled in edu inst last wk",
    "marital status",
    "major industry code",
    "major occupation code",
    "race",
    "hispanic origin",
    "sex",
    "member of a labor union",
    "reason for unemployment",
    "full or part time employment stat",
    "capital gains",
    "capital losses",
    "divdends from stocks",
    "tax filer status",
    "region of previous residence",
    "state of previous residence",
    "detailed household and family stat",
    "detailed household summary in household",
    "migration code-change in msa",
    "migration code-change in reg",
    "migration code-move within reg",
    "live in this house 1 year ago",
    "migration prev res in sunbelt",
    "num persons worked for employer",
    "family members under 18",
    "country of birth father",
    "country of birth mother",
    "country of birth self",
    "citizenship",
    "own business or self employed",
    "fill inc questionnaire for veterans admin",
    "veterans benefits",
    "weeks worked in year",
    "year",
    "income",
]
CENSUS_DENSE = [
    "age",
    "wage per hour",
    "capital gains",
    "capital losses",
    "divdends from stocks",
    "num persons worked for employer",
    "weeks worked in year",
]
CENSUS_REVEALING = [
    "tax filer status",
    "detailed household and family stat",
    "detailed household summary in household",
]

# Per layout: header, dense columns, label columns of the file -> task, group, never features.
CASES = {
    "aliexpress": {
        "header": ALIEXPRESS_LINE.split(","),
        "dense": [f"numerical_{i}" for i in range(1, 64)],
        "labels": {"click": "click", "conversion": "conversion"},
        "group": "search_id",
        "never": ["search_id", "click", "conversion"],
        "n_categorical": 16,
    },
    "ali-ccp": {
        "header": ALI_CCP_LINE.split(","),
        "dense": ["D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853"],
        "labels": {"click": "click", "purchase": "purchase"},
        "group": None,
        "never": ["click", "purchase"],
        "n_categorical": 23,
    },
    "census-income": {
        "header": CENSUS_HEADER,
        "dense": CENSUS_DENSE,
        "labels": {"income": "income", "marital status": "never_married"},
        "group": None,
        "never": ["income", "marital status", *CENSUS_REVEALING],
        "n_categorical": 41 - 7 - 2 - 3,
    },
}
LAYOUTS = list(CASES)


def make_frame(layout: str, n: int, seed: int, high: int = 4) -> pd.DataFrame:
    """``n`` seeded rows in ``layout``: categorical codes in ``0..high-1``, dense values in
    [0, 1] with 4 decimals, two binary labels where the second implies the first."""
    case = CASES[layout]
    rng = np.random.default_rng(seed)
    first, second = list(case["labels"])
    df = pd.DataFrame(index=range(n))
    for col in case["header"]:
        if col in case["dense"]:
            df[col] = rng.random(n).round(4)
        else:
            df[col] = rng.integers(0, high, n)
    df[first] = (np.arange(n) % 3 == 0).astype(int)  # both classes present
    df[second] = df[first] * (np.arange(n) % 2 == 0)
    if case["group"]:
        df[case["group"]] = np.arange(n) // 5 + 1000 * seed  # pages of 5 impressions
    return df


def write(df: pd.DataFrame, path) -> str:
    df.to_csv(path, index=False)
    return str(path)


@pytest.fixture
def files(tmp_path):
    """Per layout: (train frame, train path, test frame, test path); the test file draws its
    categories from a wider range, so it has values the training file never saw."""
    out = {}
    for i, layout in enumerate(LAYOUTS):
        train = make_frame(layout, 60, seed=10 + i)
        test = make_frame(layout, 30, seed=20 + i, high=7)
        out[layout] = (
            train,
            write(train, tmp_path / f"{layout}_train.csv"),
            test,
            write(test, tmp_path / f"{layout}_test.csv"),
        )
    return out


# ---------------------------------------------------------------------- the layouts
def test_published_headers():
    aliexpress = CASES["aliexpress"]["header"]
    assert (aliexpress[0], aliexpress[-1], len(aliexpress)) == ("search_id", "conversion", 82)
    assert aliexpress[1:17] == [f"categorical_{i}" for i in range(1, 17)]
    assert aliexpress[17:80] == [f"numerical_{i}" for i in range(1, 64)]
    ali_ccp = CASES["ali-ccp"]["header"]
    assert (ali_ccp[0], ali_ccp[-1], len(ali_ccp)) == ("click", "D853", 33)
    assert (CENSUS_HEADER[0], CENSUS_HEADER[-1], len(CENSUS_HEADER)) == ("age", "income", 41)
    assert sorted(PROCESSED_LAYOUTS) == sorted(LAYOUTS)
    for layout, case in CASES.items():
        assert PROCESSED_LAYOUTS[layout].header == tuple(case["header"]), layout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_spec(layout):
    case = CASES[layout]
    spec = layout_spec(layout)
    assert set(spec) == {"dense", "categorical", "tasks", "group", "rename"}
    assert spec["dense"] == case["dense"]
    assert len(spec["categorical"]) == case["n_categorical"]
    expected_cat = [c for c in case["header"] if c not in case["dense"] + case["never"]]
    assert spec["categorical"] == expected_cat
    assert spec["tasks"] == dict.fromkeys(case["labels"].values(), "binary")
    assert spec["rename"] == {c: t for c, t in case["labels"].items() if c != t}
    assert spec["group"] == case["group"]
    spec["dense"].append("oops")  # a fresh copy every call
    assert "oops" not in layout_spec(layout)["dense"]


def test_census_raw_names_reach_the_raw_loader_guard():
    """Every processed census column maps onto a column of census-income.names, so the raw
    loader's list of label-revealing columns guards the processed spelling too."""
    layout = PROCESSED_LAYOUTS["census-income"]
    raw = {layout.raw_names.get(c, c) for c in CENSUS_HEADER}
    assert raw == set(CENSUS_COLUMNS) - {"instance weight"}
    assert layout.raw_names["tax filer status"] == "tax filer stat"


def test_unknown_layout_lists_the_layouts(tmp_path):
    with pytest.raises(ValueError, match=r"unknown layout 'aliexpres'.*'ali-ccp'.*'aliexpress'"):
        layout_spec("aliexpres")
    path = write(make_frame("aliexpress", 5, seed=0), tmp_path / "x.csv")
    with pytest.raises(ValueError, match="census-income"):
        read_processed(path, "census")


# ---------------------------------------------------------------------- reading
@pytest.mark.parametrize("layout", LAYOUTS)
def test_train_then_test(files, layout):
    case = CASES[layout]
    train_df, train_path, test_df, test_path = files[layout]
    train = read_processed(train_path, layout)
    test = read_processed(test_path, layout, like=train)

    assert train.task_names == tuple(case["labels"].values())
    assert (train.schema.n_dense, len(train.schema.categorical)) == (
        len(case["dense"]),
        case["n_categorical"],
    )
    assert test.schema == train.schema
    assert test.encoder is train.encoder
    for column, task in case["labels"].items():
        np.testing.assert_array_equal(test.labels[task], test_df[column].to_numpy())
        np.testing.assert_array_equal(train.labels[task], train_df[column].to_numpy())
    np.testing.assert_allclose(test.dense, test_df[case["dense"]].to_numpy(), atol=1e-6)
    if case["group"]:
        np.testing.assert_array_equal(test.groups, test_df[case["group"]].to_numpy())
    else:
        assert test.groups is None
    assert (test.meta["layout"], test.meta["source"]) == (layout, f"{layout}_test.csv")
    assert train.meta["source"] == f"{layout}_train.csv"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_test_categories_use_the_training_vocabulary(files, layout):
    train_df, train_path, test_df, test_path = files[layout]
    train = read_processed(train_path, layout)
    test = read_processed(test_path, layout, like=train)
    n_unseen = 0
    for j, col in enumerate(train.schema.categorical):
        seen = sorted(set(train_df[col]))
        unknown = train.encoder.unknown_code(col)
        assert unknown == len(seen) and train.schema.cardinalities[j] == len(seen) + 1
        expected = [seen.index(v) if v in seen else unknown for v in test_df[col]]
        assert test.categorical[:, j].tolist() == expected, col
        n_unseen += sum(v not in seen for v in test_df[col])
    assert n_unseen > 0  # the fixture does exercise unseen values


def test_columns_in_another_order_are_read_by_name(files, tmp_path):
    train_df, train_path, _, _ = files["census-income"]
    shuffled = train_df[list(reversed(train_df.columns))]
    other = read_processed(write(shuffled, tmp_path / "reversed.csv"), "census-income")
    train = read_processed(train_path, "census-income")
    assert other.schema == train.schema
    np.testing.assert_array_equal(other.categorical, train.categorical)
    np.testing.assert_array_equal(other.dense, train.dense)


def test_parquet_and_compressed_csv(files, tmp_path):
    train_df, train_path, _, _ = files["ali-ccp"]
    train = read_processed(train_path, "ali-ccp")
    train_df.to_parquet(tmp_path / "train.parquet", index=False)
    train_df.to_csv(tmp_path / "train.csv.gz", index=False)
    for name in ("train.parquet", "train.csv.gz"):
        other = read_processed(tmp_path / name, "ali-ccp", max_rows=20)
        assert len(other) == 20
        np.testing.assert_array_equal(other.categorical, train.categorical[:20])


# ---------------------------------------------------------------------- leakage
@pytest.mark.parametrize("layout", LAYOUTS)
def test_no_label_or_revealing_column_is_a_feature(files, layout):
    case = CASES[layout]
    data = read_processed(files[layout][1], layout)
    features = set(data.schema.dense) | set(data.schema.categorical)
    assert not features & set(case["never"])
    assert not features & set(case["labels"].values())
    assert features == set(case["header"]) - set(case["never"])


@pytest.mark.parametrize(
    ("layout", "column"),
    [
        ("census-income", "tax filer status"),
        ("census-income", "marital status"),
        ("census-income", "detailed household summary in household"),
        ("aliexpress", "conversion"),
        ("ali-ccp", "purchase"),
    ],
)
def test_a_layout_with_a_leaky_feature_is_refused(layout, column):
    spec = PROCESSED_LAYOUTS[layout]
    with pytest.raises(ValueError, match="reveal a label"):
        dataclasses.replace(spec, categorical=(*spec.categorical, column))


def test_an_encoder_using_a_revealing_column_is_refused(files):
    train_df, _, _, test_path = files["census-income"]
    frame = train_df.rename(columns={"marital status": "never_married"})
    leaky = FrameEncoder(
        dense=CENSUS_DENSE,
        categorical=["education", "tax filer status"],
        tasks={"income": "binary", "never_married": "binary"},
    ).fit(frame)
    with pytest.raises(ValueError, match="tax filer status"):
        read_processed(test_path, "census-income", like=leaky)


def test_the_group_is_never_a_feature(files):
    train_df, _, _, test_path = files["aliexpress"]
    with_page = FrameEncoder(
        categorical=["categorical_1", "search_id"], tasks={"click": "binary"}
    ).fit(train_df)
    with pytest.raises(ValueError, match="search_id"):
        read_processed(test_path, "aliexpress", like=with_page)


def test_like_from_another_layout_is_refused(files):
    census = read_processed(files["census-income"][1], "census-income")
    with pytest.raises(ValueError, match="'census-income' layout"):
        read_processed(files["ali-ccp"][3], "ali-ccp", like=census)


def test_a_conversion_without_a_click_is_refused(files, tmp_path):
    train_df = files["aliexpress"][0].copy()
    train_df.loc[1, ["click", "conversion"]] = [0, 1]
    path = write(train_df, tmp_path / "swapped.csv")
    with pytest.raises(ValueError, match=r"1 row\(s\) have conversion=1 and click=0"):
        read_processed(path, "aliexpress")


# ---------------------------------------------------------------------- header errors
def test_missing_column(files, tmp_path):
    train_df = files["aliexpress"][0].drop(columns=["numerical_7", "conversion"])
    path = write(train_df, tmp_path / "short.csv")
    with pytest.raises(ValueError) as err:
        read_processed(path, "aliexpress")
    message = str(err.value)
    assert "short.csv" in message and "'aliexpress' layout" in message
    assert "missing column(s) ['numerical_7', 'conversion']" in message
    assert "unexpected" not in message


def test_unexpected_column(files, tmp_path):
    train_df = files["ali-ccp"][0].assign(extra=1)
    path = write(train_df, tmp_path / "long.csv")
    with pytest.raises(
        ValueError, match=r"long\.csv.*'ali-ccp'.*unexpected column\(s\) \['extra'\]"
    ):
        read_processed(path, "ali-ccp")
    train_df.drop(columns="extra").to_csv(tmp_path / "indexed.csv")  # a saved row index
    with pytest.raises(ValueError, match=r"Unnamed: 0.*index=False"):
        read_processed(tmp_path / "indexed.csv", "ali-ccp")


def test_wrong_layout_names_the_right_one(files):
    with pytest.raises(ValueError, match="those of the 'census-income' layout"):
        read_processed(files["census-income"][1], "ali-ccp")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.csv"):
        read_processed(tmp_path / "nothing.csv", "aliexpress")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="header line"):
        read_processed(tmp_path / "empty.csv", "aliexpress")


def test_test_file_with_bad_labels(files, tmp_path):
    test_df = files["census-income"][2].copy()
    test_df.loc[0, "income"] = 2
    path = write(test_df, tmp_path / "bad.csv")
    train = read_processed(files["census-income"][1], "census-income")
    with pytest.raises(ValueError, match="income"):
        read_processed(path, "census-income", like=train)


# ---------------------------------------------------------------------- options
def test_encoding_options(files):
    train_df, train_path, test_df, test_path = files["aliexpress"]
    rare = read_processed(train_path, "aliexpress", min_count=100)  # every value too rare
    assert set(rare.schema.cardinalities) == {1}
    hashed = read_processed(train_path, "aliexpress", hash_buckets=7)
    assert set(hashed.schema.cardinalities) == {8}
    assert read_processed(test_path, "aliexpress", like=hashed).schema == hashed.schema
    scaled = read_processed(train_path, "aliexpress", standardize=True)
    np.testing.assert_allclose(scaled.dense.mean(axis=0), 0, atol=1e-5)
    test = read_processed(test_path, "aliexpress", like=scaled)
    mean, std = train_df["numerical_1"].mean(), train_df["numerical_1"].std(ddof=0)
    np.testing.assert_allclose(test.dense[:, 0], (test_df["numerical_1"] - mean) / std, rtol=1e-5)


def test_option_errors(files):
    train_path = files["aliexpress"][1]
    train = read_processed(train_path, "aliexpress")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['min_cout'\]"):
        read_processed(train_path, "aliexpress", min_cout=2)
    with pytest.raises(ValueError, match=r"do not also give \['min_count'\]"):
        read_processed(train_path, "aliexpress", like=train, min_count=2)
    with pytest.raises(ValueError, match="max_rows"):
        read_processed(train_path, "aliexpress", max_rows=0)
    assert len(read_processed(train_path, "aliexpress", max_rows=12)) == 12


# ---------------------------------------------------------------------- end to end
def test_train_a_model_on_the_aliexpress_layout(files):
    _, train_path, _, test_path = files["aliexpress"]
    train = read_processed(train_path, "aliexpress")
    test = read_processed(test_path, "aliexpress", like=train)
    model = SharedBottom(train.schema, bottom_units=(16,), tower_units=(8,), embedding_dim=4)
    result = mb.fit(model, train, test, epochs=1, progress=False)
    scores = result.model.predict(test)
    assert list(scores.columns) == ["click", "conversion"]
    assert len(scores) == len(test)
    assert ((scores >= 0) & (scores <= 1)).all().all()
