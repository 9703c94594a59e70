"""The command line ``python -m mtlbook train / predict / evaluate`` on tiny files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import mtlbook as mb
from mtlbook.__main__ import main

TINY = json.dumps({"bottom_units": [8], "tower_units": [4], "embedding_dim": 4})
TINY_MMOE = json.dumps(
    {"n_experts": 2, "expert_units": [8], "tower_units": [4], "embedding_dim": 4}
)
COLUMNS = ["--dense", "price,num_*", "--categorical", "user,item"]
TASKS = ["--tasks", "click:binary,buy:binary@click"]
FAST = ["--epochs", "1", "--batch-size", "64", "--threads", "1", "--no-progress"]


def _events(n: int, seed: int, *, unseen: bool = False) -> pd.DataFrame:
    """Rows with two dense, one ``num_*`` pattern column, a text and an integer category,
    and two binary tasks (buy only on clicks). ``unseen``: some users and items never in
    training."""
    rng = np.random.default_rng(seed)
    users = np.array([f"u{i}" for i in rng.integers(0, 20, n)], dtype=object)
    items = rng.integers(0, 30, n)
    if unseen:
        users[: n // 5] = "newcomer"
        items[: n // 10] = 1000 + np.arange(n // 10)
    price = rng.random(n)
    click = (rng.random(n) < 0.3 + 0.4 * price).astype(int)
    return pd.DataFrame(
        {
            "search_id": np.arange(n) + 10_000 * seed,
            "price": price,
            "num_a": rng.normal(size=n),
            "num_b": rng.normal(size=n),
            "user": users,
            "item": items,
            "click": click,
            "buy": click * (rng.random(n) < 0.5).astype(int),
        }
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    paths = {
        "train": folder / "train.csv",
        "valid": folder / "valid.parquet",
        "test": folder / "test.csv",
        "requests": folder / "requests.parquet",
    }
    _events(300, 0).to_csv(paths["train"], index=False)
    _events(80, 1).to_parquet(paths["valid"], index=False)
    _events(120, 2, unseen=True).to_csv(paths["test"], index=False)
    _events(50, 3, unseen=True).drop(columns=["click", "buy"]).to_parquet(paths["requests"])
    return {key: str(path) for key, path in paths.items()}


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    """One run, trained once for the predict and evaluate tests: (run folder, stdout)."""
    run = tmp_path_factory.mktemp("runs") / "sb"
    argv = ["train", files["train"], "--test", files["test"], *COLUMNS, *TASKS]
    argv += ["--model", "shared_bottom", "--model-args", TINY, *FAST, "--out", str(run)]
    return run, _run_main(argv)


def _run_main(argv: list[str]) -> str:
    """``main(argv)`` with stdout captured (for module fixtures, where capsys is missing)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


def _fails(capsys, argv: list[str], *expected: str) -> str:
    """``main(argv)`` exits 2 with one line ``error: ...`` on stderr naming ``expected``."""
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


# ---------------------------------------------------------------------------- train
def test_train_writes_a_run_its_metrics_and_a_summary(trained):
    run, out = trained
    assert {"run.json", "model.pt", "metrics.csv"} <= {p.name for p in run.iterdir()}
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".")]  # no leftovers
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.columns) == ["split", "task", "metric", "value"]
    assert set(metrics["split"]) == {"valid", "test"}
    assert {"click", "buy"} <= set(metrics["task"])
    assert metrics["value"].notna().all()
    assert "read " in out and "300 rows" in out and "best epoch 1" in out
    # The test file has users and items never seen in training: counted per column.
    unknown = next(line for line in out.splitlines() if line.startswith("unknown values in test"))
    assert "user 24" in unknown and "item 12" in unknown
    auc = metrics.query("split == 'test' and task == 'click' and metric == 'auc'")["value"]
    assert f"{auc.iloc[0]:.4f}" in out
    saved = mb.load(run)
    assert saved.info["metadata"]["model_args"] == json.loads(TINY)
    assert saved.task_names == ("click", "buy")


