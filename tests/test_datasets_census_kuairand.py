"""Tests of the census-income and kuairand loaders, offline, on small fixtures written in the
published layouts: UCI's census+income+kdd.zip (a zip holding census.tar.gz with
census-income.data / .test, 42 ", "-separated fields a line, a period at the end, '?' for
missing) or the older .gz pair, and Zenodo's KuaiRand-Pure.tar.gz (KuaiRand-Pure/data/*.csv
with header lines)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mtlbook
from mtlbook import datasets
from mtlbook.datasets import _census, _kuairand
from mtlbook.models import ESMM, MMoE

# ------------------------------------------------------------------ census-income fixture
# The first line of the published census-income.data, verbatim.
CENSUS_FIRST_LINE = (
    "73, Not in universe, 0, 0, High school graduate, 0, Not in universe, Widowed, "
    "Not in universe or children, Not in universe, White, All other, Female, Not in universe, "
    "Not in universe, Not in labor force, 0, 0, 0, Nonfiler, Not in universe, Not in universe, "
    "Other Rel 18+ ever marr not in subfamily, Other relative of householder, 1700.09, ?, ?, ?, "
    "Not in universe under 1 year old, ?, 0, Not in universe, United-States, United-States, "
    "United-States, Native- Born in the United States, 0, Not in universe, 2, 0, 95, - 50000."
)
_EXCLUDED_VALUES = {
    "tax filer stat": ("Nonfiler", "Joint both under 65", "Single", "Head of household"),
    "detailed household and family stat": (
        "Householder",
        "Spouse of householder",
        "Child <18 never marr not in subfamily",
    ),
    "detailed household summary in household": (
        "Householder",
        "Spouse of householder",
        "Child under 18 never married",
    ),
}
_MARITAL = ("Never married", "Married-civilian spouse present", "Divorced", "Widowed")
_INCOMES = ("- 50000", "50000+")


def _census_rows(n: int, seed: int) -> list[list[str]]:
    """``n`` rows of the 42 published fields (label without its final period)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row = []
        for col in _census.CENSUS_COLUMNS:
            if col in _census.CENSUS_VOCAB:
                vocab = _census.CENSUS_VOCAB[col]
                value = vocab[rng.integers(len(vocab))]
                if col.startswith("migration") and rng.random() < 0.2:
                    value = "?"
            elif col in _EXCLUDED_VALUES:
                value = _EXCLUDED_VALUES[col][rng.integers(len(_EXCLUDED_VALUES[col]))]
            elif col == "marital stat":
                value = _MARITAL[rng.integers(len(_MARITAL))]
            elif col == "income":
                value = _INCOMES[int(rng.random() < 0.3)]
            elif col == "instance weight":
                value = f"{rng.uniform(100, 5000):.2f}"
            elif col == "age":
                value = str(rng.integers(0, 91))
            elif col == "num persons worked for employer":
                value = str(rng.integers(0, 7))
            elif col == "weeks worked in year":
                value = str(rng.integers(0, 53))
            else:  # the money amounts
                value = str(int(rng.integers(0, 3) * rng.integers(0, 99999)))
            row.append(value)
        rows.append(row)
    return rows


def _census_text(rows: list[list[str]]) -> bytes:
    return "".join(", ".join(r) + ".\n" for r in rows).encode()


