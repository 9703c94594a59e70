"""ParquetSource: the schema, rows and batches of the in-memory data, the validation of each
row group, bounded shuffling, write_parquet_shards, and a fit on the stream."""

from __future__ import annotations

import doctest
import json
import os
import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import mtlbook as mb
import mtlbook.models.base
import mtlbook.training.loop
import mtlbook.training.streaming
from mtlbook.data import MultiTaskData
from mtlbook.models import SharedBottom
from mtlbook.training.streaming import ParquetSource, write_parquet_shards

TASKS = {"click": "binary", "buy": {"kind": "binary", "mask": "click"}, "stay": "regression"}
SPEC: dict[str, Any] = {
    "dense": ["price", "rid"],
    "categorical": ["user", "item"],
    "tasks": TASKS,
    "group": "shopper",
}


def _frame(n: int = 1_000, seed: int = 0) -> pd.DataFrame:
    """Strings, integers and floats; a masked task whose labels are NaN outside its mask;
    ``rid`` (a dense feature) is the row number, to follow rows through a shuffle."""
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.3).astype(np.int64)
    buy = np.where(click == 1, (rng.random(n) < 0.4).astype(float), np.nan)
    return pd.DataFrame(
        {
            "price": rng.lognormal(size=n),
            "rid": np.arange(n, dtype=np.float64),
            "user": rng.choice([f"u{i}" for i in range(37)], size=n),
            "item": rng.integers(100, 160, size=n),
            "click": click,
            "buy": buy,
            "stay": rng.exponential(size=n),
            "shopper": rng.choice(["a", "b", "c", "d"], size=n),
        }
    )


def _write(df: pd.DataFrame, folder, sizes, row_group_size: int = 97) -> list[str]:
    """Write ``df`` by hand (no mtlbook metadata) as shards of the given sizes."""
    paths, start = [], 0
    for i, size in enumerate(sizes):
        path = os.path.join(folder, f"shard-{i:02d}.parquet")
        part = df.iloc[start : start + size]
        pq.write_table(
            pa.Table.from_pandas(part, preserve_index=False), path, row_group_size=row_group_size
        )
        paths.append(path)
        start += size
    assert start == len(df)
    return paths


def _same_batch(a, b) -> bool:
    def eq(x, y):
        return (x is None and y is None) or (
            x is not None and y is not None and x.dtype == y.dtype and torch.equal(x, y)
        )

    return (
        eq(a.dense, b.dense)
        and eq(a.categorical, b.categorical)
        and a.labels.keys() == b.labels.keys()
        and a.masks.keys() == b.masks.keys()
        and all(eq(a.labels[k], b.labels[k]) for k in a.labels)
        and all(eq(a.masks[k], b.masks[k]) for k in a.masks)
    )


def _same_batches(stream, memory) -> None:
    stream, memory = list(stream), list(memory)
    assert len(stream) == len(memory)
    for i, (a, b) in enumerate(zip(stream, memory, strict=True)):
        assert _same_batch(a, b), f"batch {i} differs"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _frame()


@pytest.fixture(scope="module")
def shards(frame, tmp_path_factory) -> list[str]:
    return _write(frame, tmp_path_factory.mktemp("raw"), [310, 250, 440])


@pytest.fixture(scope="module")
def source(shards) -> ParquetSource:
    return ParquetSource(shards, **SPEC)


@pytest.fixture(scope="module")
def memory(frame) -> MultiTaskData:
    return MultiTaskData.from_frame(frame, **SPEC)


# ---------------------------------------------------------------------- same data
def test_schema_vocabularies_and_rows_match_from_frame(source, memory):
    assert source.schema == memory.schema
    assert len(source) == len(memory) == 1_000
    assert source.n_row_groups == 4 + 3 + 5  # 310, 250 and 440 rows in groups of 97
    for col in SPEC["categorical"]:
        assert source.categories[col].tolist() == memory.meta["categories"][col].tolist()
    back = source.to_data()
    np.testing.assert_array_equal(back.dense, memory.dense)
    np.testing.assert_array_equal(back.categorical, memory.categorical)
    np.testing.assert_array_equal(back.groups, memory.groups)
    for task in memory.task_names:
        np.testing.assert_array_equal(back.labels[task], memory.labels[task])
    assert back.masks.keys() == memory.masks.keys() == {"buy"}
    np.testing.assert_array_equal(back.masks["buy"], memory.masks["buy"])