def test_train_is_reproducible_and_single_trains_one_model(files, tmp_path, capsys):
    argv = ["train", files["train"], "--valid", files["valid"], *COLUMNS, *TASKS]
    argv += ["--model", "single", *FAST, "--seed", "3"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    first = pd.read_csv(tmp_path / "a" / "metrics.csv")
    pd.testing.assert_frame_equal(first, pd.read_csv(tmp_path / "b" / "metrics.csv"))
    assert set(first["split"]) == {"valid"}
    assert type(mb.load(tmp_path / "a").model).__name__ == "SingleTask"
    assert "read " + files["valid"] + ": 80 rows" in capsys.readouterr().out


def test_train_with_a_toml_spec_of_glob_patterns(files, tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'dense = ["num_*", "price"]\n'
        'categorical = ["user", "item"]\n'
        "[tasks]\n"
        'click = "binary"\n'
        'buy = {kind = "binary", mask = "click"}\n'
        "[encoding]\n"
        "min_count = 2\n"
        "standardize = true\n"
    )
    run = tmp_path / "mmoe"
    argv = ["train", files["train"], "--spec", str(spec), "--valid-fraction", "0.2"]
    argv += ["--model", "MMoE", "--model-args", TINY_MMOE, "--weighting", "uncertainty"]
    assert main([*argv, *FAST, "--out", str(run), "--export"]) == 0
    assert (run / "model.pt2").is_file()
    encoder = mb.load(run).encoder
    assert encoder.dense == ("price", "num_a", "num_b")  # file order, not pattern order
    assert encoder.min_count == 2 and set(encoder.dense_stats) == {"price", "num_a", "num_b"}
    assert encoder.tasks["buy"] == {"kind": "binary", "mask": "click"}
    assert "validation: 60 random rows" in capsys.readouterr().out


def test_train_reads_the_published_aliexpress_layout(tmp_path, capsys):
    header = ["search_id", *(f"categorical_{i}" for i in range(1, 17))]
    header += [*(f"numerical_{i}" for i in range(1, 64)), "click", "conversion"]

    def sample(n: int, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        df = pd.DataFrame(rng.integers(0, 3, (n, len(header))), columns=header)
        df[[f"numerical_{i}" for i in range(1, 64)]] = rng.random((n, 63))
        df["search_id"] = np.arange(n) // 4 + 1000 * seed
        df["click"] = rng.integers(0, 2, n)
        df["conversion"] = df["click"] * rng.integers(0, 2, n)
        return df

    sample(200, 0).to_csv(tmp_path / "train.csv", index=False)
    test = sample(60, 1)
    test.loc[:9, "categorical_3"] = 7  # never seen in training
    test.to_csv(tmp_path / "test.csv", index=False)
    run, scores = tmp_path / "nl", tmp_path / "scores.parquet"
    argv = ["train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv")]
    argv += ["--layout", "aliexpress", "--model", "esmm", *FAST, "--out", str(run)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "63 dense, 16 categorical" in out and "categorical_3 10 (16.7%)" in out
    argv = ["predict", str(run), str(tmp_path / "test.csv"), "-o", str(scores)]
    assert main([*argv, "--keep", "search_id"]) == 0
    frame = pd.read_parquet(scores)
    assert list(frame.columns[:3]) == ["search_id", "click", "conversion"]
    assert "pctcvr" in frame.columns and len(frame) == 60
    pd.testing.assert_series_equal(frame["search_id"], test["search_id"])


# ---------------------------------------------------------------------------- predict, evaluate
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_predict_writes_one_score_per_task_and_the_kept_ids(trained, files, tmp_path, suffix):
    run, _ = trained
    out = tmp_path / "out" / f"scores{suffix}"  # the folder is created
    argv = ["predict", str(run), files["requests"], "-o", str(out), "--keep", "search_id"]
    assert _run_main(argv).strip() == f"wrote 50 rows (search_id, click, buy) to {out}"
    frame = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(frame.columns) == ["search_id", "click", "buy"]
    assert frame[["click", "buy"]].apply(lambda s: s.between(0, 1)).all().all()
    requests = pd.read_parquet(files["requests"])
    np.testing.assert_array_equal(frame["search_id"], requests["search_id"])
    expected = mb.load(run).predict(requests)
    np.testing.assert_allclose(frame[["click", "buy"]], expected[["click", "buy"]], rtol=1e-6)


def test_predict_refuses_to_overwrite_and_leaves_nothing_half_written(
    trained, files, tmp_path, capsys
):
    run, _ = trained
    out = tmp_path / "scores.csv"
    out.write_text("mine\n")
    argv = ["predict", str(run), files["requests"], "-o", str(out)]
    _fails(capsys, argv, "-o", "--overwrite")
    assert out.read_text() == "mine\n"
    _fails(capsys, [*argv, "--overwrite", "--keep", "nope"], "nope")
    assert out.read_text() == "mine\n" and [p.name for p in tmp_path.iterdir()] == ["scores.csv"]
    assert main([*argv, "--overwrite"]) == 0
    assert len(pd.read_csv(out)) == 50


def test_evaluate_prints_the_task_by_metric_table(trained, files, tmp_path, capsys):
    run, _ = trained
    csv = tmp_path / "metrics.csv"
    argv = ["evaluate", str(run), files["test"], "--metrics", "auc", "--csv", str(csv)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(csv)
    assert list(table.columns) == ["task", "metric", "value"] and set(table["metric"]) == {"auc"}
    for task, value in zip(table["task"], table["value"], strict=True):
        assert any(line.split() == [task, f"{value:.4f}"] for line in out.splitlines())
    test_rows = pd.read_csv(run / "metrics.csv").query("split == 'test' and metric == 'auc'")
    np.testing.assert_allclose(table["value"], test_rows["value"], rtol=1e-5)
    assert main(["evaluate", str(run), files["test"]]) == 0
    assert "logloss" in capsys.readouterr().out


# ---------------------------------------------------------------------------- errors
def _train_argv(files, out, *extra: str, columns=(*COLUMNS, *TASKS)) -> list[str]:
    return ["train", files["train"], *columns, "--model", "shared_bottom", *FAST,
            "--out", str(out), *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"columns": ("--dense", "price,nonexistent", *TASKS)}, ["--dense", "'nonexistent'"]),
        ({"columns": ("--dense", "zzz_*", *TASKS)}, ["--dense", "'zzz_*'"]),
        ({"columns": ("--dense", "price", "--tasks", "click")}, ["--tasks", "'click'"]),
        ({"columns": ("--dense", "price", "--tasks", "click:ordinal")}, ["ordinal"]),
        ({"columns": ("--dense", "price", "--tasks", "nolabel:binary")}, ["nolabel"]),
        ({"columns": ("--dense", "price")}, ["--tasks"]),
        ({"columns": ()}, ["one of --layout"]),
        ({"columns": ("--layout", "aliexpress", *TASKS)}, ["--layout and --tasks"]),
        ({"columns": ("--layout", "nope")}, ["--layout", "unknown layout 'nope'"]),
        ({"extra": ("--model", "nope")}, ["unknown model 'nope'"]),
        ({"extra": ("--weighting", "nope")}, ["unknown weighting 'nope'"]),
        ({"extra": ("--model-args", "{n_experts: 8}")}, ["--model-args", "JSON"]),
        ({"extra": ("--model-args", "[8]")}, ["--model-args", "JSON object"]),
        ({"extra": ("--model-args", '{"n_wings": 2}')}, ["--model-args", "n_wings"]),
    ],
)
def test_train_errors_name_the_argument(files, tmp_path, capsys, change, expected):
    columns = change.get("columns", (*COLUMNS, *TASKS))
    argv = _train_argv(files, tmp_path / "run", *change.get("extra", ()), columns=columns)
    _fails(capsys, argv, *expected)
    assert not (tmp_path / "run").exists()


