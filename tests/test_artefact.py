"""A trained run saved as one folder (mtlbook.save / mtlbook.load / SavedRun), and read_table."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

import mtlbook as mb
from mtlbook import models
from mtlbook.analysis.serving import load_exported
from mtlbook.data import MultiTaskData, read_table
from mtlbook.training import SavedRun, artefact
from mtlbook.training.artefact import RUN_FORMAT_VERSION, RunFormatError

FEATURES = ["price", "age", "shop", "item"]
TASKS = {"click": "binary", "buy": "binary", "stay": "regression"}


def _frame(n: int, seed: int) -> pd.DataFrame:
    """Raw rows: two dense columns, a text and an integer categorical column, a click, a
    click-and-buy label over every row and a regression label."""
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.4).astype(int)
    return pd.DataFrame(
        {
            "price": rng.gamma(2.0, 1.0, n),
            "age": rng.integers(18, 70, n).astype(float),
            "shop": rng.choice(["007", "12", "a", "b"], n),
            "item": rng.choice([10, 20, 30, 40, 50], n),
            "click": click,
            "buy": click * (rng.random(n) < 0.5),
            "stay": rng.gamma(1.0, 2.0, n),
        }
    )


@pytest.fixture(scope="module")
def train() -> MultiTaskData:
    return MultiTaskData.from_frame(
        _frame(300, 0), dense=["price", "age"], categorical=["shop", "item"], tasks=TASKS
    )


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    """Later rows with unseen and missing categorical values, and a non-default index."""
    frame = _frame(40, 1)
    frame["item"] = frame["item"].astype(float)
    frame.loc[0, "shop"], frame.loc[1, "shop"] = "never seen", None
    frame.loc[2, "item"], frame.loc[3, "item"] = 999.0, np.nan
    frame.index = pd.Index(np.arange(40)[::-1] * 3, name="row")
    return frame


#: Non-default constructor arguments per model (cheap, tiny models).
ARGUMENTS = {
    "SharedBottom": {"bottom_units": (8,), "tower_units": (4,), "embedding_dim": 3},
    "SingleTask": {"hidden_units": (8, 4), "embedding_dim": 3},
    "CGC": {"n_shared_experts": 1, "expert_units": (8,), "tower_units": (4,)},
    "PLE": {"n_levels": 2, "expert_units": (8,), "tower_units": (4,)},
    "DSelectK": {"n_experts": 3, "k": 2, "expert_units": (8,), "per_example": False},
    "MMoE": {"n_experts": 3, "expert_units": (8,), "tower_units": (4,)},
    "OMoE": {"n_experts": 3, "expert_units": (8,), "tower_units": (4,)},
    "CrossStitch": {"hidden_units": (8, 4), "tower_units": (4,), "shared_embeddings": False},
    "Sluice": {"hidden_units": (8, 8), "n_subspaces": 2},
    "SoftSharing": {"hidden_units": (8, 4), "l2_lambda": 0.1},
    "AITM": {"sequence": ("click", "buy"), "tower_units": (8, 4)},
    "ESMM": {"ctr_task": "click", "ctcvr_task": "buy", "tower_units": (8,)},
}


def _model(name: str, data: MultiTaskData, seed: int = 7) -> models.MultiTaskModel:
    """A tiny model with non-default arguments and perturbed weights (not its initial ones)."""
    model = getattr(models, name)(data.schema, **ARGUMENTS.get(name, {}), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return model


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[FEATURES]


# ---------------------------------------------------------------------- round trip
@pytest.mark.parametrize("name", models.__all__)
def test_every_model_round_trips(name, train, raw, tmp_path):
    model = _model(name, train)
    path = mb.save(model, tmp_path / "run")
    run = mb.load(path)
    assert isinstance(run, SavedRun) and type(run.model) is type(model)
    assert not run.model.training
    assert run.info["model"]["arguments"] == json.loads(json.dumps(model.init_arguments))
    saved, loaded = model.state_dict(), run.model.state_dict()
    assert list(saved) == list(loaded)
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    # The raw rows (labels dropped) score exactly as the eager model on the same rows encoded
    # with the training vocabulary.
    want = model.predict(MultiTaskData.from_frame(raw, like=train))
    got = run.predict(_features(raw))
    assert list(got.index) == list(raw.index)
    for column in want:
        np.testing.assert_allclose(got[column].to_numpy(), want[column].to_numpy(), atol=1e-6)
    if name == "ESMM":
        assert list(got.columns) == ["click", "buy", "stay", "pctr", "pcvr", "pctcvr"]
    elif name == "AITM":  # its last step over every impression is P(click and buy)
        assert list(got.columns) == ["click", "buy", "stay", "pctcvr"]
        np.testing.assert_array_equal(got["pctcvr"], got["buy"])
    else:
        assert list(got.columns) == ["click", "buy", "stay"]


def test_init_arguments_record_the_outermost_call(train):
    cgc = models.CGC(train.schema, n_shared_experts=1, expert_units=[8])
    assert "n_levels" not in cgc.init_arguments  # CGC passes n_levels=1 on to PLE
    assert cgc.init_arguments["expert_units"] == [8]
    assert cgc.init_arguments["seed"] == 0
    esmm = models.ESMM(train.schema, backbone=models.MMoE)
    assert esmm.init_arguments["backbone"] is models.MMoE
    assert "backbone" not in esmm.backbone.init_arguments  # the backbone's own record
    rebuilt = models.MMoE(train.schema, **models.MMoE(train.schema, n_experts=2).init_arguments)
    assert rebuilt.init_arguments["n_experts"] == 2


def test_a_model_on_selected_tasks_keeps_only_its_tasks(train, raw, tmp_path):
    data = train.select_tasks(["buy", "click"])
    model = _model("MMoE", data)
    run = mb.load(mb.save(model, tmp_path / "run"))
    assert run.task_names == ("buy", "click")
    assert list(run.encoder.tasks) == ["buy", "click"]
    assert [t["name"] for t in run.info["schema"]["tasks"]] == ["buy", "click"]
    table = run.evaluate(raw.drop(columns=["stay"]))  # no label of the task it does not have
    assert set(table["task"]) == {"buy", "click"}


# ---------------------------------------------------------------------- predict and evaluate
def test_predict_reads_csv_and_parquet(train, raw, tmp_path):
    run = mb.load(mb.save(_model("SharedBottom", train), tmp_path / "run"))
    want = run.predict(_features(raw))
    frame = raw.reset_index(drop=True)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    frame.to_parquet(tmp_path / "rows.parquet", index=False)
    for name in ("rows.csv", "rows.parquet"):
        got = run.predict(tmp_path / name)
        assert got.index.equals(pd.RangeIndex(len(frame)))
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), atol=1e-6)
    # "007" and "12" stay text: read as numbers, they would be unknown shops.
    assert read_table(tmp_path / "rows.csv", text_columns=["shop"])["shop"].isin(["007"]).any()


def test_predict_in_batches_keeps_the_order(train, raw, tmp_path):
    run = mb.load(mb.save(_model("PLE", train), tmp_path / "run"))
    whole = run.predict(_features(raw))
    pieces = run.predict(_features(raw), batch_size=7)
    pd.testing.assert_frame_equal(whole, pieces, atol=1e-6)
    assert len(run.predict(_features(raw).iloc[:0])) == 0


def test_evaluate_equals_mtlbook_evaluate(train, raw, tmp_path):
    model = _model("MMoE", train)
    run = mb.load(mb.save(model, tmp_path / "run"))
    want = mb.evaluate(model, MultiTaskData.from_frame(raw, like=train))
    pd.testing.assert_frame_equal(run.evaluate(raw), want)
    raw.to_csv(tmp_path / "rows.csv", index=False)
    pd.testing.assert_frame_equal(run.evaluate(tmp_path / "rows.csv"), want, atol=1e-6)
    auc = run.evaluate(raw, metrics=["auc"])
    assert set(auc["metric"]) == {"auc"} and list(auc["task"]) == ["click", "buy"]
    with pytest.raises(ValueError, match=r"\['gauc'\] were not computed"):
        run.evaluate(raw, metrics=["gauc"])


def test_evaluate_needs_the_labels_predict_does_not(train, raw, tmp_path):
    run = mb.load(mb.save(_model("SharedBottom", train), tmp_path / "run"))
    unlabelled = raw.drop(columns=["buy"])
    with pytest.raises(ValueError, match=r"label column\(s\) \['buy'\].*predict does not need"):
        run.evaluate(unlabelled)
    unlabelled.to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(ValueError, match=r"\['buy'\]"):
        run.evaluate(tmp_path / "rows.parquet")
    assert len(run.predict(unlabelled)) == len(raw)
    assert len(run.predict(tmp_path / "rows.parquet")) == len(raw)


def test_predict_errors_name_the_column(train, raw, tmp_path):
    run = mb.load(mb.save(_model("SharedBottom", train), tmp_path / "run"))
    with pytest.raises(ValueError, match=r"\['age'\] not found"):
        run.predict(raw.drop(columns=["age"]))
    raw.drop(columns=["age"]).to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(ValueError, match=r"\['age'\] not found in .*rows\.csv"):
        run.predict(tmp_path / "rows.csv")
    with pytest.raises(ValueError, match="'item' held numbers in the training frame"):
        run.predict(raw.assign(item="x"))
    with pytest.raises(TypeError, match="DataFrame or the path"):
        run.predict(raw.to_numpy())


# ---------------------------------------------------------------------- export
@pytest.mark.parametrize("name", ["SharedBottom", "ESMM"])
def test_exported_run_scores_raw_rows_as_the_eager_run(name, train, raw, tmp_path):
    run = mb.load(mb.save(_model(name, train), tmp_path / "run", export=True))
    assert (tmp_path / "run" / "model.pt2").is_file()
    assert run.info["files"]["export"] == "model.pt2"
    served = load_exported(run.export(tmp_path / "served.pt2"))
    assert served.encoder == run.encoder
    eager = run.predict(_features(raw))
    for exported in (served, load_exported(tmp_path / "run" / "model.pt2")):
        scores = exported.predict_frame(_features(raw))
        assert list(scores.columns) == list(run.task_names)
        assert scores.index.equals(raw.index)
        diff = (scores - eager[list(run.task_names)]).abs().to_numpy().max()
        assert diff < 1e-5
    with pytest.raises(FileExistsError, match="overwrite=True"):
        run.export(tmp_path / "served.pt2")
    run.export(tmp_path / "served.pt2", overwrite=True)


# ---------------------------------------------------------------------- what is in run.json
def test_run_json_records_versions_schema_metrics_and_metadata(train, raw, tmp_path):
    model = _model("SharedBottom", train)
    valid = MultiTaskData.from_frame(raw, like=train)
    result = mb.fit(model, train, valid, epochs=2, batch_size=64, progress=False)
    meta = {"data": "rows.csv", "sizes": (300, 40), "note": None}
    run = mb.load(mb.save(model, tmp_path / "run", result=result, metadata=meta))
    info = run.info
    assert info["format"] == artefact.RUN_FORMAT
    assert info["format_version"] == RUN_FORMAT_VERSION
    assert info["mtlbook_version"] == mb.__version__
    assert info["torch_version"] == torch.__version__
    assert info["created"].endswith("+00:00")
    assert info["model"]["class"] == "SharedBottom"
    assert info["schema"]["cardinalities"] == list(train.schema.cardinalities)
    assert info["metadata"] == {"data": "rows.csv", "sizes": [300, 40], "note": None}
    metrics = info["metrics"]
    assert (metrics["best_epoch"], metrics["monitor"]) == (result.best_epoch, "loss")
    assert metrics["best_score"] == pytest.approx(result.best_score)
    table = pd.DataFrame(metrics["valid"]).pivot(index="task", columns="metric", values="value")
    pd.testing.assert_frame_equal(table, result.valid_metrics(), check_names=False)
    assert repr(run).startswith("SavedRun(SharedBottom, tasks=['click', 'buy', 'stay']")
    assert run.schema == train.schema and run.schema.encoder == train.encoder


# ---------------------------------------------------------------------- what is refused
def test_save_refuses_what_a_run_cannot_hold(train, tmp_path):
    funnel = mb.simulate_funnel(200, seed=0)
    with pytest.raises(ValueError, match=r"not built on data from MultiTaskData\.from_frame"):
        mb.save(models.SharedBottom(funnel.schema), tmp_path / "a")
    with pytest.raises(ValueError, match="does not encode the model's features"):
        mb.save(models.SharedBottom(funnel.schema), tmp_path / "a", encoder=train.encoder)
    model = _model("SharedBottom", train)
    with pytest.raises(ValueError, match=r"metadata\['when'\] is .*Timestamp.*not plain JSON"):
        mb.save(model, tmp_path / "a", metadata={"when": pd.Timestamp("2024-01-01")})
    with pytest.raises(ValueError, match="metadata must be a dict"):
        mb.save(model, tmp_path / "a", metadata=["x"])
    with pytest.raises(ValueError, match=r"argument 'backbone' of ESMM .*backbone='mlp'"):
        mb.save(models.ESMM(train.schema, backbone=models.MMoE), tmp_path / "a")
    with pytest.raises(TypeError, match="FitResult"):
        mb.save(model, tmp_path / "a", result={"best_epoch": 1})

    class Mine(models.SharedBottom):
        pass

    with pytest.raises(ValueError, match=r"only the models of mtlbook\.models"):
        mb.save(Mine(train.schema), tmp_path / "a")
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_overwrite_replaces_runs_only(train, raw, tmp_path):
    first, second = _model("SharedBottom", train, seed=1), _model("SharedBottom", train, seed=2)
    path = mb.save(first, tmp_path / "run")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        mb.save(second, path)
    mb.save(second, path, overwrite=True)
    want = second.predict(MultiTaskData.from_frame(raw, like=train))
    np.testing.assert_allclose(mb.load(path).predict(_features(raw)), want, atol=1e-6)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "file.txt").write_text("keep me too")
    (tmp_path / "empty").mkdir()
    for other in ("mine", "file.txt", "empty"):
        with pytest.raises(FileExistsError, match="not a mtlbook run; it is never overwritten"):
            mb.save(second, tmp_path / other, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "file.txt").read_text() == "keep me too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file.txt", "mine", "run"]
    assert sorted(p.name for p in path.iterdir()) == ["model.pt", "run.json"]


def _boom(*args, **kwargs):
    raise OSError("disk full (simulated)")


def _half_json(info, file, **kwargs):
    file.write(json.dumps(info)[:50])
    raise KeyboardInterrupt  # an interrupted save, not only a failed one


@pytest.mark.parametrize("where", ["torch.save", "json", "rename"])
def test_an_interrupted_save_leaves_the_old_run_intact(where, train, raw, tmp_path, monkeypatch):
    old = _model("SharedBottom", train, seed=1)
    path = mb.save(old, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    if where == "torch.save":
        monkeypatch.setattr(torch, "save", _boom)
    elif where == "json":
        monkeypatch.setattr(artefact.json, "dump", _half_json)
    else:
        monkeypatch.setattr(artefact.os, "rename", _boom)
    error = KeyboardInterrupt if where == "json" else OSError
    with pytest.raises(error):
        mb.save(_model("SharedBottom", train, seed=2), path, overwrite=True, export=True)
    with pytest.raises(error):
        mb.save(_model("SharedBottom", train, seed=2), tmp_path / "new")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folder, no "new"
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    want = old.predict(MultiTaskData.from_frame(raw, like=train))
    np.testing.assert_allclose(mb.load(path).predict(_features(raw)), want, atol=1e-6)


def _edit_run_json(path, **changes):
    info = json.loads((path / "run.json").read_text())
    for key, value in changes.items():
        target = info
        *parents, last = key.split("__")
        for part in parents:
            target = target[part]
        target[last] = value
    (path / "run.json").write_text(json.dumps(info))


def test_load_refuses_what_is_not_a_run_of_this_version(train, tmp_path):
    with pytest.raises(FileNotFoundError, match="no run at"):
        mb.load(tmp_path / "missing")
    (tmp_path / "folder").mkdir()
    with pytest.raises(RunFormatError, match=r"it has no run\.json"):
        mb.load(tmp_path / "folder")
    model = _model("SharedBottom", train)
    cases = {
        "format_version": (
            {"format_version": RUN_FORMAT_VERSION + 1, "mtlbook_version": "9.9"},
            rf"format version {RUN_FORMAT_VERSION + 1} \(written by mtlbook 9\.9\); this "
            rf"mtlbook {mb.__version__} reads format version {RUN_FORMAT_VERSION}\. Install the "
            r"mtlbook version that wrote it \(9\.9\).*save the run again",
        ),
        "format": ({"format": "something else"}, "not 'mtlbook run'"),
        "class": ({"model__class": "Transformer"}, "class 'Transformer', which this mtlbook"),
        "cardinalities": (
            {"schema__cardinalities": [3, 3]},
            r"cardinalities are \[3, 3\], its encoder's \[5, 6\]",
        ),
        "arguments": ({"model__arguments__bottom_units": [-1]}, "cannot be built"),
    }
    for name, (changes, message) in cases.items():
        path = mb.save(model, tmp_path / name)
        _edit_run_json(path, **changes)
        with pytest.raises(RunFormatError, match=message):
            mb.load(path)
    path = mb.save(model, tmp_path / "weights")
    torch.save({"nothing": torch.zeros(1)}, path / "model.pt")
    with pytest.raises(RunFormatError, match="do not fit the model SharedBottom"):
        mb.load(path)
    assert issubclass(RunFormatError, ValueError)


# ---------------------------------------------------------------------- read_table
def test_read_table_formats_and_errors(tmp_path):
    frame = pd.DataFrame({"id": ["007", "12", None], "x": [1.5, 2.0, 3.0], "n": [1, None, 3]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "t.csv.gz", index=False)
    frame.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    frame.to_parquet(tmp_path / "t.pq", index=False)
    for name in ("t.csv", "t.csv.gz", "t.tsv", "t.parquet", "t.pq"):
        got = read_table(tmp_path / name, columns=["x", "id", "n"], text_columns=["id", "n"])
        assert list(got.columns) == ["x", "id", "n"]
        assert got["id"].tolist()[:2] == ["007", "12"] and pd.isna(got["id"].iloc[2])
        # A CSV holds the text pandas wrote for floats; Parquet holds the numbers, whole ones
        # read as integers' text.
        assert got["n"].iloc[0] == ("1" if "p" in name else "1.0") and pd.isna(got["n"].iloc[1])
        np.testing.assert_allclose(got["x"], frame["x"])
    assert read_table(tmp_path / "t.csv")["id"].tolist()[:2] == [7, 12]  # numbers without it
    with pytest.raises(FileNotFoundError, match=r"no such file: .*nothing\.csv"):
        read_table(tmp_path / "nothing.csv")
    (tmp_path / "t.xlsx").write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"unknown file type; .*\.csv, \.csv\.gz, .*\.parquet, \.pq"
    ):
        read_table(tmp_path / "t.xlsx")
    with pytest.raises(ValueError, match=r"column\(s\) \['y'\] not found in .*t\.parquet"):
        read_table(tmp_path / "t.parquet", columns=["x", "y"])
    with pytest.raises(ValueError, match=r"\['z'\] not found"):
        read_table(tmp_path / "t.csv", text_columns=["z"])
    with pytest.raises(IsADirectoryError):
        read_table(tmp_path)
    assert os.listdir(tmp_path)  # nothing removed


def test_read_table_reads_only_the_first_rows(tmp_path):
    frame = pd.DataFrame({"shop": [f"{i:03d}" for i in range(150_000)], "price": 1.5})
    frame.to_csv(tmp_path / "rows.csv", index=False)
    frame.to_parquet(tmp_path / "rows.parquet")
    for name in ("rows.csv", "rows.parquet"):
        first = read_table(tmp_path / name, text_columns=["shop"], max_rows=70_000)
        assert len(first) == 70_000 and first["shop"].iloc[-1] == "69999"
        assert list(first.columns) == ["shop", "price"]
        assert len(read_table(tmp_path / name, max_rows=10**9)) == 150_000
    with pytest.raises(ValueError, match="max_rows must be None or an integer >= 1, got 0"):
        read_table(tmp_path / "rows.csv", max_rows=0)