def test_folder_and_glob_list_shards_in_name_order(shards):
    folder = os.path.dirname(shards[0])
    by_folder = ParquetSource(folder, **SPEC, validate=False)
    by_glob = ParquetSource(os.path.join(folder, "shard-0*.parquet"), **SPEC, validate=False)
    assert [str(p) for p in by_folder.shards] == [str(p) for p in by_glob.shards] == shards
    reordered = ParquetSource(shards[::-1], **SPEC, validate=False)
    first = next(iter(reordered.loader(8, shuffle=False)))
    assert first.dense[:, 1].tolist() == list(range(560, 568))  # the last shard comes first


@pytest.mark.parametrize(
    ("batch_size", "drop_last"), [(64, False), (100, True), (1_000, False), (333, False)]
)
def test_unshuffled_batches_equal_the_in_memory_ones(source, memory, batch_size, drop_last):
    _same_batches(
        source.loader(batch_size, shuffle=False, drop_last=drop_last),
        memory.loader(batch_size, shuffle=False, drop_last=drop_last),
    )


@pytest.mark.parametrize(
    ("batch_size", "buffer_rows", "drop_last"),
    [(64, None, False), (50, 180, True), (128, 1, False)],
)
def test_exact_shuffle_gives_the_in_memory_batches_pass_after_pass(
    source, memory, batch_size, buffer_rows, drop_last
):
    stream = source.loader(
        batch_size,
        shuffle=True,
        seed=7,
        drop_last=drop_last,
        shuffle_mode="exact",
        buffer_rows=buffer_rows,
    )
    loader = memory.loader(batch_size, shuffle=True, seed=7, drop_last=drop_last)
    assert len(stream) == len(loader)
    for _ in range(2):  # each pass draws a new order, the same as in memory
        _same_batches(stream, loader)


def test_exact_state_is_interchangeable_with_the_in_memory_loader(source, memory):
    loader = memory.loader(32, seed=3)
    _ = list(loader)
    stream = source.loader(32, seed=99, shuffle_mode="exact")
    stream.load_state_dict(loader.state_dict())
    _same_batches(stream, loader)
    other = source.loader(32, seed=0)  # buffer mode: another order, refused
    with pytest.raises(ValueError, match="shuffle_mode: state 'exact', loader 'buffer'"):
        other.load_state_dict(loader.state_dict())
    with pytest.raises(ValueError, match="batch_size: state 32, loader 16"):
        source.loader(16, shuffle_mode="exact").load_state_dict(loader.state_dict())


# ---------------------------------------------------------------------- buffer shuffling
def _row_ids(loader) -> list[list[int]]:
    return [batch.dense[:, 1].long().tolist() for batch in loader]


def _flat(ids: list[list[int]]) -> list[int]:
    return [row for batch in ids for row in batch]


def test_buffer_shuffle_visits_every_row_once_in_a_seeded_new_order(source, memory):
    loader = source.loader(64, seed=5, buffer_rows=256)
    first, second = _row_ids(loader), _row_ids(loader)
    for ids in (first, second):
        assert [len(b) for b in ids] == [64] * 15 + [40]
        assert sorted(_flat(ids)) == list(range(1_000))
    assert first != second  # a new order each pass
    assert first == _row_ids(source.loader(64, seed=5, buffer_rows=256))  # fixed by the seed
    assert first != _row_ids(source.loader(64, seed=6, buffer_rows=256))
    flat = np.array(_flat(first))
    assert (np.diff(flat) == 1).mean() < 0.05  # rows really are mixed, not read in order
    # Batches carry the same rows' values as the in-memory data.
    batch = next(iter(source.loader(64, seed=5, buffer_rows=256)))
    rows = batch.dense[:, 1].long().numpy()
    np.testing.assert_array_equal(batch.categorical.numpy(), memory.categorical[rows])
    np.testing.assert_array_equal(batch.labels["buy"].numpy(), memory.labels["buy"][rows])
    np.testing.assert_array_equal(batch.masks["buy"].numpy(), memory.masks["buy"][rows])


