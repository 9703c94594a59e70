"""What every chapter page shares: Chinese figures, Chinese tables and the teaching code shown.

- :func:`setup_page` is the first call of every chapter: the seaborn theme, a CJK font for
  Chinese titles, axes and legends (Noto Sans CJK SC from the ``mplfonts`` package, so no
  system font is needed in the build, in CI or in Colab), and matplotlib's missing-glyph
  warning turned into an error, so a figure that would show empty boxes fails the build.
- :func:`zh_figure` relabels a figure drawn by the library (whose labels are English) in
  Chinese; :func:`zh_table` gives a reader-facing table Chinese column names and verdicts.
- :func:`show_source` displays the source of a teaching model (:mod:`mtlbook.book.teaching`)
  on the page, so that the code the reader reads is the code the tests check.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib as mpl
import pandas as pd
import seaborn as sns
from matplotlib import font_manager
from matplotlib.figure import Figure

__all__ = [
    "FONT_FAMILY",
    "ZH_TERMS",
    "chinese_font_path",
    "setup_page",
    "show_source",
    "zh",
    "zh_figure",
    "zh_table",
]

#: The family name of the CJK font the chapters draw with.
FONT_FAMILY = "Noto Sans CJK SC"
_FONT_FILE = "NotoSansCJKsc-Regular.otf"  # in mplfonts/fonts (SIL Open Font License)
_GLYPH_WARNING = r"Glyph .* missing from (current )?font"

#: English words of the library's figures and tables and the Chinese the book shows instead.
#: Keys are matched whole (a label, a column name, a cell value), case-sensitively.
ZH_TERMS: dict[str, str] = {
    # models, tasks and splits
    "model": "模型",
    "models": "模型",
    "baseline": "基线",
    "task": "任务",
    "tasks": "任务",
    "split": "划分",
    "train": "训练集",
    "valid": "验证集",
    "test": "测试集",
    "click": "点击",
    "purchase": "购买",
    "conversion": "转化",
    "dwell": "停留时长",
    "dwell_time": "停留时长",
    "task1": "任务 1",
    "task2": "任务 2",
    "shared": "共享",
    "gate": "门控",
    "expert": "专家",
    "level": "层",
    "mean gate weight": "平均门控权重",
    "single-task": "单任务",
    "SingleTask": "单任务",
    "seed": "种子",
    "seeds": "种子数",
    "epoch": "轮次",
    "step": "步",
    "weighting": "加权方法",
    "correlation": "相关度",
    # metrics and intervals
    "metric": "指标",
    "value": "取值",
    "mean": "均值",
    "std": "标准差",
    "median": "中位数",
    "lo": "下限",
    "hi": "上限",
    "interval": "区间",
    "loss": "损失",
    "auc": "AUC",
    "mse": "MSE",
    "logloss": "对数损失",
    "gain": "相对收益",
    "gain_pct": "相对收益 (%)",
    "relative gain (%)": "相对收益 (%)",
    "parameters": "参数量",
    "n_parameters": "参数量",
    "seconds": "秒",
    "verdict": "判定",
    # verdicts (mtlbook.analysis.intervals.verdict)
    "positive": "正迁移",
    "negative": "负迁移",
    "inconclusive": "无定论",
    "better": "更好",
    "worse": "更差",
    "tie": "持平",
    # gates and experts (mtlbook.analysis.experts)
    "n_experts": "专家数",
    "effective_experts": "有效专家数（平均权重）",
    "sample_effective_experts": "有效专家数（逐样本）",
    "top_expert": "权重最大的专家",
    "top_weight": "最大权重",
    "collapsed_gate": "门控坍缩",
    # figures' common axis words
    "density": "密度",
    "count": "计数",
    "fraction": "比例",
    "frequency": "频数",
}


def chinese_font_path() -> Path:
    """The CJK font file the book draws with (Noto Sans CJK SC from the ``mplfonts`` package).

    Raises:
        ModuleNotFoundError: when ``mplfonts`` is not installed (``pip install mplfonts``;
            it is in the ``book`` and ``test`` extras).
    """
    spec = importlib.util.find_spec("mplfonts")  # locate only: importing it is not needed
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the book's figures need a CJK font: pip install mplfonts (in the 'book' and "
            "'test' extras of mtlbook)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "fonts" / _FONT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"mplfonts is installed but has no {_FONT_FILE} at {path}")
    return path


def setup_page(context: str = "notebook", style: str = "whitegrid") -> None:
    """Theme and font for a chapter's figures (the CJK family is :data:`FONT_FAMILY`).

    Sets the seaborn theme (``style``, ``context``), registers :func:`chinese_font_path` with
    matplotlib and puts it first in the sans-serif list (DejaVu Sans after it for the glyphs
    it lacks), and makes matplotlib's "Glyph … missing from font" warning an error: a label
    that would be drawn as empty boxes stops the chapter instead.
    """
    sns.set_theme(style=style, context=context)
    path = chinese_font_path()
    if FONT_FAMILY not in {f.name for f in font_manager.fontManager.ttflist}:
        font_manager.fontManager.addfont(str(path))
    # Both families named: matplotlib falls back glyph by glyph along font.family only
    # (Latin letters with accents such as ŷ are in DejaVu Sans, not in the CJK font).
    mpl.rcParams["font.family"] = [FONT_FAMILY, "DejaVu Sans"]
    mpl.rcParams["font.sans-serif"] = [FONT_FAMILY, "DejaVu Sans"]
    mpl.rcParams["axes.unicode_minus"] = True
    warnings.filterwarnings("error", message=_GLYPH_WARNING, category=UserWarning)


def zh(text: Any, extra: Mapping[str, str] | None = None) -> Any:
    """``text`` in Chinese when it is a known term (:data:`ZH_TERMS`, then ``extra``
    overriding it), otherwise unchanged."""
    if not isinstance(text, str):
        return text
    if extra and text in extra:
        return extra[text]
    return ZH_TERMS.get(text, text)


def zh_table(
    frame: pd.DataFrame,
    columns: Mapping[str, str] | None = None,
    values: Mapping[str, str] | None = None,
    index: bool = True,
) -> pd.DataFrame:
    """A copy of ``frame`` for the reader: Chinese column names and cell values.

    Column names (and the index's name and labels when ``index``) go through :func:`zh` with
    ``columns``; string cells through :func:`zh` with ``values`` (verdicts such as
    ``positive`` become 正迁移). Numbers are untouched.
    """
    out = frame.copy()
    for col in out.columns:
        dtype = out[col].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            out[col] = out[col].astype(object)
            dtype = out[col].dtype
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            out[col] = out[col].map(lambda v: zh(v, values))
    if index:
        out.index = out.index.map(lambda v: zh(v, values))
        out.index.names = [zh(n, columns) for n in out.index.names]
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = pd.MultiIndex.from_tuples(
            [tuple(zh(part, columns) for part in col) for col in out.columns],
            names=[zh(n, columns) for n in out.columns.names],
        )
    else:
        out.columns = [zh(c, columns) for c in out.columns]
        out.columns.name = zh(frame.columns.name, columns)
    return out


def _translate(text: str, mapping: Mapping[str, str] | None) -> str:
    """A whole label translated, or ``name=value`` / ``word: rest`` labels word by word."""
    if not text:
        return text
    whole = zh(text, mapping)
    if whole != text:
        return whole
    match = re.fullmatch(r"([^=:]+)([=:]\s*)(.*)", text)
    if match:
        head, sep, rest = match.groups()
        return f"{zh(head.strip(), mapping)}{sep}{_translate(rest, mapping)}"
    if "/" in text and " " not in text:  # expert names such as "click/0", "shared/1"
        return "/".join(zh(part, mapping) for part in text.split("/"))
    match = re.fullmatch(r"([A-Za-z_ -]+?) (\S+)", text)  # "level 0", "task 1"
    if match and zh(match.group(1), mapping) != match.group(1):
        return f"{zh(match.group(1), mapping)} {match.group(2)}"
    return text


def zh_figure(fig: Figure, extra: Mapping[str, str] | None = None) -> Figure:
    """Relabel ``fig`` (drawn by the library in English) in Chinese, in place; returns it.

    Titles, axis labels, legend titles and entries, tick labels and free texts are each
    translated whole by :func:`zh` (``extra`` first), or ``name=value`` / ``name: value``
    labels part by part; numbers and unknown words stay as they are.
    """
    for ax in fig.axes:
        ax.set_title(_translate(ax.get_title(), extra))
        for loc in ("left", "right"):
            title = ax.get_title(loc=loc)
            if title:
                ax.set_title(_translate(title, extra), loc=loc)
        ax.set_xlabel(_translate(ax.get_xlabel(), extra))
        ax.set_ylabel(_translate(ax.get_ylabel(), extra))
        for axis in (ax.xaxis, ax.yaxis):
            texts = [t.get_text() for t in axis.get_ticklabels()]
            translated = [_translate(t, extra) for t in texts]
            if translated != texts:  # only categorical ticks: numeric ones keep their formatter
                axis.set_ticks(axis.get_ticklocs())
                axis.set_ticklabels(translated)
        for text in ax.texts:
            text.set_text(_translate(text.get_text(), extra))
        legend = ax.get_legend()
        if legend is not None:
            legend.set_title(_translate(legend.get_title().get_text(), extra))
            for entry in legend.get_texts():
                entry.set_text(_translate(entry.get_text(), extra))
    suptitle = fig.get_suptitle()
    if suptitle:
        fig.suptitle(_translate(suptitle, extra))
    for legend in fig.legends:
        legend.set_title(_translate(legend.get_title().get_text(), extra))
        for entry in legend.get_texts():
            entry.set_text(_translate(entry.get_text(), extra))
    return fig


class _Source:
    """Highlighted Python source for the notebook (HTML and Markdown) and plain text."""

    def __init__(self, code: str) -> None:
        self.code = code

    def _repr_markdown_(self) -> str:
        return f"```python\n{self.code}\n```"

    def __repr__(self) -> str:
        return self.code


def show_source(*objects: Any) -> _Source:
    """The source code of ``objects`` (classes or functions), shown as a Python code block.

    A chapter calls it on the teaching models of :mod:`mtlbook.book.teaching`: the page shows
    the very code that the tests compare with the library.
    """
    if not objects:
        raise TypeError("show_source needs at least one class or function")
    return _Source("\n\n".join(inspect.getsource(obj).rstrip() for obj in objects))
