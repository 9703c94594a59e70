"""Architecture diagrams of the book, drawn with matplotlib in one style.

Boxes and arrows on a white canvas with dark outlines and Chinese labels (the figure keeps its
white background, so it stays readable when the site is in dark mode). One colour per kind of
block, the same in every chapter: :data:`COLORS`. Each chapter's module builds its diagrams
from :func:`canvas`, :func:`box` and :func:`arrow`; :func:`plot_shared_bottom` is the first.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

__all__ = ["COLORS", "arrow", "box", "canvas", "finish", "plot_shared_bottom"]

#: Fill colour of each kind of block.
COLORS: dict[str, str] = {
    "input": "#eeeeee",  # features x
    "embedding": "#cfe2f3",  # embeddings + dense inputs
    "shared": "#9fc5e8",  # shared layers and shared experts
    "task": "#f9cb9c",  # towers and task-specific layers or experts
    "task2": "#b6d7a8",  # a second task's own blocks, where two must be told apart
    "gate": "#ffe599",  # gates and mixing units
    "output": "#ffffff",  # predictions
    "op": "#ead1dc",  # operations (×, +, attention)
}
_EDGE = "#333333"


def canvas(width: float, height: float, scale: float = 1.0) -> tuple[Figure, Axes]:
    """A blank figure whose data coordinates run from 0 to ``width`` and 0 to ``height``."""
    fig, ax = plt.subplots(figsize=(width * scale, height * scale))
    fig.patch.set_facecolor("white")
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def box(
    ax: Axes,
    x: float,
    y: float,
    w: float,
    h: float,
    text: str,
    kind: str = "shared",
    fontsize: float = 10,
) -> None:
    """A rounded box centred at ``(x, y)``, ``w`` wide and ``h`` high, filled by ``kind``."""
    if kind not in COLORS:
        raise ValueError(f"kind must be one of {sorted(COLORS)}, got {kind!r}")
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02",
            facecolor=COLORS[kind],
            edgecolor=_EDGE,
            linewidth=1.2,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, color="#111111")


def arrow(
    ax: Axes,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    style: str = "-|>",
    dashed: bool = False,
    color: str = _EDGE,
) -> None:
    """An arrow from ``(x0, y0)`` to ``(x1, y1)`` (``dashed`` for a weighted or optional path)."""
    ax.add_patch(
        FancyArrowPatch(
            (x0, y0),
            (x1, y1),
            arrowstyle=style,
            mutation_scale=12,
            color=color,
            linewidth=1.0,
            linestyle="--" if dashed else "-",
        )
    )


def finish(fig: Figure, title: str | None = None) -> Figure:
    """Title (optional) and tight layout; returns ``fig``."""
    if title:
        fig.axes[0].set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_shared_bottom(
    tasks: Sequence[str] = ("点击", "购买"), shared_label: str = "共享底层 MLP"
) -> Figure:
    """Shared-Bottom: input → embeddings → shared bottom → one tower per task."""
    tasks = list(tasks)
    width = 1.8 * len(tasks)
    fig, ax = canvas(width, 4.4, scale=(2.2 + 1.8 * len(tasks)) / width)
    cx = width / 2
    box(ax, cx, 0.4, width * 0.8, 0.45, "特征 x（ID 与边信息）", "input")
    box(ax, cx, 1.3, width * 0.8, 0.45, "嵌入 + 稠密特征", "embedding")
    box(ax, cx, 2.2, width * 0.8, 0.5, shared_label, "shared")
    arrow(ax, cx, 0.63, cx, 1.07)
    arrow(ax, cx, 1.53, cx, 1.95)
    for i, task in enumerate(tasks):
        x = 0.9 + 1.8 * i
        box(ax, x, 3.2, 1.4, 0.5, f"任务塔：{task}", "task")
        box(ax, x, 4.0, 1.4, 0.4, f"ŷ {task}", "output")
        arrow(ax, cx, 2.45, x, 2.95)
        arrow(ax, x, 3.45, x, 3.8)
    return finish(fig)