def test_buffer_shuffle_drop_last_and_resume(source):
    loader = source.loader(128, seed=1, drop_last=True, buffer_rows=300)
    ids = _row_ids(loader)
    assert len(ids) == len(loader) == 7 and all(len(b) == 128 for b in ids)
    assert len(set(_flat(ids))) == 7 * 128
    state = loader.state_dict()
    expected = _row_ids(loader)
    resumed = source.loader(128, seed=42, drop_last=True, buffer_rows=300)
    resumed.load_state_dict(state)
    assert _row_ids(resumed) == expected
    with pytest.raises(ValueError, match="buffer_rows: state 300, loader 400"):
        source.loader(128, drop_last=True, buffer_rows=400).load_state_dict(state)


def test_rows_held_are_bounded_by_the_buffer(source, monkeypatch):
    held = []
    concat = mtlbook.training.streaming._Block.concat

    def spy(blocks):
        out = concat(blocks)
        held.append(len(out))
        return out

    monkeypatch.setattr(mtlbook.training.streaming._Block, "concat", staticmethod(spy))
    ids = _row_ids(source.loader(16, seed=0, buffer_rows=100))
    assert max(held) < 100 + 97  # a buffer that is not full yet, plus one row group
    # The first batch is drawn before a second shard is read: mixing is local.
    shard_of = [rg.shard for rg in source._row_groups for _ in range(rg.rows)]
    assert len({shard_of[r] for r in ids[0]}) == 1
    held.clear()
    _ = list(source.loader(50, seed=0, shuffle_mode="exact", buffer_rows=180))
    assert max(held) <= 150  # one chunk of whole batches of the permutation


@pytest.mark.parametrize(
    "settings", [{"shuffle": False}, {"shuffle_mode": "exact"}, {"buffer_rows": 200}]
)
def test_shards_of_each_batch_cover_it_once(source, settings):
    whole = list(source.loader(50, seed=2, **settings))
    parts = [list(source.loader(50, seed=2, shard=(rank, 3), **settings)) for rank in range(3)]
    assert all(len(p) == len(whole) for p in parts)
    for b, batch in enumerate(whole):
        pieces = [p[b] for p in parts]
        assert [len(x) for x in pieces] == [
            len(batch) * r // 3 - len(batch) * (r - 1) // 3 for r in range(1, 4)
        ]
        assert torch.equal(torch.cat([x.dense for x in pieces]), batch.dense)
        assert torch.equal(torch.cat([x.masks["buy"] for x in pieces]), batch.masks["buy"])


def test_loader_arguments_are_checked(source):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        source.loader(0)
    with pytest.raises(ValueError, match=r"shuffle_mode must be one of \('buffer', 'exact'\)"):
        source.loader(8, shuffle_mode="global")
    with pytest.raises(ValueError, match="buffer_rows must be at least 2 × batch_size = 512"):
        source.loader(256, buffer_rows=500)
    with pytest.raises(ValueError, match="buffer_rows must be None or a positive integer"):
        source.loader(8, buffer_rows=0)
    with pytest.raises(ValueError, match=r"shard must be None or \(rank, world_size\)"):
        source.loader(8, shard=(2, 2))


# ---------------------------------------------------------------------- validation
def _broken(tmp_path, edit, **spec):
    """Shards of a frame changed by ``edit`` (row 20 of the second shard is row 50)."""
    df = _frame(120, seed=1)
    edit(df)
    paths = _write(df, tmp_path, [30, 90], row_group_size=40)
    return paths, {**SPEC, **spec}


def _set(column, value, row: int = 50):
    def edit(df):
        if isinstance(value, str) and df[column].dtype != object:
            df[column] = df[column].astype(object)
        df.loc[row, column] = value

    return edit


