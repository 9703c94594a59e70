"""The README's "use mtlbook on your own data" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import mtlbook as mb

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- API EXAMPLE.*?```python\n(.*?)```", text, flags=re.S)
    assert block, "the README has no API example block"
    return block.group(1)


def test_readme_example_runs(capsys, tmp_path, monkeypatch):
    code = _example()
    for line in ('mb.data.read_table("train.csv")', 'mb.data.read_table("test.csv")'):
        assert line in code
    # The reader's two files are replaced by small simulated ones with the same columns; the
    # test file has users and items the training file never saw.
    frame = mb.simulate_funnel(5_000, seed=0, n_users=300, n_items=200).to_frame()
    frame = frame.assign(category=frame["category"].map(lambda c: f"cat{c}"))
    frame.iloc[:4_000].to_csv(tmp_path / "train.csv", index=False)
    test = frame.iloc[4_000:].copy()
    test.loc[test.index[:50], "user_id"] = 10_000  # never seen in training
    test.to_csv(tmp_path / "test.csv", index=False)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["result"].best_epoch >= 1
    printed = capsys.readouterr().out
    assert "auc" in printed and "gauc" in printed
    assert (tmp_path / "runs" / "mmoe" / "run.json").is_file()
    scores = namespace["run"].predict(test)
    assert list(scores.columns) == ["click", "purchase"] and len(scores) == len(test)
    assert scores.notna().all().all()