@pytest.fixture(scope="module")
def census_raw() -> dict[str, list[list[str]]]:
    first = [v.strip() for v in CENSUS_FIRST_LINE.removesuffix(".").split(",")]
    train = [first, *_census_rows(119, seed=1)]
    train[5][_census.CENSUS_COLUMNS.index("country of birth self")] = "Atlantis"  # unlisted
    train[6][_census.CENSUS_COLUMNS.index("education")] = "Bachelors degree(BA AB BS)"
    train[7][_census.CENSUS_COLUMNS.index("education")] = "Some college but no degree"
    return {"train": train, "test": _census_rows(60, seed=2)}


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _census_zip(raw: dict[str, list[list[str]]]) -> bytes:
    inner = _tar_gz(
        {
            "census-income.data": _census_text(raw["train"]),
            "census-income.names": b"| census-income.names (fixture)\n",
            "census-income.test": _census_text(raw["test"]),
        }
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("census.tar.gz", inner)
    return buf.getvalue()


def _registry_entry(files: dict[str, bytes], src: Path) -> dict:
    entries = {}
    for name, data in files.items():
        (src / name).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        entries[name] = {
            "sha256": sha,
            "size": len(data),
            "sources": [{"kind": "url", "url": (src / name).as_uri()}],
        }
    return {"description": "fixture", "licence": "test", "citation": "test", "files": entries}


@pytest.fixture(scope="module")
def registry(tmp_path_factory, census_raw, kuairand_raw) -> dict:
    src = tmp_path_factory.mktemp("src")
    gz_dir = src / "gz"
    gz_dir.mkdir()
    return {
        "datasets": {
            "census-income": _registry_entry(
                {"census+income+kdd.zip": _census_zip(census_raw)}, src
            ),
            "census-gz": _registry_entry(
                {
                    "census-income.data.gz": gzip.compress(_census_text(census_raw["train"])),
                    "census-income.test.gz": gzip.compress(_census_text(census_raw["test"])),
                },
                gz_dir,
            ),
            "kuairand": _registry_entry(
                {"KuaiRand-Pure.tar.gz": _kuairand_archive(kuairand_raw)}, src
            ),
        }
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _features(data) -> list[str]:
    return [*data.schema.dense, *data.schema.categorical]


def _column(rows: list[list[str]], name: str) -> list[str]:
    return [r[_census.CENSUS_COLUMNS.index(name)] for r in rows]


def test_census_income_marital_from_the_uci_zip(registry, cache, census_raw):
    data = datasets.load("census-income", cache_dir=cache, registry=registry)
    rows = census_raw["train"] + census_raw["test"]
    assert len(data) == 180 and data.task_names == ("income", "never_married")
    np.testing.assert_array_equal(
        data.labels["income"], [v == "50000+" for v in _column(rows, "income")]
    )
    np.testing.assert_array_equal(
        data.labels["never_married"], [v == "Never married" for v in _column(rows, "marital stat")]
    )
    assert list(data.truth["part"]) == ["train"] * 120 + ["test"] * 60
    np.testing.assert_allclose(
        data.truth["instance_weight"], [float(v) for v in _column(rows, "instance weight")]
    )
    # never features: labels, the weight and the marital proxies
    features = _features(data)
    assert not set(features) & datasets.LEAKY_COLUMNS["census-income"]
    for raw in (
        "marital stat",
        "income",
        "instance weight",
        "tax filer stat",
        "detailed household and family stat",
        "detailed household summary in household",
    ):
        assert _census.feature_name(raw) not in features
    assert len(data.schema.categorical) == 29 and len(data.schema.dense) == 7
    assert "education" in features  # a feature when it is not a label
    # the first published line: age 73 → (73 - 35) / 22; '?' migration codes → 0
    assert data.dense[0, 0] == pytest.approx((73 - 35) / 22)
    col = data.schema.categorical.index("migration_code_change_in_msa")
    assert data.categorical[0, col] == 0
    assert (
        data.meta["categories"]["education"][
            data.categorical[0, data.schema.categorical.index("education")]
        ]
        == "High school graduate"
    )
    # an unlisted value is coded 0 and counted
    col = data.schema.categorical.index("country_of_birth_self")
    assert data.categorical[5, col] == 0
    assert data.meta["out_of_vocabulary"] == {"country of birth self": 1}
    assert np.all(np.abs(data.dense) <= 2.5 + 1e-6)  # fixed transforms keep the scale small


def test_census_education_group_parts_and_max_rows(registry, cache, census_raw):
    data = datasets.load(
        "census-income", cache_dir=cache, registry=registry, tasks="education-marital", part="train"
    )
    assert data.task_names == ("college_degree", "never_married") and len(data) == 120
    education = _column(census_raw["train"], "education")
    np.testing.assert_array_equal(
        data.labels["college_degree"], [e in _census.CENSUS_COLLEGE for e in education]
    )
    assert data.labels["college_degree"][6] == 1 and data.labels["college_degree"][7] == 0
    assert "education" not in _features(data) and len(data.schema.categorical) == 28
    test = datasets.load("census-income", cache_dir=cache, registry=registry, part="test")
    assert len(test) == 60 and set(test.truth["part"]) == {"test"}
    full = datasets.load("census-income", cache_dir=cache, registry=registry)
    # fixed vocabularies: the parts are coded alike
    assert test.schema.cardinalities == full.schema.cardinalities
    np.testing.assert_array_equal(test.categorical, full.categorical[120:])
    few = datasets.load("census-income", cache_dir=cache, registry=registry, max_rows=130)
    assert len(few) == 130 and list(few.truth["part"]).count("test") == 10
    np.testing.assert_array_equal(few.categorical, full.categorical[:130])
    assert (
        len(datasets.load("census-income", cache_dir=cache, registry=registry, max_rows=50)) == 50
    )


def test_census_legacy_gz_pair_reads_the_same(registry, cache, monkeypatch):
    zipped = datasets.load("census-income", cache_dir=cache, registry=registry)
    monkeypatch.setitem(datasets._LOADERS, "census-gz", _census.load_census_income)
    plain = datasets.load("census-gz", cache_dir=cache, registry=registry)
    np.testing.assert_array_equal(plain.categorical, zipped.categorical)
    np.testing.assert_array_equal(plain.dense, zipped.dense)
    assert plain.labels["income"].tolist() == zipped.labels["income"].tolist()


@pytest.mark.parametrize(
    "options, match",
    [
        ({"tasks": "income-education"}, "tasks must be one of"),
        ({"part": "dev"}, "part must be one of"),
        ({"max_rows": 0}, "max_rows must be a positive integer"),
        ({"max_rows": 2.5}, "max_rows must be a positive integer"),
        ({"seed": 1}, "bad option"),
    ],
)
def test_census_bad_options(registry, cache, options, match):
    with pytest.raises(ValueError, match=match):
        datasets.load("census-income", cache_dir=cache, registry=registry, **options)


def test_census_malformed_files_are_reported(tmp_path, census_raw):
    short = [*census_raw["test"][0][:-3], census_raw["test"][0][-1]]
    for text, match in [
        (_census_text([short]), "does not have the 42 comma-separated fields"),
        (_census_text([[*census_raw["test"][0], "extra"]]), "does not have the 42"),
        (_census_text([[*census_raw["test"][0][:-1], "50000+ maybe"]]), "unexpected income"),
    ]:
        (tmp_path / "census-income.test.gz").write_bytes(gzip.compress(text))
        with pytest.raises(ValueError, match=match):
            _census.load_census_income(
                {"census-income.test.gz": tmp_path / "census-income.test.gz"}, part="test"
            )
    with pytest.raises(ValueError, match="needs census"):
        _census.load_census_income({"other.csv": tmp_path / "other.csv"})
    bad_zip = tmp_path / "census+income+kdd.zip"
    with zipfile.ZipFile(bad_zip, "w") as zf:
        zf.writestr("census.tar.gz", _tar_gz({"census-income.names": b"|"}))
    with pytest.raises(ValueError, match=r"no member \['census-income.data'\]"):
        _census.load_census_income({bad_zip.name: bad_zip}, part="train")


def test_census_leak_guard(registry, cache, monkeypatch):
    with pytest.raises(ValueError, match="marital_stat"):
        mtlbook.datasets._loaders.check_no_leak(
            ["age", "marital_stat"], datasets.LEAKY_COLUMNS["census-income"], "census-income"
        )
    monkeypatch.setattr(
        _census, "CENSUS_CATEGORICAL", (*_census.CENSUS_CATEGORICAL, "tax filer stat")
    )
    with pytest.raises(ValueError, match="tax_filer_stat"):
        datasets.load("census-income", cache_dir=cache, registry=registry)


def test_census_trains_an_mmoe(registry, cache):
    data = datasets.load("census-income", cache_dir=cache, registry=registry)
    train, valid = data.split((0.8, 0.2), seed=0)
    model = MMoE(train.schema, n_experts=2, expert_units=(8,), tower_units=(4,), seed=0)
    result = mtlbook.fit(model, train, valid, epochs=1, batch_size=64, progress=False, device="cpu")
    assert result.epochs_run == 1 and np.isfinite(result.history["value"]).all()


# ----------------------------------------------------------------------- kuairand fixture
N_USERS, N_VIDEOS = 12, 10
LOG_ROWS = {
    "log_standard_4_08_to_4_21_pure.csv": (150, "2022-04-08", "2022-04-21"),
    "log_standard_4_22_to_5_08_pure.csv": (60, "2022-04-22", "2022-05-08"),
    "log_random_4_22_to_5_08_pure.csv": (50, "2022-04-22", "2022-05-08"),
}
MISSING_USER, MISSING_VIDEO = 999, 888  # in the logs, not in the feature files


def _log_frame(n: int, start: str, end: str, seed: int, random: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = pd.date_range(start, end)
    day = days[rng.integers(len(days), size=n)]
    hour, minute = rng.integers(0, 24, size=n), rng.integers(0, 60, size=n)
    stamp = day + pd.to_timedelta(hour, "h") + pd.to_timedelta(minute, "min")
    click = (rng.random(n) < 0.4).astype(int)
    duration = rng.integers(5_000, 200_000, size=n)
    play = np.where(click == 1, rng.integers(7_000, 300_000, size=n), rng.integers(0, 6_000, n))
    long_view = ((click == 1) & (play >= np.minimum(duration, 18_000))).astype(int)
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(0, N_USERS, size=n) * 7 + 3,
            "video_id": rng.integers(0, N_VIDEOS, size=n) * 11 + 5,
            "date": day.strftime("%Y%m%d").astype(int),
            "hourmin": hour * 100 + minute,
            "time_ms": (stamp.astype("int64") // 1_000_000).astype(np.int64),
            "is_click": click,
            "is_like": (click & (rng.random(n) < 0.1)).astype(int),
            "is_follow": (rng.random(n) < 0.02).astype(int),
            "is_comment": (rng.random(n) < 0.02).astype(int),
            "is_forward": (rng.random(n) < 0.02).astype(int),
            "is_hate": (rng.random(n) < 0.01).astype(int),
            "long_view": long_view,
            "play_time_ms": play,
            "duration_ms": duration,
            "profile_stay_time": rng.integers(0, 2, size=n) * rng.integers(0, 30, size=n),
            "comment_stay_time": rng.integers(0, 2, size=n) * rng.integers(0, 30, size=n),
            "is_profile_enter": (rng.random(n) < 0.05).astype(int),
            "is_rand": int(random),
            "tab": rng.integers(0, 15, size=n),
        }
    )
    assert tuple(frame.columns) == _kuairand.LOG_COLUMNS
    frame.loc[3, "user_id"] = MISSING_USER
    frame.loc[4, "video_id"] = MISSING_VIDEO
    return frame


def _user_frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = N_USERS
    frame = pd.DataFrame(
        {
            "user_id": np.arange(n) * 7 + 3,
            "user_active_degree": rng.choice(
                ["high_active", "full_active", "middle_active", "UNKNOWN"], size=n
            ),
            "is_lowactive_period": rng.integers(0, 2, size=n),
            "is_live_streamer": rng.integers(0, 2, size=n),
            "is_video_author": rng.integers(0, 2, size=n),
            "follow_user_num": rng.integers(0, 600, size=n),
            "follow_user_num_range": rng.choice(["0", "(0,10]", "(10,50]", "500+"], size=n),
            "fans_user_num": rng.integers(0, 2000, size=n),
            "fans_user_num_range": rng.choice(["0", "[1,10)", "[100,1k)", "[1k,5k)"], size=n),
            "friend_user_num": rng.integers(0, 40, size=n),
            "friend_user_num_range": rng.choice(["0", "[1,5)", "[30,60)"], size=n),
            "register_days": rng.integers(15, 3000, size=n),
            "register_days_range": rng.choice(["31-60", "366-730", "730+"], size=n),
            **{
                f"onehot_feat{k}": rng.integers(0, size, size=n)
                for k, size in enumerate(_kuairand._ONEHOT_SIZES)
            },
        }
    )
    frame["onehot_feat3"] = frame["onehot_feat3"].astype(float)
    frame.loc[0, "onehot_feat3"] = np.nan  # an empty cell
    frame.loc[1, "onehot_feat1"] = 7  # outside the published range 0..6
    frame.loc[2, "fans_user_num_range"] = "[10w,inf)"  # not in the published list
    return frame


def _video_frame() -> pd.DataFrame:
    rng = np.random.default_rng(6)
    n = N_VIDEOS
    frame = pd.DataFrame(
        {
            "video_id": np.arange(n) * 11 + 5,
            "author_id": rng.integers(0, 4, size=n) * 1000 + 441,
            "video_type": rng.choice(["NORMAL", "AD"], size=n),
            "upload_dt": rng.choice(["2020-07-08", "2022-03-01"], size=n),
            "upload_type": rng.choice(["ShortImport", "LongImport", "Web"], size=n),
            "visible_status": rng.integers(0, 3, size=n).astype(float),
            "video_duration": rng.integers(5_000, 200_000, size=n).astype(float),
            "server_width": 720,
            "server_height": 1280,
            "music_id": rng.integers(0, 10**9, size=n),
            "music_type": rng.integers(0, 9, size=n),
            "tag": rng.choice(["12,65", "3", "8,1,2"], size=n),
        }
    )
    frame.loc[0, "tag"] = None  # an empty cell
    frame.loc[1, "video_duration"] = np.nan
    return frame


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


@pytest.fixture(scope="module")
def kuairand_raw() -> dict[str, pd.DataFrame]:
    return {
        "log_standard_4_08_to_4_21_pure.csv": _log_frame(150, "2022-04-08", "2022-04-21", 1, False),
        "log_standard_4_22_to_5_08_pure.csv": _log_frame(60, "2022-04-22", "2022-05-08", 2, False),
        "log_random_4_22_to_5_08_pure.csv": _log_frame(50, "2022-04-22", "2022-05-08", 3, True),
        "user_features_pure.csv": _user_frame(),
        "video_features_basic_pure.csv": _video_frame(),
    }


def _kuairand_archive(
    raw: dict[str, pd.DataFrame], *, replace: dict[str, bytes] | None = None
) -> bytes:
    """The archive in the published member order (directories, LICENSE, loader script, the
    logs and side files interleaved as in the Zenodo file)."""
    stats = pd.DataFrame(
        {
            "video_id": [5, 16],
            "counts": [66, 3],
            "show_cnt": [75.2, 1.0],
            "like_cnt": [0.3, 0.0],
            "follow_user_num": [0.0, 0.0],
        }
    )
    members = {
        "KuaiRand-Pure/LICENSE": b"CC BY-SA 4.0\n",
        "KuaiRand-Pure/load_data_pure.py": b"import pandas as pd\n",
        "KuaiRand-Pure/data/log_standard_4_08_to_4_21_pure.csv": _csv(
            raw["log_standard_4_08_to_4_21_pure.csv"]
        ),
        "KuaiRand-Pure/data/log_random_4_22_to_5_08_pure.csv": _csv(
            raw["log_random_4_22_to_5_08_pure.csv"]
        ),
        "KuaiRand-Pure/data/user_features_pure.csv": _csv(raw["user_features_pure.csv"]),
        "KuaiRand-Pure/data/log_standard_4_22_to_5_08_pure.csv": _csv(
            raw["log_standard_4_22_to_5_08_pure.csv"]
        ),
        "KuaiRand-Pure/data/video_features_statistic_pure.csv": _csv(stats),
        "KuaiRand-Pure/data/video_features_basic_pure.csv": _csv(
            raw["video_features_basic_pure.csv"]
        ),
    }
    members.update(replace or {})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for directory in ("KuaiRand-Pure/", "KuaiRand-Pure/data/"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_kuairand_default_load(registry, cache, kuairand_raw):
    data = datasets.load("kuairand", cache_dir=cache, registry=registry)
    first, second = (kuairand_raw[f] for f in list(LOG_ROWS)[:2])
    logs = pd.concat([first, second], ignore_index=True)
    assert len(data) == 210 and data.task_names == ("is_click", "long_view", "is_like")
    for task in data.task_names:
        np.testing.assert_array_equal(data.labels[task], logs[task])
        assert data.meta["positive_rates"][task] == pytest.approx(logs[task].mean())
    assert not data.masks
    np.testing.assert_array_equal(data.groups, logs["user_id"])
    assert list(data.truth["period"]) == ["4_08_to_4_21"] * 150 + ["4_22_to_5_08"] * 60
    assert set(data.truth["exposure"]) == {"standard"}
    np.testing.assert_array_equal(data.truth["time_ms"], logs["time_ms"])
    assert data.meta["long_view_without_click"] == 0
    features = _features(data)
    assert not set(features) & datasets.LEAKY_COLUMNS["kuairand"]
    for never in (
        *_kuairand.KUAIRAND_SIGNALS,
        "play_time_ms",
        "profile_stay_time",
        "comment_stay_time",
        "is_rand",
        "like_cnt",
        "show_cnt",
    ):
        assert never not in features
    assert len(data.schema.categorical) == 37 and data.schema.dense == (
        "duration",
        "follow_user_num",
        "fans_user_num",
        "friend_user_num",
        "register_days",
    )
    cat = pd.DataFrame(data.categorical, columns=data.schema.categorical)
    vocab = data.meta["categories"]
    # context codes
    assert [vocab["tab"][c] for c in cat["tab"]] == logs["tab"].tolist()
    assert [vocab["hour"][c] for c in cat["hour"]] == (logs["hourmin"] // 100).tolist()
    weekday = pd.to_datetime(logs["date"].astype(str)).dt.day_name().str[:3]
    assert [vocab["weekday"][c] for c in cat["weekday"]] == weekday.tolist()
    # ids and joins; unknown users/videos get code 0 everywhere
    assert [vocab["user_id"][c] for c in cat["user_id"][:3]] == logs["user_id"][:3].tolist()
    assert cat.loc[3, "user_id"] == 0 and cat.loc[3, "user_active_degree"] == 0
    assert data.dense[3, 1:].tolist() == [0, 0, 0, 0]
    assert cat.loc[4, "video_id"] == 0 and cat.loc[4, "author_id"] == 0
    assert cat.loc[4, "tag"] == 0
    assert data.meta["missing"]["user_id"] == 2 and data.meta["missing"]["video_id"] == 2
    users = kuairand_raw["user_features_pure.csv"].set_index("user_id")
    videos = kuairand_raw["video_features_basic_pure.csv"].set_index("video_id")
    for i in (0, 1, 2, 10):
        u, v = logs.loc[i, "user_id"], logs.loc[i, "video_id"]
        assert (
            vocab["user_active_degree"][cat.loc[i, "user_active_degree"]]
            == users.loc[u, "user_active_degree"]
        )
        assert vocab["onehot_feat8"][cat.loc[i, "onehot_feat8"]] == users.loc[u, "onehot_feat8"]
        assert int(vocab["author_id"][cat.loc[i, "author_id"]]) == videos.loc[v, "author_id"]
        assert data.dense[i, 0] == pytest.approx(np.log1p(logs.loc[i, "duration_ms"] / 1000) / 5)
        assert data.dense[i, 2] == pytest.approx(np.log1p(users.loc[u, "fans_user_num"]) / 10)
    # empty cells and values outside the published vocabularies → 0
    for user, column in ((3, "onehot_feat3"), (10, "onehot_feat1"), (17, "fans_user_num_range")):
        rows = np.flatnonzero(logs["user_id"].to_numpy() == user)
        assert len(rows) and (cat.loc[rows, column] == 0).all()
    rows = np.flatnonzero(logs["video_id"].to_numpy() == 5)  # its tag cell is empty
    assert (cat.loc[rows, "tag"] == 0).all()
    assert "12" in vocab["tag"] and "65" not in vocab["tag"]  # the first tag of a list


def test_kuairand_periods_exposures_and_max_rows(registry, cache, kuairand_raw):
    def load(**options):
        return datasets.load("kuairand", cache_dir=cache, registry=registry, **options)

    full = load()
    early = load(period="4_08_to_4_21")
    assert len(early) == 150 and early.schema.cardinalities == full.schema.cardinalities
    np.testing.assert_array_equal(early.categorical, full.categorical[:150])  # stable codes
    assert len(load(period="4_22_to_5_08")) == 60
    random = load(exposure="random", tasks=["is_click", "is_hate"])
    assert len(random) == 50 and set(random.truth["exposure"]) == {"random"}
    np.testing.assert_array_equal(
        random.labels["is_hate"], kuairand_raw["log_random_4_22_to_5_08_pure.csv"]["is_hate"]
    )
    both = load(exposure="both")
    assert len(both) == 260 and list(both.truth["exposure"]).count("random") == 50
    assert both.meta["rows_per_log"] == {f: n for f, (n, _, _) in LOG_ROWS.items()}
    few = load(max_rows=170)
    assert len(few) == 170 and list(few.truth["period"]).count("4_22_to_5_08") == 20
    np.testing.assert_array_equal(few.categorical, full.categorical[:170])
    assert len(load(max_rows=100, exposure="random")) == 50
    assert len(load(max_rows=200, exposure="both")) == 200
    one = load(tasks="is_profile_enter", max_rows=40)
    assert one.task_names == ("is_profile_enter",) and len(one) == 40
    assert "long_view_without_click" not in one.meta


@pytest.mark.parametrize(
    "options, match",
    [
        ({"exposure": "random", "period": "4_08_to_4_21"}, "random-exposure log covers"),
        ({"period": "may"}, "period must be one of"),
        ({"exposure": "all"}, "exposure must be one of"),
        ({"tasks": ["is_click", "play_time_ms"]}, "not KuaiRand feedback signals"),
        ({"tasks": ["is_click", "is_click"]}, "distinct"),
        ({"tasks": []}, "at least one"),
        ({"tasks": 5}, "a sequence of names"),
        ({"max_rows": -5}, "max_rows must be a positive integer"),
        ({"user_features": True}, "bad option"),
    ],
)
def test_kuairand_bad_options(registry, cache, options, match):
    with pytest.raises(ValueError, match=match):
        datasets.load("kuairand", cache_dir=cache, registry=registry, **options)


def test_kuairand_malformed_archives(tmp_path, kuairand_raw):
    name = "KuaiRand-Pure/data/log_standard_4_22_to_5_08_pure.csv"
    good = _csv(kuairand_raw["log_standard_4_22_to_5_08_pure.csv"])
    header, body = good.split(b"\n", 1)
    bad_signal = kuairand_raw["log_standard_4_22_to_5_08_pure.csv"].copy()
    bad_signal.loc[7, "is_like"] = 2
    cases = [
        (
            {name: header.replace(b"is_like,is_follow", b"is_follow,is_like") + b"\n" + body},
            "is not the published KuaiRand log header",
        ),
        ({name: _csv(bad_signal)}, "data line 8 has is_like=2; a feedback signal"),
        (
            {"KuaiRand-Pure/data/user_features_pure.csv": b"user_id,user_active_degree\n1,x\n"},
            "missing columns",
        ),
    ]
    archive = tmp_path / _kuairand.ARCHIVE
    for replace, match in cases:
        archive.write_bytes(_kuairand_archive(kuairand_raw, replace=replace))
        with pytest.raises(ValueError, match=match):
            _kuairand.load_kuairand({archive.name: archive})
    # a header and no data line is an empty log, not an error
    archive.write_bytes(_kuairand_archive(kuairand_raw, replace={name: header + b"\n"}))
    assert len(_kuairand.load_kuairand({archive.name: archive})) == 150
    with pytest.raises(ValueError, match="have no data lines"):
        _kuairand.load_kuairand({archive.name: archive}, period="4_22_to_5_08")
    with pytest.raises(ValueError, match=r"needs the file KuaiRand-Pure\.tar\.gz"):
        _kuairand.load_kuairand({"x.csv": tmp_path / "x.csv"})


def test_kuairand_leak_guard(registry, cache, monkeypatch):
    forbidden = datasets.LEAKY_COLUMNS["kuairand"]
    assert set(_kuairand.KUAIRAND_SIGNALS) <= forbidden
    assert {"play_time_ms", "profile_stay_time", "comment_stay_time", "play_progress"} <= forbidden
    monkeypatch.setattr(_kuairand, "_USER_DENSE", {**_kuairand._USER_DENSE, "is_like": 1.0})
    with pytest.raises(ValueError, match="is_like"):
        datasets.load("kuairand", cache_dir=cache, registry=registry)


def test_kuairand_trains_mmoe_and_esmm(registry, cache):
    data = datasets.load("kuairand", cache_dir=cache, registry=registry)
    train, valid = data.split((0.8, 0.2), seed=0)
    models = [
        MMoE(train.schema, n_experts=2, expert_units=(8,), tower_units=(4,), seed=0),
        ESMM(
            train.select_tasks(["is_click", "long_view"]).schema,
            ctr_task="is_click",
            ctcvr_task="long_view",
            tower_units=(8,),
            seed=0,
        ),
    ]
    for model in models:
        tasks = list(model.task_names)
        result = mtlbook.fit(
            model,
            train.select_tasks(tasks),
            valid.select_tasks(tasks),
            epochs=1,
            batch_size=64,
            progress=False,
            device="cpu",
        )
        assert result.epochs_run == 1 and np.isfinite(result.history["value"]).all()


def test_shipped_registry_entries():
    entries = datasets._registry.read_registry()
    census, kuai = entries["census-income"], entries["kuairand"]
    for entry in (census, kuai):
        assert entry.licence and entry.citation and entry.construction and entry.homepage
        assert entry.extra.get("schema_source")
        assert entry.name in datasets.LEAKY_COLUMNS
    (zipped,) = census.files
    assert zipped.name == "census+income+kdd.zip" and zipped.unverified and not zipped.has_hash
    assert [s.kind for s in zipped.sources] == ["url", "manual"]
    (archive,) = kuai.files
    assert archive.name == _kuairand.ARCHIVE and archive.md5 and archive.sha256
    assert archive.size == 47_432_272 and archive.sources[0].url.startswith("https://zenodo.org")


def test_census_without_published_hash_needs_trust(tmp_path, census_raw):
    """As in the shipped registry: UCI publishes no checksum, so the archive is fetched only
    when trusted, and its sha256 is pinned on first use."""
    src = tmp_path / "census+income+kdd.zip"
    src.write_bytes(_census_zip(census_raw))
    registry = {
        "datasets": {
            "census-income": {
                "description": "fixture",
                "licence": "test",
                "citation": "test",
                "files": {
                    src.name: {
                        "unverified": "no published checksum",
                        "sources": [{"kind": "url", "url": src.as_uri()}],
                    }
                },
            }
        }
    }
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DatasetUnavailableError, match="trust_unverified=True"):
        datasets.load("census-income", cache_dir=cache, registry=registry)
    with pytest.warns(UserWarning, match="without a published hash"):
        data = datasets.load(
            "census-income", cache_dir=cache, registry=registry, trust_unverified=True, part="test"
        )
    assert len(data) == 60
    assert (cache / "census-income" / f"{src.name}.sha256").read_text().split()[
        0
    ] == hashlib.sha256(src.read_bytes()).hexdigest()