def _nan_bought_click(df):
    df.loc[50, "click"] = 1
    df.loc[50, "buy"] = np.nan


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("price", np.inf), r"dense features contain NaN or inf values: \{'price': 1\}"),
        (_set("price", np.nan), r"dense features contain NaN or inf values: \{'price': 1\}"),
        (
            _set("click", 2),
            r"binary task 'click' must have labels 0/1, found other values such as "
            r"\[2.0\]",
        ),
        (_set("stay", np.nan), "task 'stay' has 1 NaN or inf labels"),
        (_nan_bought_click, "task 'buy' has 1 NaN or inf labels inside its mask"),
        (_set("shopper", None), "groups has 1 missing values"),
    ],
)
def test_bad_rows_are_named_by_shard_and_row(tmp_path, edit, message):
    paths, spec = _broken(tmp_path, edit)
    where = re.escape(f"shard {paths[1]!r}, first at row 20")
    with pytest.raises(ValueError, match=message) as info:
        ParquetSource(paths, **spec)
    assert re.search(where, str(info.value)), str(info.value)


def test_a_mask_must_be_boolean(tmp_path):
    def edit(df):
        df["seen"] = (df["click"] == 1).astype(np.int64)
        df.loc[50, "seen"] = 3

    paths, spec = _broken(
        tmp_path, edit, tasks={**TASKS, "buy": {"kind": "binary", "mask": "seen"}}
    )
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"mask of task 'buy' must be boolean or 0/1; column 'seen' has 3 (shard "
            f"{paths[1]!r}, first at row 20)"
        ),
    ):
        ParquetSource(paths, **spec)


def _holes(df: pd.DataFrame) -> pd.DataFrame:
    """Missing users, and integer item ids read as floats because some are missing."""
    df = df.copy()
    df.loc[[5, 50], "user"] = None
    df["item"] = df["item"].astype(np.float64)
    df.loc[[7, 90], "item"] = np.nan
    return df


def test_missing_values_take_the_unknown_code_as_in_from_frame(tmp_path):
    df = _holes(_frame(120, seed=1))
    paths = _write(df, tmp_path, [30, 90], row_group_size=40)
    source, memory = ParquetSource(paths, **SPEC), MultiTaskData.from_frame(df, **SPEC)
    assert source.schema == memory.schema
    n_users, n_items = (len(memory.meta["categories"][c]) for c in ("user", "item"))
    assert source.schema.cardinalities == (n_users + 1, n_items + 1)
    assert source.unknown_codes == {"user": n_users, "item": n_items}
    assert source.categories["item"].tolist() == memory.meta["categories"]["item"].tolist()
    assert source.categories["item"].dtype == np.int64  # whole floats read as integer ids
    back = source.to_data()
    np.testing.assert_array_equal(back.categorical, memory.categorical)
    assert back.categorical[[5, 50], 0].tolist() == [n_users, n_users]
    assert back.categorical[[7, 90], 1].tolist() == [n_items, n_items]


def test_a_given_vocabulary_codes_a_later_file_as_from_frame_like(tmp_path):
    train = MultiTaskData.from_frame(_holes(_frame(120, seed=1)), **SPEC)
    later = _frame(80, seed=2)
    later.loc[[3, 60], "user"] = "newcomer"
    later.loc[[4, 61], "item"] = 999
    later.loc[9, "user"] = None
    paths = _write(later, tmp_path, [50, 30], row_group_size=20)
    vocab = {col: train.meta["categories"][col] for col in SPEC["categorical"]}
    stream = ParquetSource(paths, **SPEC, categories=vocab)
    encoded = MultiTaskData.from_frame(later, like=train)
    assert stream.schema == encoded.schema == train.schema
    codes = stream.to_data().categorical
    np.testing.assert_array_equal(codes, encoded.categorical)
    unknown = [stream.unknown_codes["user"], stream.unknown_codes["item"]]
    assert codes[[3, 60, 9], 0].tolist() == [unknown[0]] * 3
    assert codes[[4, 61], 1].tolist() == [unknown[1]] * 2


