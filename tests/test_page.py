"""The chapters' page helpers: a CJK font that draws every Chinese label, missing glyphs as
errors, Chinese tables and relabelled library figures, the teaching code shown as source."""

from __future__ import annotations

import warnings

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import pytest

import mtlbook as mb
from mtlbook.analysis.gates import gate_weights, plot_gate_heatmap
from mtlbook.book import diagrams
from mtlbook.book.page import (
    FONT_FAMILY,
    chinese_font_path,
    setup_page,
    show_source,
    zh,
    zh_figure,
    zh_table,
)
from mtlbook.book.teaching import max_difference
from mtlbook.models import PLE


@pytest.fixture()
def page():
    """setup_page() in a sandbox: rcParams and warning filters restored afterwards."""
    with matplotlib.rc_context(), warnings.catch_warnings():
        setup_page()
        yield matplotlib.rcParams["font.family"][0]
    plt.close("all")


def _render(fig) -> None:
    fig.canvas.draw()


def test_the_font_file_comes_from_the_mplfonts_package() -> None:
    path = chinese_font_path()
    assert path.is_file() and path.suffix == ".otf"
    assert "mplfonts" in path.parts


def test_chinese_labels_draw_without_a_missing_glyph(page) -> None:
    assert page == FONT_FAMILY
    fig, ax = plt.subplots()
    ax.plot([-1, 1], [0, 1], label="任务 1：点击（−0.5 ≤ ρ ≤ 0.9，α β λ）")
    ax.set(title="门控坍缩与跷跷板", xlabel="相关度 p", ylabel="测试集 AUC（↑ 更好）")
    ax.legend(title="模型")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _render(fig)


def test_a_missing_glyph_is_an_error_once_the_page_is_set_up(page) -> None:
    fig, ax = plt.subplots()
    ax.set_title("\u0905")  # Devanagari: in neither Noto Sans CJK SC nor DejaVu Sans
    with pytest.raises(UserWarning, match="missing from font"):
        _render(fig)


def test_zh_table_translates_columns_verdicts_and_index() -> None:
    frame = pd.DataFrame(
        {"model": ["MMoE", "PLE"], "verdict": ["positive", "inconclusive"], "mean": [0.1, 0.2]}
    ).set_index("model")
    out = zh_table(frame, columns={"mean": "平均收益"})
    assert list(out.columns) == ["判定", "平均收益"]
    assert list(out["判定"]) == ["正迁移", "无定论"]
    assert out.index.name == "模型" and list(out.index) == ["MMoE", "PLE"]
    assert list(frame.columns) == ["verdict", "mean"], "the input frame must not change"


def test_zh_translates_whole_words_only() -> None:
    assert zh("click") == "点击"
    assert zh("clicks") == "clicks"
    assert zh("click", {"click": "点了"}) == "点了"
    assert zh(3) == 3


def test_zh_figure_relabels_a_library_figure(page) -> None:
    data = mb.simulate_funnel(500, seed=0)
    fig = zh_figure(plot_gate_heatmap(gate_weights(PLE(data.schema, expert_units=(4,)), data)))
    _render(fig)
    texts = [t.get_text() for ax in fig.axes for t in [*ax.get_yticklabels(), ax.title]]
    assert "点击" in texts and "层 0" in texts
    assert "click" not in texts and "level 0" not in texts


def test_show_source_is_the_code_of_the_object() -> None:
    source = show_source(max_difference)
    assert repr(source).startswith("def max_difference(")
    assert source._repr_markdown_().startswith("```python\ndef max_difference(")
    with pytest.raises(TypeError, match="at least one"):
        show_source()


def test_max_difference_names_mismatched_tasks() -> None:
    import torch

    a = {"click": torch.zeros(3)}
    assert max_difference(a, {"click": torch.ones(3)}) == 1.0
    with pytest.raises(ValueError, match="different tasks"):
        max_difference(a, {"buy": torch.zeros(3)})
    with pytest.raises(ValueError, match="shapes differ"):
        max_difference(a, {"click": torch.zeros(4)})


def test_every_diagram_draws_its_chinese_labels(page) -> None:
    fig = diagrams.plot_shared_bottom()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _render(fig)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "共享底层 MLP" in labels
    with pytest.raises(ValueError, match="kind must be one of"):
        diagrams.box(fig.axes[0], 0, 0, 1, 1, "x", kind="nope")
