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


def test_readme_example_runs(capsys):
    code = _example()
    read_line = 'df = pd.read_parquet("impressions.parquet")'
    assert read_line in code
    # The reader's parquet file is replaced by a small simulated one with the same columns.
    frame = mb.simulate_funnel(4_000, seed=0, n_users=300, n_items=200).to_frame()
    frame = frame.assign(category=frame["category"].map(lambda c: f"cat{c}"))
    code = code.replace(read_line, "df = FRAME")
    namespace = {"FRAME": frame}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["result"].best_epoch >= 1
    printed = capsys.readouterr().out
    assert "auc" in printed and "gauc" in printed