def test_train_errors_name_the_file_and_column(files, tmp_path, capsys):
    changed = _events(50, 4).assign(item=lambda d: "i" + d["item"].astype(str))
    changed.to_csv(tmp_path / "typed.csv", index=False)
    _events(50, 4).drop(columns=["price"]).to_csv(tmp_path / "no_price.csv", index=False)
    (tmp_path / "rows.txt").write_text("a,b\n1,2\n")
    for test, expected in [
        (tmp_path / "typed.csv", ["typed.csv", "'item'", "text"]),
        (tmp_path / "no_price.csv", ["no_price.csv", "'price'"]),
        (tmp_path / "missing.csv", ["missing.csv"]),
    ]:
        _fails(capsys, _train_argv(files, tmp_path / "run", "--test", str(test)), *expected)
    argv = _train_argv(files, tmp_path / "run")
    argv[1] = str(tmp_path / "rows.txt")
    _fails(capsys, argv, "rows.txt", "unknown file type")
    assert not (tmp_path / "run").exists()


def test_train_replaces_a_run_only_with_overwrite(trained, files, tmp_path, capsys):
    run, _ = trained
    before = (run / "model.pt").read_bytes()
    _fails(capsys, _train_argv(files, run), "--out", "--overwrite")
    assert (run / "model.pt").read_bytes() == before
    mine = tmp_path / "notes.csv"  # not a run: never replaced, even with --overwrite
    mine.write_text("mine\n")
    _fails(capsys, _train_argv(files, mine, "--overwrite"), "not a mtlbook run")
    assert mine.read_text() == "mine\n"
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("run.json", "model.pt"):
        (copy / name).write_bytes((run / name).read_bytes())
    assert main(_train_argv(files, copy, "--overwrite", "--seed", "1")) == 0
    assert (copy / "metrics.csv").is_file() and (copy / "model.pt").read_bytes() != before


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ('dense = ["price"]\ncolour = "red"\n[tasks]\nclick = "binary"\n', ["colour"]),
        ('dense = ["price"]\n[tasks]\nclick = {kind = "binary", weight = 2}\n', ["weight"]),
        ('dense = ["price"]\n[encoding]\nbuckets = 3\n[tasks]\nclick = "binary"\n', ["buckets"]),
        ('dense = ["price"]\n', ["[tasks]"]),
        ('dense = ["price"\n', ["TOML"]),
        ('dense = ["nothing_*"]\n[tasks]\nclick = "binary"\n', ["'nothing_*'"]),
        (None, ["--spec", "spec.toml"]),
    ],
)
def test_bad_specs_are_named(files, tmp_path, capsys, spec, expected):
    path = tmp_path / "spec.toml"
    if spec is not None:
        path.write_text(spec)
    _fails(capsys, _train_argv(files, tmp_path / "run", columns=("--spec", str(path))), *expected)