def test_a_column_whose_type_differs_from_its_vocabulary_is_named(shards):
    with pytest.raises(
        ValueError,
        match=r"categorical column 'item' holds numbers \(int64\) in shard .* but its "
        r"vocabulary holds text \(such as '100'\)",
    ):
        ParquetSource(shards, **SPEC, categories={"item": ["100", "101"]})
    with pytest.raises(ValueError, match="categorical column 'user' holds text"):
        ParquetSource(shards, **SPEC, categories={"user": [1, 2, 3]})


def test_given_vocabulary_fixes_codes_and_cardinality(shards, frame):
    vocab = [f"u{i}" for i in range(40)]  # unsorted order, 3 values never seen
    source = ParquetSource(shards, **SPEC, categories={"user": vocab})
    assert source.schema.cardinalities == (41, frame["item"].nunique() + 1)  # + unknown
    codes = source.to_data().categorical[:, 0]
    assert [vocab[c] for c in codes[:50]] == frame["user"].tolist()[:50]


def test_validate_false_defers_the_error_to_the_first_read(tmp_path):
    paths, spec = _broken(tmp_path, _set("price", np.inf))
    source = ParquetSource(paths, **spec, validate=False)
    batches = iter(source.loader(10, shuffle=False))
    for _ in range(3):  # rows 0..29: the first shard is fine
        next(batches)
    with pytest.raises(ValueError, match=re.escape(f"shard {paths[1]!r}, first at row 20")):
        list(batches)


def test_spec_errors(shards, tmp_path):
    with pytest.raises(ValueError, match=r"column\(s\) \['nope'\] not found in shard"):
        ParquetSource(shards, **{**SPEC, "dense": ["price", "nope"]})
    with pytest.raises(
        ValueError,
        match=r"label column\(s\) \['click'\] are also listed as "
        "features",
    ):
        ParquetSource(shards, **{**SPEC, "dense": ["price", "click"]})
    with pytest.raises(ValueError, match="dense columns must be numeric: column 'user'"):
        ParquetSource(shards, **{**SPEC, "dense": ["user"], "categorical": ["item"]})
    with pytest.raises(ValueError, match="tasks is None but no shard carries mtlbook metadata"):
        ParquetSource(shards)
    with pytest.raises(ValueError, match="unknown kind 'ranking'"):
        ParquetSource(shards, **{**SPEC, "tasks": {"click": "ranking"}})
    with pytest.raises(ValueError, match=r"categories given for \['price'\]"):
        ParquetSource(shards, **SPEC, categories={"price": [1.0]})
    with pytest.raises(ValueError, match=r"categories\['user'\] must hold distinct values"):
        ParquetSource(shards, **SPEC, categories={"user": ["u1", "u1"]})
    with pytest.raises(FileNotFoundError, match="no file matches the pattern"):
        ParquetSource(str(tmp_path / "*.parquet"), **SPEC)
    with pytest.raises(FileNotFoundError, match="no such Parquet file or folder"):
        ParquetSource(str(tmp_path / "missing.parquet"), **SPEC)
    with pytest.raises(ValueError, match="is listed twice"):
        ParquetSource([shards[0], shards[0]], **SPEC)
    (tmp_path / "notes.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="is not a readable Parquet file"):
        ParquetSource(str(tmp_path / "notes.parquet"), **SPEC)


# ---------------------------------------------------------------------- writing shards
@pytest.fixture(scope="module")
def funnel() -> MultiTaskData:
    """Unseen users and items (cardinalities above the observed codes) and a masked task."""
    return mb.simulate_funnel(1_500, seed=3, n_users=3_000, n_items=500, with_dwell_time=True)


def test_written_shards_read_back_as_the_same_data(funnel, tmp_path):
    paths = write_parquet_shards(funnel, tmp_path, rows_per_shard=400, row_group_size=150)
    assert [p.name for p in paths] == [f"part-0000{i}.parquet" for i in range(4)]
    assert sorted(os.listdir(tmp_path)) == [p.name for p in paths]  # no temporary file left
    source = ParquetSource(tmp_path)
    assert source.schema == funnel.schema  # cardinalities from the metadata, not the values
    assert source.masks == {"dwell_time": "dwell_time__mask"} and source.group == "group"
    # Row groups of 150, 150, 100 rows in the first three shards, 150, 150 in the last.
    assert len(source) == len(funnel) and source.n_row_groups == 3 * 3 + 2
    back = source.to_data()
    np.testing.assert_array_equal(back.groups, funnel.groups)
    _same_batches(back.loader(100, shuffle=False), funnel.loader(100, shuffle=False))
    _same_batches(
        source.loader(128, seed=2, shuffle_mode="exact", buffer_rows=500),
        funnel.loader(128, seed=2),
    )


def test_written_codes_are_range_checked(funnel, tmp_path):
    write_parquet_shards(funnel, tmp_path, rows_per_shard=1_000)
    path = tmp_path / "part-00001.parquet"
    table = pq.read_table(path)
    users = table.column("user_id").to_numpy().copy()
    users[7] = 3_000  # one past the last user
    at = table.schema.get_field_index("user_id")
    pq.write_table(table.set_column(at, "user_id", pa.array(users)), path)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"categorical column 'user_id' has the value 3000, which is not in its vocabulary "
            f"of 3000 values (1 such rows; shard {str(path)!r}, first at row 7)"
        ),
    ):
        ParquetSource(tmp_path)
    # Codes have no unknown code: a missing one is an error too.
    missing = pa.array(users, mask=np.arange(len(users)) == 9)
    pq.write_table(table.set_column(at, "user_id", missing), path)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"categorical column 'user_id' has 1 missing values (shard {str(path)!r}, first at "
            "row 9) but no unknown code (its shards store 3000 codes)"
        ),
    ):
        ParquetSource(tmp_path)


