"""The practitioner's path of issue 20, end to end on two files in MTReclib's AliExpress layout.

train.csv and test.csv (the published header) → the training file's encoder → a trained run
saved as one folder → loaded → scores for the raw test rows (unseen values included) → the
same scores from the exported graph and from the command line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mtlbook as mb
from mtlbook import datasets
from mtlbook.__main__ import main
from mtlbook.analysis.serving import load_exported
from mtlbook.book.appendix_d import write_aliexpress_sample
from mtlbook.models import MMoE

# The first line of MTReclib's processed train.csv / test.csv (data/preprocess.py), as published.
PUBLISHED_HEADER = (
    "search_id,"
    + ",".join(f"categorical_{i}" for i in range(1, 17))
    + ","
    + ",".join(f"numerical_{i}" for i in range(1, 64))
    + ",click,conversion"
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("aliexpress")
    return write_aliexpress_sample(folder, n_train=1_500, n_test=600, seed=1)


def test_files_have_the_published_header(files):
    for path in files:
        assert path.read_text().splitlines()[0] == PUBLISHED_HEADER
    assert PUBLISHED_HEADER.split(",")[:2] == ["search_id", "categorical_1"]
    assert len(PUBLISHED_HEADER.split(",")) == 82


def test_from_two_files_to_served_scores(files, tmp_path, capsys):
    train_csv, test_csv = files
    train_all = datasets.read_processed(train_csv, "aliexpress")
    test = datasets.read_processed(test_csv, "aliexpress", like=train_all)
    raw = pd.read_csv(test_csv)
    unknown = train_all.encoder.unknown_counts(raw)
    assert sum(unknown.values()) > 0, "the test file must hold values unseen in training"
    assert test.schema == train_all.schema

    train, valid = train_all.split((0.8, 0.2), seed=0)
    model = MMoE(train.schema, n_experts=2, expert_units=(8,), tower_units=(4,), seed=0)
    result = mb.fit(model, train, valid, epochs=2, batch_size=256, progress=False, device="cpu")
    run_dir = mb.save(model, tmp_path / "run", result=result, export=True)

    run = mb.load(run_dir)
    scores = run.predict(test_csv)
    tasks = ["click", "conversion"]
    assert list(scores.columns[:2]) == tasks and len(scores) == len(raw)
    assert ((scores[tasks] >= 0) & (scores[tasks] <= 1)).all().all()
    # The saved run scores raw rows exactly as the model scores the encoded test data.
    np.testing.assert_array_equal(scores[tasks].to_numpy(), model.predict(test)[tasks].to_numpy())
    # Rows with values unseen in training are scored too.
    unseen_rows = ~raw["categorical_10"].isin(pd.read_csv(train_csv)["categorical_10"])
    assert unseen_rows.any() and scores.loc[unseen_rows, tasks].notna().all().all()
    # The exported graph (with the encoder inside) gives the same scores on the raw rows.
    served = load_exported(run_dir / "model.pt2")
    exported = served.predict_frame(raw.drop(columns=tasks))
    assert float(np.abs(exported[tasks].to_numpy() - scores[tasks].to_numpy()).max()) < 1e-5
    # So does the command line.
    out = tmp_path / "scores.csv"
    assert (
        main(["predict", str(run_dir), str(test_csv), "-o", str(out), "--keep", "search_id"]) == 0
    )
    from_cli = pd.read_csv(out)
    np.testing.assert_allclose(from_cli[tasks].to_numpy(), scores[tasks].to_numpy(), atol=1e-6)
    assert from_cli["search_id"].tolist() == raw["search_id"].tolist()
    # evaluate needs the labels; predict does not.
    metrics = run.evaluate(test_csv).pivot(index="task", columns="metric", values="value")
    assert set(metrics.index) == set(tasks)
    with pytest.raises(ValueError, match="conversion"):
        run.evaluate(raw.drop(columns=["conversion"]))
    capsys.readouterr()
