"""Exporting models for serving and comparing serving setups (chapter 12.4)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

import mtlbook as mb
from mtlbook.analysis.serving import (
    ExportedModel,
    ServingModule,
    export_difference,
    export_model,
    file_breakdown,
    load_exported,
    serving_benchmark,
)
from mtlbook.models import MMoE, SharedBottom, SingleTask


@pytest.mark.parametrize("cls", [SharedBottom, MMoE])
def test_export_reload_gives_the_eager_predictions(cls, funnel_binary, tmp_path):
    model = cls(funnel_binary.schema, seed=3)
    model.train()
    path = export_model(model, funnel_binary, tmp_path / "model.pt2")
    assert model.training  # its mode is restored
    served = load_exported(path)
    assert isinstance(served, ExportedModel)
    assert served.task_names == ("click", "purchase")
    assert served.model_name == cls.__name__
    diff = export_difference(model, served, funnel_binary)
    assert list(diff["task"]) == ["click", "purchase"]
    assert (diff["max_abs_diff"] < 1e-5).all()
    eager = model.predict(funnel_binary)
    np.testing.assert_allclose(served.predict(funnel_binary)["click"], eager["click"], atol=1e-6)


def test_exported_model_serves_any_batch_size(funnel_binary, tmp_path):
    model = SharedBottom(funnel_binary.schema, bottom_units=(8,))
    served = load_exported(export_model(model, funnel_binary, tmp_path / "m.pt2"))
    wrapper = ServingModule(model)
    for n in (1, 7, 300):
        batch = next(iter(funnel_binary.loader(n, shuffle=False)))
        got = served(*wrapper.inputs(batch))
        with torch.no_grad():
            want = wrapper(*wrapper.inputs(batch))
        assert [g.shape for g in got] == [(n,), (n,)]
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)


def test_dense_only_data_exports(tmp_path):
    data = mb.make_correlated_tasks(200, 0.5, n_features=5, seed=0)
    model = SharedBottom(data.schema, bottom_units=(8,))
    served = load_exported(export_model(model, data, tmp_path / "m.pt2"))
    assert served.inputs == ["dense"]
    assert export_difference(model, served, data)["max_abs_diff"].max() < 1e-5


def test_export_errors_speak(funnel_binary, tmp_path):
    model = SharedBottom(funnel_binary.schema)
    with pytest.raises(TypeError, match="mtlbook model"):
        export_model(torch.nn.Linear(2, 1), funnel_binary, tmp_path / "m.pt2")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_model(model, funnel_binary, tmp_path / "missing" / "m.pt2")
    other = mb.make_correlated_tasks(100, 0.5, n_features=3)
    with pytest.raises(ValueError, match="feature columns differ"):
        export_model(model, other, tmp_path / "m.pt2")
    with pytest.raises(FileNotFoundError, match="no exported model"):
        load_exported(tmp_path / "nothing.pt2")
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"not a torch\.export file"):
        load_exported(junk)
    with pytest.raises(ValueError, match=r"not a \.pt2 archive"):
        file_breakdown(junk)


def test_export_difference_checks_its_arguments(funnel_binary, tmp_path):
    model = SharedBottom(funnel_binary.schema)
    served = load_exported(export_model(model, funnel_binary, tmp_path / "m.pt2"))
    click = funnel_binary.select_tasks(["click"])
    with pytest.raises(ValueError, match="different tasks"):
        export_difference(SingleTask(click.schema), served, click)
    with pytest.raises(TypeError, match="ExportedModel"):
        export_difference(model, model, funnel_binary)


def test_file_breakdown_adds_up(funnel_binary, tmp_path):
    model = SharedBottom(funnel_binary.schema)
    path = export_model(model, funnel_binary, tmp_path / "m.pt2")
    parts = file_breakdown(path)
    assert parts["total"] == path.stat().st_size
    assert parts["weights"] + parts["other"] == parts["total"]
    assert parts["weights"] >= 4 * model.n_parameters()  # float32 weights are all in the file
    assert zipfile.is_zipfile(path)


def test_serving_benchmark_table(funnel_binary, tmp_path):
    multi = SharedBottom(funnel_binary.schema, bottom_units=(8,))
    multi.train()
    singles = [
        SingleTask(funnel_binary.select_tasks([t]).schema, hidden_units=(8,))
        for t in funnel_binary.task_names
    ]
    table = serving_benchmark(
        {"one": [multi], "separate": singles},
        funnel_binary,
        tmp_path,
        batch_sizes=(1, 64),
        repeats=2,
        warmup=0,
    )
    assert list(table["setup"]) == ["one", "separate"]
    assert list(table["n_models"]) == [1, 2]
    assert table.loc[0, "parameters"] == multi.n_parameters()
    for column in ("eager_ms_b1", "exported_ms_b1", "eager_ms_b64", "exported_ms_b64"):
        assert (table[column] > 0).all()
    assert (table["max_abs_diff"] < 1e-5).all()
    assert (table["file_kb"] > table["weights_kb"]).all()
    assert multi.training  # restored
    assert len(list(tmp_path.glob("*.pt2"))) == 3


def test_serving_benchmark_errors(funnel_binary, tmp_path):
    multi = SharedBottom(funnel_binary.schema)
    click = SingleTask(funnel_binary.select_tasks(["click"]).schema)
    with pytest.raises(ValueError, match="exactly once"):
        serving_benchmark({"half": [click]}, funnel_binary, tmp_path)
    with pytest.raises(ValueError, match="exactly once"):
        serving_benchmark({"twice": [multi, click]}, funnel_binary, tmp_path)
    with pytest.raises(ValueError, match="no model"):
        serving_benchmark({"empty": []}, funnel_binary, tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        serving_benchmark({"one": [multi]}, funnel_binary, tmp_path / "nope")
    with pytest.raises(ValueError, match="batch_sizes"):
        serving_benchmark({"one": [multi]}, funnel_binary, tmp_path, batch_sizes=(0,))
    with pytest.raises(TypeError, match="MultiTaskData"):
        serving_benchmark({"one": [multi]}, "funnel", tmp_path)


# ---------------------------------------------------------------------- the encoder inside
def _raw_rows(n: int, seed: int):
    import pandas as pd

    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.4).astype(int)
    return pd.DataFrame(
        {
            "price": rng.gamma(2.0, 1.0, n),
            "shop": rng.choice(["a", "b", "c"], n),
            "item": rng.choice([1, 2, 3, 4], n),
            "click": click,
            "buy": click * (rng.random(n) < 0.5),
        }
    )


@pytest.fixture(scope="module")
def from_frame():
    from mtlbook.data import MultiTaskData

    return MultiTaskData.from_frame(
        _raw_rows(200, 0),
        dense=["price"],
        categorical=["shop", "item"],
        tasks={"click": "binary", "buy": "binary"},
    )


def test_export_carries_the_encoder_and_scores_raw_rows(from_frame, tmp_path):
    from mtlbook.data import MultiTaskData

    model = MMoE(from_frame.schema, n_experts=2, expert_units=(8,), tower_units=(4,))
    served = load_exported(export_model(model, from_frame, tmp_path / "m.pt2"))
    assert served.encoder == from_frame.encoder
    assert "with encoder" in repr(served)
    raw = _raw_rows(30, 1)
    raw.loc[0, "shop"], raw.loc[1, "shop"], raw.loc[2, "item"] = "unseen", None, 99
    raw.index = raw.index + 1000
    scores = served.predict_frame(raw[["price", "shop", "item"]], batch_size=7)
    assert list(scores.columns) == ["click", "buy"] and scores.index.equals(raw.index)
    eager = model.predict(MultiTaskData.from_frame(raw, like=from_frame))
    np.testing.assert_allclose(scores.to_numpy(), eager.to_numpy(), atol=1e-5)
    raw.to_parquet(tmp_path / "rows.parquet")
    np.testing.assert_allclose(served.predict_frame(tmp_path / "rows.parquet"), scores)
    with pytest.raises(ValueError, match=r"\['item'\] not found"):
        served.predict_frame(raw.drop(columns=["item"]))


def test_export_from_raw_rows_or_no_data(from_frame, tmp_path):
    model = SharedBottom(from_frame.schema, bottom_units=(8,))
    raw = _raw_rows(20, 2)
    by_frame = load_exported(export_model(model, raw, tmp_path / "a.pt2"))
    by_none = load_exported(export_model(model, None, tmp_path / "b.pt2"))
    assert by_frame.encoder == by_none.encoder == from_frame.encoder  # model.schema.encoder
    np.testing.assert_allclose(by_frame.predict_frame(raw), by_none.predict_frame(raw))
    assert export_difference(model, by_none, from_frame)["max_abs_diff"].max() < 1e-5
    other = mb.simulate_funnel(100, seed=0)
    with pytest.raises(ValueError, match="no encoder to encode it"):
        export_model(SharedBottom(other.schema), raw, tmp_path / "c.pt2")
    with pytest.raises(ValueError, match="does not encode the model's features"):
        export_model(
            SharedBottom(other.schema), other, tmp_path / "c.pt2", encoder=from_frame.encoder
        )
    assert not (tmp_path / "c.pt2").exists()


def test_export_narrows_the_encoder_to_the_model_tasks(from_frame, tmp_path):
    click = from_frame.select_tasks(["click"])
    model = SingleTask(click.schema, hidden_units=(8,))
    served = load_exported(export_model(model, click, tmp_path / "m.pt2"))
    assert list(served.encoder.tasks) == ["click"]
    assert list(served.predict_frame(_raw_rows(5, 3)).columns) == ["click"]


def test_an_export_without_encoder_cannot_score_raw_rows(funnel_binary, tmp_path):
    served = load_exported(
        export_model(SharedBottom(funnel_binary.schema), funnel_binary, tmp_path / "m.pt2")
    )
    assert served.encoder is None
    with pytest.raises(ValueError, match="exported without an encoder"):
        served.predict_frame(_raw_rows(5, 0))


def test_a_failed_export_keeps_the_old_file(from_frame, tmp_path, monkeypatch):
    model = SharedBottom(from_frame.schema, bottom_units=(8,))
    path = export_model(model, from_frame, tmp_path / "m.pt2")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch.export, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        export_model(SharedBottom(from_frame.schema, seed=1), from_frame, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt2"]