def test_written_from_frame_keeps_the_original_values(memory, frame, tmp_path):
    write_parquet_shards(memory, tmp_path, rows_per_shard=600)
    table = pq.read_table(tmp_path / "part-00000.parquet")
    assert table.column("user").to_pylist()[:20] == frame["user"].tolist()[:20]
    assert table.column("item").to_pylist()[:20] == frame["item"].tolist()[:20]
    source = ParquetSource(tmp_path)
    assert source.schema == memory.schema
    assert source.categories["user"].tolist() == memory.meta["categories"]["user"].tolist()
    _same_batches(source.loader(90, shuffle=False), memory.loader(90, shuffle=False))


def test_written_unknown_codes_read_back_as_unknown(frame, tmp_path):
    df = _holes(frame)
    data = MultiTaskData.from_frame(df, **SPEC, min_count=20)  # rare users are unknown too
    unknown = data.encoder.unknown_code("user")
    assert (data.categorical[:, 0] == unknown).sum() > 2
    write_parquet_shards(data, tmp_path, rows_per_shard=400, row_group_size=150)
    table = pq.read_table(tmp_path / "part-00000.parquet")
    users = table.column("user").to_pylist()
    assert [u is None for u in users] == (data.categorical[:400, 0] == unknown).tolist()
    source = ParquetSource(tmp_path)
    assert source.schema == data.schema
    assert source.unknown_codes["user"] == unknown
    _same_batches(source.loader(128, shuffle=False), data.loader(128, shuffle=False))


def test_hashed_columns_are_written_as_codes(frame, tmp_path):
    data = MultiTaskData.from_frame(frame, **SPEC, hash_buckets={"user": 16})
    write_parquet_shards(data, tmp_path, rows_per_shard=500)
    source = ParquetSource(tmp_path)
    assert source.schema == data.schema and source.schema.cardinalities[0] == 17
    assert source.unknown_codes["user"] is None  # codes: range-checked, nothing unknown
    assert source.unknown_codes["item"] == data.encoder.unknown_code("item")
    _same_batches(source.loader(250, shuffle=False), data.loader(250, shuffle=False))