def test_predict_and_evaluate_errors(trained, files, tmp_path, capsys):
    run, _ = trained
    scores = str(tmp_path / "scores.parquet")
    _fails(capsys, ["evaluate", str(run), files["requests"]], "click", "buy")
    _fails(capsys, ["predict", str(run), files["requests"], "-o", "s.txt"], ".parquet or .csv")
    _fails(capsys, ["predict", str(tmp_path), files["requests"], "-o", scores], str(tmp_path))
    _fails(capsys, ["predict", str(run), str(tmp_path / "nope.csv"), "-o", scores], "nope.csv")
    _fails(capsys, ["predict", str(run), files["requests"], "-o", scores, "--keep", "click"])
    # A run written by another format version of mtlbook is refused.
    other = tmp_path / "old-run"
    other.mkdir()
    for name in ("run.json", "model.pt"):
        (other / name).write_bytes((run / name).read_bytes())
    info = json.loads((other / "run.json").read_text())
    info["format_version"] = 999
    (other / "run.json").write_text(json.dumps(info))
    _fails(capsys, ["evaluate", str(other), files["test"]], "format version 999")
    assert not os.path.exists(scores)


def test_usage_errors_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "x.csv", "--model", "mmoe"])  # --out is required
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err
    for command in ("train", "predict", "evaluate"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"python -m mtlbook {command} " in text
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(c in text for c in ("compare", "train", "predict", "evaluate")), text


def test_the_module_entry_point_and_its_exit_status(trained, files, tmp_path):
    run, _ = trained
    out = tmp_path / "scores.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mtlbook", "predict", str(run), files["requests"]]
    good = subprocess.Popen(
        [*command, "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip
    bad = subprocess.Popen(
        [*command, "-o", str(out.with_suffix(".json"))], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    good_out, good_err = good.communicate(timeout=120)
    bad_out, bad_err = bad.communicate(timeout=120)
    assert good.returncode == 0, good_err
    assert "wrote 50 rows" in good_out and len(pd.read_csv(out)) == 50
    assert bad.returncode == 2 and bad_out == ""
    assert bad_err.strip().splitlines() == [
        f"error: -o '{out.with_suffix('.json')}': write .parquet or .csv (by the suffix), got .json"
    ]
