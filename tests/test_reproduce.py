"""The full tier: a study runs, stores its results with provenance, and is re-checked reduced."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from mtlbook.book import reproduce
from mtlbook.book.reproduce import STUDIES, Study, check, load, run
from mtlbook.book.reproduce.__main__ import main
from mtlbook.book.reproduce.mmoe import FULL, selected, study, verify

TINY = {
    **FULL,
    "correlations": [0.5, 1.0],
    "restarts": 3,
    "n_samples": 400,
    "lrs": [1e-2, 1e-3],
    "epochs": 2,
    "early_stopping": 2,
}


@pytest.fixture
def tiny_study(monkeypatch):
    def reduced(stored):
        return {**TINY, "restarts": 3}

    tiny = Study("tiny", "v9", "a tiny MMoE study", study, TINY, reduced, verify, ("tiny",))
    monkeypatch.setitem(reproduce.STUDIES, "tiny", tiny)
    return tiny


def test_a_study_stores_tidy_results_and_provenance(tmp_path, tiny_study):
    folder = run("tiny", tmp_path)
    assert folder == tmp_path / "tiny" / "v9"
    assert sorted(p.name for p in folder.iterdir()) == ["provenance.json", "results.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o666 & ~umask}
    frame, meta = load("tiny", tmp_path)
    assert list(frame.columns) == [
        "correlation",
        "model",
        "lr",
        "restart",
        "best_epoch",
        "split",
        "task",
        "value",
    ]
    # 2 correlations × 3 models × 2 rates × 3 restarts: one validation row and 3 test rows each
    assert len(frame) == 2 * 3 * 2 * 3 * 4
    for key in ("command", "commit", "packages", "machine", "threads", "wall_seconds", "date"):
        assert key in meta, key
    assert meta["command"].endswith("-m mtlbook.book.reproduce tiny")
    assert meta["settings"]["restarts"] == 3 and meta["reductions"] == ["tiny"]
    json.dumps(meta)  # plain JSON


def test_the_learning_rate_is_selected_on_validation_only():
    rows = []
    for lr, valid, test in ((1e-3, 1.0, 9.0), (1e-2, 2.0, 0.1)):
        for r in range(2):
            common = {"correlation": 0.5, "model": "MMoE", "lr": lr, "restart": r, "best_epoch": 1}
            rows.append({**common, "split": "valid", "task": "all", "value": valid})
            rows.append({**common, "split": "test", "task": "task1", "value": test})
    picked = selected(pd.DataFrame(rows))
    assert set(picked["lr"]) == {1e-3}  # the better validation loss, though its test is worse


def test_a_reduced_rerun_of_the_same_protocol_agrees(tmp_path, tiny_study):
    run("tiny", tmp_path)
    table = check("tiny", tmp_path)
    assert table["inside"].all()
    assert main(["tiny", "--check", "--root", str(tmp_path)]) == 0


def test_a_stale_result_fails_the_check(tmp_path, tiny_study):
    folder = run("tiny", tmp_path)
    frame = pd.read_csv(folder / "results.csv")
    frame.loc[frame["split"] == "test", "value"] *= 10  # results no longer what the code gives
    frame.to_csv(folder / "results.csv", index=False)
    assert not check("tiny", tmp_path)["inside"].all()
    assert main(["tiny", "--check", "--root", str(tmp_path)]) == 1


def test_missing_results_name_the_command(tmp_path, tiny_study):
    with pytest.raises(FileNotFoundError, match=r"python -m mtlbook\.book\.reproduce tiny"):
        load("tiny", tmp_path)
    with pytest.raises(ValueError, match="unknown study"):
        load("nope", tmp_path)


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_the_stored_full_results_agree_with_a_reduced_rerun(name):
    """CI's guard against stale results: the committed full-tier results must lie inside the
    intervals of a reduced re-run of the same protocol with today's code."""
    table = check(name)
    assert table["inside"].all(), table.to_string()


def test_interval_check_flags_a_stored_value_outside_the_reduced_interval():
    reduced = pd.DataFrame({"cell": ["a"] * 4 + ["b"] * 4, "value": [1.0, 1.1, 0.9, 1.0] * 2})
    stored = pd.DataFrame({"cell": ["a", "a", "b", "b"], "value": [1.0, 1.02, 5.0, 5.2]})
    table = reproduce.interval_check(stored, reduced, ["cell"]).set_index("cell")
    assert table.loc["a", "inside"] and not table.loc["b", "inside"]
    assert table.loc["a", "lo"] < 1.0 < table.loc["a", "hi"]
    with pytest.raises(ValueError, match="needs 2 or more"):
        reproduce.interval_check(stored, reduced.iloc[:5], ["cell"])
    with pytest.raises(ValueError, match=r"no \{'cell': 'b'\}"):
        reproduce.interval_check(stored[stored["cell"] == "a"], reduced, ["cell"])
    # medians: a heavy tail in the stored run moves its mean, not its median
    tail = pd.DataFrame({"cell": ["a"] * 6, "value": [1.0, 1.1, 0.9, 1.0, 1.05, 9.0]})
    only_a = reduced[reduced["cell"] == "a"]
    assert not reproduce.interval_check(tail, only_a, ["cell"]).iloc[0]["inside"]
    median = reproduce.interval_check(tail, only_a, ["cell"], statistic="median").iloc[0]
    assert median["inside"] and median["lo"] == 0.9 and median["hi"] == 1.1
    with pytest.raises(ValueError, match="statistic"):
        reproduce.interval_check(tail, only_a, ["cell"], statistic="mode")


def test_the_provenance_table_shows_what_a_reader_needs(tmp_path, tiny_study):
    run("tiny", tmp_path)
    _, meta = load("tiny", tmp_path)
    table = reproduce.provenance_table(meta)
    shown = table.iloc[:, 0]
    assert shown["命令"] == meta["command"] and shown["代码版本（提交）"] == meta["commit"]
    assert shown["与原协议的差别 1"] == "tiny"
    assert "tiny" in table.columns[0]


def test_every_study_names_its_reductions_and_a_smaller_reduced_run():
    for name, one in STUDIES.items():
        assert one.reductions, name
        small = one.reduced(None)
        assert set(small) <= set(one.full) | {"lrs_by_cell"}, name
        assert small != one.full, name


def test_every_stored_reduction_has_its_chinese_text_for_the_chapters() -> None:
    """provenance_table shows a study's departures from its paper in Chinese: each stored
    (English) reduction needs its entry in REDUCTIONS_ZH, or the reader sees English."""
    from mtlbook.book.reproduce import REDUCTIONS_ZH, STUDIES, load

    for name in STUDIES:
        _, meta = load(name)
        missing = [r for r in meta.get("reductions", []) if r not in REDUCTIONS_ZH]
        assert not missing, f"{name}: no Chinese text for {missing}"