def test_a_vocabulary_as_long_as_the_cardinality_has_no_unknown_code(funnel, tmp_path):
    """Data sets whose ``meta["categories"]`` has one value per code (the loaders')."""
    names = funnel.schema.categorical
    vocab = {
        col: [f"v{i}" for i in range(card)]
        for col, card in zip(names, funnel.schema.cardinalities, strict=True)
    }
    data = funnel.subset(np.arange(len(funnel)))
    data.meta = {**funnel.meta, "categories": {names[0]: pd.Index(vocab[names[0]])}}
    write_parquet_shards(data, tmp_path, rows_per_shard=1_000)
    table = pq.read_table(tmp_path / "part-00000.parquet")
    assert table.column(names[0]).to_pylist()[:5] == [
        vocab[names[0]][c] for c in funnel.categorical[:5, 0]
    ]
    source = ParquetSource(tmp_path)
    assert source.schema == funnel.schema
    assert source.unknown_codes[names[0]] is None
    np.testing.assert_array_equal(source.to_data().categorical, funnel.categorical)


def test_a_stored_cardinality_that_does_not_fit_its_vocabulary(memory, tmp_path):
    path = write_parquet_shards(memory, tmp_path, rows_per_shard=1_000)[0]
    table = pq.read_table(path)
    spec = json.loads(table.schema.metadata[b"mtlbook"])
    spec["cardinalities"][0] += 5
    pq.write_table(table.replace_schema_metadata({b"mtlbook": json.dumps(spec)}), path)
    with pytest.raises(
        ValueError, match=r"column 'user' a cardinality of 43 for a vocabulary of 37 values"
    ):
        ParquetSource(tmp_path)


def test_writing_never_overwrites(funnel, tmp_path):
    (tmp_path / "part-00001.parquet").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="already exist; nothing is overwritten"):
        write_parquet_shards(funnel, tmp_path, rows_per_shard=500)
    assert sorted(os.listdir(tmp_path)) == ["part-00001.parquet"]  # nothing else written
    assert (tmp_path / "part-00001.parquet").read_bytes() == b"mine"
    with pytest.raises(ValueError, match="rows_per_shard must be a positive integer, got 0"):
        write_parquet_shards(funnel, tmp_path / "new", rows_per_shard=0)
    with pytest.raises(ValueError, match="data must be a MultiTaskData, got DataFrame"):
        write_parquet_shards(funnel.to_frame(), tmp_path / "new", rows_per_shard=10)


# ---------------------------------------------------------------------- training on a stream
def _accept_sources(monkeypatch) -> None:
    """Until ``fit`` accepts a ParquetSource itself, let it for this test only: ``fit`` and
    ``MultiTaskModel._check_data`` accept one where they check for a MultiTaskData."""
    if hasattr(mtlbook.training.loop, "ParquetSource"):
        return
    either = (MultiTaskData, ParquetSource)
    monkeypatch.setattr(mtlbook.training.loop, "MultiTaskData", either)
    monkeypatch.setattr(mtlbook.models.base, "MultiTaskData", either)


def test_fit_on_the_stream_equals_fit_in_memory(funnel, tmp_path, monkeypatch):
    _accept_sources(monkeypatch)
    train, valid = funnel.split((0.8, 0.2), seed=0)
    write_parquet_shards(train, tmp_path, rows_per_shard=300, row_group_size=100)
    stream = ParquetSource(tmp_path, shuffle_mode="exact", buffer_rows=512)

    def run(data):
        model = SharedBottom(train.schema, bottom_units=(16,), tower_units=(8,), seed=0)
        return mb.fit(
            model, data, valid, epochs=2, batch_size=64, device="cpu", progress=False, seed=4
        )

    in_memory, streamed = run(train), run(stream)
    pd.testing.assert_frame_equal(streamed.history, in_memory.history)
    for (name, a), b in zip(
        streamed.model.state_dict().items(), in_memory.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    # The buffer mode trains too, on another order: same rows, other numbers.
    buffered = run(ParquetSource(tmp_path, buffer_rows=256))
    assert not buffered.history.equals(in_memory.history)
    train_rows = buffered.history[buffered.history["split"] == "train"]
    assert len(train_rows) == len(in_memory.history.query("split == 'train'"))
    assert np.isfinite(train_rows["value"]).all()


def test_docstring_examples_run():
    result = doctest.testmod(
        mtlbook.training.streaming, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 0 and result.failed == 0
